# Set-up and entry points. Every target creates the virtual environment first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install quickstart test lint format clean

install: $(STAMP)

# Reinstall whenever the pinned set or the package metadata changes.
$(STAMP): constraints.txt setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade -c constraints.txt pip setuptools wheel
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/lit-prune fit --config configs/quickstart.yaml

# One worker per core (pytest-xdist); tests/conftest.py gives each worker one thread.
test: $(STAMP)
	$(BIN)/python -m pytest -n auto --dist loadgroup tests

# Conventions checked by machines: ruff's lint rules and its formatter (pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) *.egg-info
