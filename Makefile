# findap-jax: `make demo` runs the main job, `make test` the test suite.
# Both create .venv on first use and (re)install when setup.py changes.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test test-slow demo bench bench-tunix clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

# `make test`: everything but the end-to-end checks marked slow (real SmolLM2 weights,
# subprocess kill/resume, the notebook); `make test-slow` runs those; CI runs both.
test: $(STAMP)
	$(BIN)/python -m pytest -q tests -m "not slow" --durations=15 $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q tests -m slow --durations=15 $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m findap_jax.demo

# `make bench`: every figure of the performance tables, then the targets met or not
# (bench/targets.py) from the records the scripts appended to $(BENCH_RESULTS).
BENCH_RESULTS ?= bench-results.jsonl
bench: $(STAMP)
	rm -f $(BENCH_RESULTS)
	$(BIN)/python bench/matmul_libraries.py
	$(BIN)/python bench/forward_throughput.py
	$(BIN)/python bench/data_pipeline.py --json $(BENCH_RESULTS)
	$(BIN)/python bench/train_step.py --json $(BENCH_RESULTS)
	$(BIN)/python bench/train_step.py --dtype bfloat16 --kinds lm --json $(BENCH_RESULTS)
	$(BIN)/python bench/train_step.py --kinds lm,dpo,rpo --prompt 0.5 --json $(BENCH_RESULTS)
	$(BIN)/python bench/train_step.py --preset llama3.2-1b --batch 1 --dtype bfloat16 --param-dtype bfloat16 \
		--kinds lm,dpo-pre --skip-torch --steps 2 --json $(BENCH_RESULTS)
	$(BIN)/python bench/shared_prompt_savings.py
	$(BIN)/python bench/dpo_real_pairs.py --json $(BENCH_RESULTS)
	$(BIN)/python bench/profile_step.py
	$(BIN)/python bench/decode.py --json $(BENCH_RESULTS)
	$(BIN)/python bench/decode_steps.py
	$(BIN)/python bench/targets.py $(BENCH_RESULTS)

# The Tunix peer: google-tunix 0.1.7 pins safetensors<0.8 (older transformers), so it gets its
# own venv with the project's jax/flax/optax/orbax versions; findap_jax is imported from here.
TUNIX_VENV := .venv-tunix
$(TUNIX_VENV)/.installed:
	test -x $(TUNIX_VENV)/bin/python || $(PY) -m venv $(TUNIX_VENV)
	$(TUNIX_VENV)/bin/python -m pip install -q google-tunix==0.1.7 jax==0.10.2 jaxlib==0.10.2 flax==0.12.8 \
		optax==0.2.8 orbax-checkpoint==0.12.8 ml_collections
	touch $@

# appends to $(BENCH_RESULTS) (after `make bench`, the table then has the Tunix rows too)
bench-tunix: $(TUNIX_VENV)/.installed
	$(TUNIX_VENV)/bin/python bench/tunix_peer.py --json $(BENCH_RESULTS)
	$(TUNIX_VENV)/bin/python bench/targets.py $(BENCH_RESULTS)

clean:
	rm -rf $(VENV) .cache .pytest_cache
