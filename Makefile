# The two commands (see README): `make run` and `make test`. Both set everything up first,
# idempotently: system packages, .venv, the project and its models (scripts/bootstrap.sh).
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test setup setup-dev lint typecheck unit clean

# What `make run` needs: nothing compiles (the LLM runtime is a prebuilt wheel).
setup:
	@scripts/bootstrap.sh kokoro,multilingual

# What the tests need as well: the tools, and llama.cpp inside the process (the `llama-cpp`
# engine), which compiles once per machine, portable (scripts/bootstrap.sh).
setup-dev:
	@scripts/bootstrap.sh dev,kokoro,multilingual,llama-cpp

# With a terminal attached, the server runs behind the latency dashboard (q quits both).
run: setup
	@if [ -t 0 ] && [ -t 1 ]; then $(BIN)/voice-agent serve --dashboard $(ARGS); \
	else $(BIN)/voice-agent serve $(ARGS); fi

test: setup-dev lint typecheck unit

lint:
	$(BIN)/ruff check voice_agent ui tests
	$(BIN)/ruff format --check voice_agent ui tests

typecheck:
	$(BIN)/mypy

# pytest exits 5 when it collected no test: that is a failure here, never a pass.
unit:
	@$(BIN)/pytest $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest ran no test; failing" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
