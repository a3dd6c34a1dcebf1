# AgentLake — everything the project needs is installed by these targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test unit integration lint bench up down status clean dashboard otel wheel inspector

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)
	$(BIN)/agentlake fetch

demo: install
	$(BIN)/agentlake demo

test: install inspector
	$(BIN)/pytest -q

unit: install
	$(BIN)/pytest -q -m "not integration"

integration: install inspector
	$(BIN)/pytest -q -m integration

# the official MCP Inspector CLI (npm, Node >= 20) for the auth gateway tests, under the cache dir
CACHE_DIR ?= $(or $(AGENTLAKE_CACHE_DIR),$(HOME)/.cache/agentlake)
INSPECTOR := $(CACHE_DIR)/mcp-inspector/node_modules/.bin/mcp-inspector
inspector: $(INSPECTOR)
$(INSPECTOR):
	@if command -v npm >/dev/null; then \
	  npm install --prefix $(CACHE_DIR)/mcp-inspector --no-audit --no-fund --loglevel=error \
	    @modelcontextprotocol/inspector@0.15; \
	else echo "npm not found: the MCP Inspector tests skip (and fail under CI=true)"; fi

lint: $(STAMP)
	$(BIN)/ruff check agentlake tests bench
	$(BIN)/ruff format --check agentlake tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/run.py

up: install
	$(BIN)/agentlake up
down: $(STAMP)
	$(BIN)/agentlake down
status: $(STAMP)
	$(BIN)/agentlake status

dashboard: install                 # the web dashboard on http://127.0.0.1:8050
	$(BIN)/agentlake dashboard
otel: install                      # the OTLP/HTTP endpoint on http://127.0.0.1:4318/v1/traces
	$(BIN)/agentlake otel serve
wheel: $(STAMP)                    # dist/agentlake-*.whl (schemas, py.typed and dashboard assets inside)
	$(BIN)/pip wheel --no-deps -w dist .

clean:
	-$(BIN)/agentlake down
	rm -rf .agentlake tests/artifacts
