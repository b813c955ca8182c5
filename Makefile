# ZBrain: `make run` sets up and starts the server; `make test` sets up and runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
NODE_INSTALLED := node_modules/.installed
DATA_DIR ?= zbrain-data

TS := clients/typescript
BUF := node_modules/.bin/buf

.PHONY: setup run test lint format protos check-stubs check-ts-stubs buf-lint buf-breaking \
        contract-baseline ts-build ts-test pytest postgres bubblewrap browser bench bench-smoke clean

setup: $(INSTALLED) $(NODE_INSTALLED)

# Both distributions, editable, and the development tools (pyproject.toml's
# dependency group "dev"; pip reads groups from version 25.1 on).
$(INSTALLED): pyproject.toml clients/python/pyproject.toml server/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade 'pip>=25.1'
	$(PY) -m pip install --quiet -e ./clients/python -e ./server --group dev
	touch $@

# One lockfile for the repository's Node tooling and the TypeScript client
# (an npm workspace, clients/typescript).
$(NODE_INSTALLED): package.json package-lock.json $(TS)/package.json
	npm ci --silent --no-audit --no-fund
	touch $@

METRICS_LISTEN ?= 127.0.0.1:9464
HTTP_LISTEN ?= 127.0.0.1:8080

## run: start ZBrain on the embedded SQLite store, with a local worker pool, the
## web console and HTTP API at http://$(HTTP_LISTEN)/ and Prometheus metrics at
## http://$(METRICS_LISTEN)/metrics.
run: $(INSTALLED)
	$(BIN)/zbrain serve --data-dir $(DATA_DIR) --workers 4 --metrics-listen $(METRICS_LISTEN) \
	  --http-listen $(HTTP_LISTEN)

## test: every check, every test, and the benchmarks once in a tiny configuration.
test: setup lint bench-smoke pytest ts-test

# The contract first: a proto change that breaks it fails at buf-breaking,
# whether or not the generated code was regenerated after it.
lint: setup buf-lint buf-breaking check-stubs check-ts-stubs ts-build
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	npm run --silent --workspace $(TS) format:check

PYTEST_WORKERS ?= 3
pytest: $(INSTALLED) $(NODE_INSTALLED) postgres bubblewrap browser
	$(PY) -m pytest -n $(PYTEST_WORKERS)

# The sandbox worker mode (ZWORKER_MODE=sandbox) runs jobs in bubblewrap:
# installed from Debian's packages when missing and this runs as root; else
# its tests skip (fail under CI=true) and this says how to install it.
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
	      { apt-get update -qq && apt-get install -y -qq bubblewrap; }; \
	  else \
	    echo "bubblewrap (bwrap) is missing: the sandbox tests will skip (fail under CI=true);" \
	         "install it with: sudo apt-get install bubblewrap"; \
	  fi; }

# The PostgreSQL store's tests use the server at 127.0.0.1:5432 (database test);
# start it if it is installed but down. Without it they skip, except under
# CI=true, where they fail rather than pass unrun.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || \
	  for version in $$(ls /etc/postgresql 2>/dev/null); do \
	    pg_ctlcluster --skip-systemctl-redirect $$version main start || true; \
	  done
	@pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || \
	  echo "PostgreSQL is not running at 127.0.0.1:5432: its tests will skip (fail under CI=true)"

# The console's browser tests (tests/browser) drive Debian's Chromium through
# its chromedriver; install both when missing (as root, else say how). Without
# them those tests skip, except under CI=true, where they fail.
CHROMIUM_PACKAGES := chromium chromium-driver
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(CHROMIUM_PACKAGES); \
	  else \
	    echo "Chromium is missing: sudo apt-get install $(CHROMIUM_PACKAGES) (browser tests will skip)"; \
	  fi; \
	fi

## bench: the full benchmark suite (a few minutes); paste its table into docs/performance.md.
bench: $(INSTALLED)
	$(PY) -m bench.run

# The suite with a few hundred jobs: fails only if a figure is missing, never on speed.
bench-smoke: $(INSTALLED)
	$(PY) -m bench.run --tiny --repeat 1

format: $(INSTALLED) $(NODE_INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	npm run --silent --workspace $(TS) format

## protos: regenerate the committed Python stubs and TypeScript code from protos/.
protos: $(INSTALLED) $(NODE_INSTALLED)
	$(PY) scripts/gen_protos.py
	$(BUF) generate

check-stubs: $(INSTALLED)
	$(PY) scripts/gen_protos.py --check

# buf.gen.yaml's output, generated again into a scratch folder and compared.
check-ts-stubs: $(NODE_INSTALLED)
	@scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && \
	  $(BUF) generate -o "$$scratch" && \
	  if ! diff -r $(TS)/src/gen "$$scratch/$(TS)/src/gen"; then \
	    echo "Generated TypeScript in $(TS)/src/gen is stale against protos/." >&2; \
	    echo "Run \`make protos\` and commit the result." >&2; exit 1; \
	  fi && echo "Generated TypeScript matches protos/."

buf-lint: $(NODE_INSTALLED)
	$(BUF) lint

# The compatibility guard: protos/ against the contract as last released.
buf-breaking: $(INSTALLED) $(NODE_INSTALLED)
	$(PY) scripts/contract.py check

## contract-baseline: after a release, REF=<its commit or tag> makes its protos the baseline.
contract-baseline: $(INSTALLED) $(NODE_INSTALLED)
	@test -n "$(REF)" || { echo "usage: make contract-baseline REF=<released commit or tag>" >&2; exit 2; }
	$(PY) scripts/contract.py baseline $(REF)

# The TypeScript client: type-checked (strict) and compiled, tests included.
ts-build: $(NODE_INSTALLED)
	npm run --silent --workspace $(TS) build
	npm run --silent --workspace $(TS) build:test

# Its tests start real servers from .venv.
ts-test: $(INSTALLED) ts-build
	npm run --silent --workspace $(TS) test:run

clean:
	rm -rf $(VENV) node_modules $(TS)/node_modules .pytest_cache .mypy_cache .ruff_cache $(TS)/dist $(TS)/build
