# The two commands of the README:
#   make book   builds the rendered book into _build/html
#   make test   runs every test (unit tests, export drift, notebook hygiene, strict nbval, lint)
# Each one creates .venv and installs what it needs on first use.

VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: book test lint export notebooks clean

$(INSTALLED): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[book,test,dev]'
	touch $@

book: $(INSTALLED)
	$(VENV)/bin/jupyter-book build . --builder html --warningiserror --nitpick --keep-going

test: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest --nbval

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check vqvae_lite tools tests benchmarks

export: $(INSTALLED)
	$(PY) tools/export.py

notebooks: $(INSTALLED)
	$(PY) tools/run_notebooks.py --all

clean:
	rm -rf _build
