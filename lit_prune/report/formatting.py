"""How report figures are written in markdown: one place, so a run report and a comparison agree."""

from __future__ import annotations

__all__ = [
    "format_count",
    "format_macs",
    "format_number",
    "format_percent",
    "format_points",
    "format_ratio",
]


def format_percent(value: float | None, digits: int = 2) -> str:
    """Formats a fraction as a percentage (``0.5`` → ``"50.00 %"``), ``"n/a"`` for ``None``."""
    return "n/a" if value is None else f"{100.0 * value:.{digits}f} %"


def format_number(value: float | None, digits: int) -> str:
    """Formats a number with ``digits`` decimals, ``"n/a"`` for ``None``."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_count(value: int | None) -> str:
    """Formats a count with thousands separators, ``"n/a"`` for ``None``."""
    return "n/a" if value is None else f"{value:,}"


def format_macs(value: int | None) -> str:
    """Formats a MAC count with a k/M/G suffix, ``"n/a"`` for ``None``."""
    if value is None:
        return "n/a"
    for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= divisor:
            return f"{value / divisor:.2f} {suffix}"
    return str(value)


def format_ratio(value: float | None) -> str:
    """Formats a speed-up or compression ratio (``2.5`` → ``"2.50×"``), ``"n/a"`` for ``None``."""
    return "n/a" if value is None else f"{value:.2f}×"


def format_points(value: float | None, reference: float | None) -> str:
    """The difference of two fractions in percentage points (``"+1.25 pp"``), ``"n/a"`` if one is missing."""
    if value is None or reference is None:
        return "n/a"
    return f"{100.0 * (value - reference):+.2f} pp"
