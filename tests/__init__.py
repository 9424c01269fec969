"""Test suite of lit-prune."""
