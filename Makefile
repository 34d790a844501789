# statekit: `make demo` and `make test` work from a fresh clone (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
COREDNS_VERSION := v1.15.0
COREDNS := .tools/bin/coredns
export PATH := $(CURDIR)/.tools/bin:$(PATH)

.PHONY: venv deps coredns lint typecheck test demo bench clean

venv: $(VENV)/.installed

# editable_mode=compat: a plain path entry. The default editable finder imports pathlib,
# re and more into every Python process of the venv (25 ms each, python -c pass too).
# setuptools calls compat transitional: if it is ever gone, the default install still
# works, only slower.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --config-settings editable_mode=compat -e '.[test,lint]' \
	  || $(BIN)/pip install --quiet -e '.[test,lint]'
	touch $@

# Debian packages the integration tests drive for real (iptables, ip netns, unshare).
deps:
	@scripts/install-debs.sh

# The pinned, real CoreDNS, built from the Go module proxy; a no-op when present.
coredns: $(COREDNS).$(COREDNS_VERSION)

$(COREDNS).$(COREDNS_VERSION):
	@mkdir -p .tools/bin
	GOBIN=$(CURDIR)/.tools/bin GOFLAGS=-buildvcs=false go install github.com/coredns/coredns@$(COREDNS_VERSION)
	$(COREDNS) -version | grep -q "$(patsubst v%,%,$(COREDNS_VERSION))"
	rm -f $(COREDNS).v* && touch $@

lint: venv
	$(BIN)/ruff check statekit tests bench
	$(BIN)/mypy

typecheck: lint

test: venv deps coredns lint
	$(BIN)/pytest -q

demo: venv deps coredns
	$(BIN)/python scripts/demo.py

# statekit as installed: bytecode compiled (pip does it on a real install; this machine
# sets PYTHONDONTWRITEBYTECODE, so an editable install would compile on every run).
bench: venv deps coredns
	$(BIN)/python -m compileall -q statekit
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache
