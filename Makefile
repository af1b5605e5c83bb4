# The two commands of the README:
#   make book   builds the rendered book into _build/html
#   make test   builds the book, then runs every test (unit tests, export drift, notebook hygiene,
#               strict nbval, the built pages in a headless browser, lint)
# Each one creates .venv and installs what it needs on first use.

VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
VENDOR := book/vendor/versions.txt
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: book test lint export notebooks clean

$(INSTALLED): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[book,test,dev]'
	touch $@

# MathJax and the widget scripts the book serves itself, at the versions of tools/vendor/.
$(VENDOR): tools/vendor/package-lock.json tools/fetch_vendor.sh
	bash tools/fetch_vendor.sh

book: $(INSTALLED) $(VENDOR)
	$(VENV)/bin/jupyter-book build . --builder html --warningiserror --nitpick --keep-going

# Debian's Chromium, for tests/test_book_browser.py.
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# Chapters 6 and 7 train a model; under `make test` they run this many steps instead of their
# full budget (their committed outputs come from full runs).
TEST_STEPS ?= 4

# The browser test opens the pages of the book just built.
test: book $(CHROMIUM)
	$(VENV)/bin/ruff check .
	VQVAE_LITE_STEPS=$(TEST_STEPS) $(VENV)/bin/pytest --nbval

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check vqvae_lite tools tests benchmarks

export: $(INSTALLED)
	$(PY) tools/export.py

notebooks: $(INSTALLED)
	$(PY) tools/run_notebooks.py --all

clean:
	rm -rf _build
