# Two commands do all set-up on a fresh Debian machine:
#   make demo   — run the whole pipeline on the embedded defaults
#   make test   — lint, types and every test tier
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the service needs: Pango for WeasyPrint (HarfBuzz subsetting makes
# embedding the CJK fonts 15 times faster than fontTools), fonts for every script,
# poppler-utils to read PDFs back in tests, openssl for test certificates, postgresql for
# the throwaway server the tests start to run the store on PostgreSQL as well as SQLite.
DEBIAN_PACKAGES := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fontconfig \
	fonts-dejavu-core fonts-noto-core fonts-noto-cjk fonts-noto-color-emoji poppler-utils openssl \
	postgresql

.PHONY: demo test lint types unit integration acceptance bench system-packages clean docs

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

system-packages:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		SUDO=$$( [ $$(id -u) -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

demo: $(STAMP)
	$(BIN)/solidarity demo

lint: $(STAMP)
	$(BIN)/ruff check delivery tests bench
	$(BIN)/ruff format --check delivery tests bench

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

integration: $(STAMP)
	$(BIN)/pytest tests/integration -q

acceptance: $(STAMP)
	$(BIN)/pytest tests/acceptance -q

test: lint types
	$(BIN)/pytest tests -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/python bench/run.py

docs: $(STAMP)
	$(BIN)/python docs/cli_reference.py > docs/cli.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
