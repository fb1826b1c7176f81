# Two commands matter: `make up` (run the exchange locally) and `make test` (everything).
# Both install what they need on first use: a Python venv, the pinned npm toolchain, the contracts.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
FORGE := node_modules/.bin/forge

.PHONY: up test setup build native browser test-contracts test-python typecheck clean

up: setup
	$(VENV)/bin/crossbook up

test: setup
	$(MAKE) --no-print-directory test-contracts
	$(MAKE) --no-print-directory test-python

setup: $(VENV)/.installed node_modules/.installed build

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# forge caches per file, so this is quick when nothing changed.
build: node_modules/.installed native
	cd contracts && ../$(FORGE) build --sizes > /dev/null

# The matcher's engine core compiled with mypyc (extension modules next to the sources,
# git-ignored). Rebuilt whenever a compiled source changes; matcher/native.py makes a compiled
# module that is older than its source run the source instead.
NATIVE_SRC := matcher/orders.py matcher/book.py matcher/risk.py matcher/ledger.py matcher/engine.py matcher/framing.py
native: matcher/native.stamp

matcher/native.stamp: $(VENV)/.installed $(NATIVE_SRC) matcher/native.py
	rm -f matcher/native.stamp
	$(VENV)/bin/python -m matcher.native > build-native.log 2>&1 || { tail -30 build-native.log; exit 1; }

test-contracts: node_modules/.installed
	cd contracts && ../$(FORGE) test

test-python: $(VENV)/.installed build browser
	$(VENV)/bin/pytest -q

# The dashboard test drives Debian's headless Chromium through its chromedriver.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		echo "installing chromium + chromium-driver (Debian packages) ..."; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			--no-install-recommends chromium chromium-driver fonts-dejavu-core; \
	fi

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

clean:
	rm -rf contracts/out contracts/cache .crossbook build build-native.log
	rm -f matcher/*.so matcher/native.stamp
