# findap-jax: `make demo` runs the main job, `make test` the test suite.
# Both create .venv on first use and (re)install when setup.py changes.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test demo bench clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m findap_jax.demo

bench: $(STAMP)
	$(BIN)/python bench/forward_throughput.py
	$(BIN)/python bench/data_pipeline.py
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/train_step.py --dtype bfloat16 --kinds lm
	$(BIN)/python bench/profile_step.py
	$(BIN)/python bench/decode.py

clean:
	rm -rf $(VENV) .cache .pytest_cache
