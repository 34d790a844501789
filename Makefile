# statekit: `make demo` and `make test` work from a fresh clone (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
COREDNS_VERSION := v1.15.0
COREDNS := .tools/bin/coredns
# The Go that builds CoreDNS: fetched by scripts/go_toolchain.py from the Go module proxy
# (module golang.org/toolchain), checked against this SHA-256 of the module zip, whatever
# `go` is on PATH (Debian 12's golang-go is 1.19, too old for CoreDNS v1.15.0).
GO_VERSION := go1.26.8
GO_SHA256 := 30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7
GO := $(CURDIR)/.tools/go/bin/go
export PATH := $(CURDIR)/.tools/bin:$(PATH)

.PHONY: venv deps go-toolchain coredns docs node-deps claude-code lint typecheck check test demo try need-root bench clean

venv: $(VENV)/.installed

# editable_mode=compat: a plain path entry. The default editable finder imports pathlib,
# re and more into every Python process of the venv (25 ms each, python -c pass too).
# setuptools calls compat transitional, and says so in a 15-line warning, silenced here:
# if compat is ever gone, the default install still works, only slower.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	PYTHONWARNINGS='ignore:Compat editable installs' \
	  $(BIN)/pip install --quiet --config-settings editable_mode=compat -e '.[test,lint]' \
	  || $(BIN)/pip install --quiet -e '.[test,lint]'
	touch $@

# Debian packages the integration tests drive for real (iptables, ip netns, unshare).
deps:
	@scripts/install-debs.sh

# The pinned Go toolchain at .tools/go; a no-op when present. Progress on stderr (the
# download is about 72 MB); stdout, the go binary's path, is not needed here.
go-toolchain:
	@$(PYTHON) scripts/go_toolchain.py --version $(GO_VERSION) --sha256 $(GO_SHA256) \
	  --dest .tools/go >/dev/null

# The pinned, real CoreDNS, built from the Go module proxy; a no-op when present.
coredns: $(COREDNS).$(COREDNS_VERSION)

$(COREDNS).$(COREDNS_VERSION):
	@$(MAKE) --no-print-directory go-toolchain
	@mkdir -p .tools/bin
	env -u GOROOT GOTOOLCHAIN=local GOBIN=$(CURDIR)/.tools/bin GOFLAGS=-buildvcs=false \
	  $(GO) install github.com/coredns/coredns@$(COREDNS_VERSION)
	$(COREDNS) -version | grep -q "$(patsubst v%,%,$(COREDNS_VERSION))"
	rm -f $(COREDNS).v* && touch $@

# The OpenTelemetry JS SDK the end-to-end tests run as the env file's consumer (the agent,
# Claude Code, is a Node.js program), exactly as pinned in the lockfiles; no install scripts.
JS := tests/e2e/js
node-deps: $(JS)/node_modules/.installed $(JS)/legacy/node_modules/.installed

$(JS)/node_modules/.installed: $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@

$(JS)/legacy/node_modules/.installed: $(JS)/legacy/package.json $(JS)/legacy/package-lock.json
	cd $(JS)/legacy && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@

# The real agent, Claude Code (pinned; its native binary for this platform, ~400 MB), run
# by the end-to-end test against a local stub of the Messages API.
claude-code: tests/e2e/claude/node_modules/.installed

tests/e2e/claude/node_modules/.installed: tests/e2e/claude/package.json tests/e2e/claude/package-lock.json
	cd tests/e2e/claude && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@
# docs/reference.md from the JSON schemas (tests/test_docs.py checks it is up to date).
docs: venv
	$(BIN)/python scripts/gen_reference.py --output docs/reference.md

lint: venv
	$(BIN)/ruff check statekit tests bench
	$(BIN)/mypy

typecheck: lint

# Tests run in parallel (pytest-xdist; figures in docs/development.md), each worker its own
# session with its own sandbox namespaces. `make test`: three workers per core (the namespaced
# tests spend much of their time waiting: DNS timeouts, TTLs, signals), TEST_JOBS=N to
# change it, 0 for none; `make check`: one per core (CPU-bound). Bytecode is cached (this
# machine sets PYTHONDONTWRITEBYTECODE): each worker imports the whole suite, and pytest
# would rewrite every test module's asserts on each import.
TEST_JOBS ?= $(shell echo $$(( $$(nproc) * 3 )))
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -q --dist worksteal

# The inner loop (under a minute): lint, types, and every test that needs neither root, nor
# a network namespace, nor a component that `make test` fetches; as any user, venv only.
# The markers declare the split (tests/needs.py checks them): netns, root, needs(...).
# As root, the tests run as an ordinary user (a user namespace mapping root to uid 1000,
# where the kernel allows one), so a test that needs root fails here unless marked so.
AS_USER = $(if $(filter 0,$(shell id -u)),$(shell \
  unshare --user --map-user=1000 --map-group=1000 true 2>/dev/null \
  && echo unshare --user --map-user=1000 --map-group=1000))
check: venv lint
	$(AS_USER) $(PYTEST) -n auto -m "not netns and not root and not needs"

# The bytecode first, in one process (statekit's, and pytest's rewrite of every test
# module: 5.5 s of CPU on a fresh clone, 2.2 s once cached), so that the workers do not
# each compile the same files at once.
test: venv deps coredns node-deps claude-code lint
	$(BIN)/python -m compileall -q statekit
	$(PYTEST) --collect-only >/dev/null
	$(PYTEST) -n $(TEST_JOBS)

# Root first: the demo creates network namespaces; nothing is built for a run that cannot.
demo: need-root
	@$(MAKE) --no-print-directory venv deps coredns
	$(BIN)/python scripts/demo.py

# A first safe try: an interactive shell in a throwaway --root and a private network
# namespace, statekit on PATH, the shipped states in $STATES (scripts/try.py).
try: need-root
	@$(MAKE) --no-print-directory venv deps
	@$(BIN)/python scripts/try.py

need-root:
	@[ "$$(id -u)" = 0 ] || { echo "make: this target needs root (it creates network" \
	  "namespaces): run it as root, e.g. sudo make $(MAKECMDGOALS)" >&2; exit 1; }

# statekit as installed: bytecode compiled (pip does it on a real install; this machine
# sets PYTHONDONTWRITEBYTECODE, so an editable install would compile on every run).
bench: venv deps coredns
	$(BIN)/python -m compileall -q statekit
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache $(JS)/node_modules \
	  $(JS)/legacy/node_modules tests/e2e/claude/node_modules
