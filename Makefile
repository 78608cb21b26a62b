PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test files run in parallel, one worker per core (pytest-xdist); compiled programs persist in .jax_cache/.
WORKERS ?= auto

.PHONY: install demo test test-all typecheck docs experiments benchmark clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -c constraints.txt
	touch $(STAMP)

install: $(STAMP)

# The headline experiment: every estimate checked against jax.grad of the exact expectation.
demo: $(STAMP)
	$(BIN)/python -m experiments.exact_check

# The type check, then every test in parallel with 4 forced host CPU devices (the sharded tests need them; the
# others run on the first). It prints the slowest tests; the last line is the total time.
FOUR_DEVICES := XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu
test: $(STAMP)
	@start=$$(date +%s); \
	$(BIN)/mypy && \
	$(FOUR_DEVICES) $(BIN)/python -m pytest -q -n $(WORKERS) --dist worksteal --durations=15 && \
	echo "make test: $$(( $$(date +%s) - start )) s in all"

# Everything, the slow tests too (the wheel in a clean environment, the property tests on many examples).
test-all: $(STAMP) typecheck
	$(FOUR_DEVICES) $(BIN)/python -m pytest -q -n $(WORKERS) --dist worksteal -m "slow or not slow" --durations=15

typecheck: $(STAMP)
	$(BIN)/mypy

# The documentation site, offline: tutorials run and rendered, then mkdocs; open site/index.html.
docs: $(STAMP)
	$(BIN)/python docs/build.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

experiments: $(STAMP)
	$(BIN)/python -m experiments.exact_check
	$(BIN)/python -m experiments.gaussian_variance
	$(BIN)/python -m experiments.qmc
	$(BIN)/python -m experiments.categorical_vae
	$(BIN)/python -m experiments.kl_truth_table
	$(BIN)/python -m experiments.sequence_rl
	$(BIN)/python -m experiments.tabular
	$(BIN)/python -m experiments.ipd_hessian
	$(BIN)/python -m experiments.sequence_policy
	$(BIN)/python -m experiments.cartpole
	$(BIN)/python -m experiments.rebar_toy
	$(BIN)/python -m experiments.rebar_toy_highdim
	$(BIN)/python -m experiments.discrete_vae
	$(BIN)/python -m experiments.sbn_vae
	$(BIN)/python -m experiments.calibration

benchmark: $(STAMP)
	$(BIN)/python -m benchmarks.score_function
	$(BIN)/python -m benchmarks.scaling
	$(BIN)/python -m benchmarks.cartpole
	$(BIN)/python -m benchmarks.discrete_vae
	$(BIN)/python -m benchmarks.categorical_vae
	$(BIN)/python -m benchmarks.sequence_rl
	$(BIN)/python -m benchmarks.plate
	$(BIN)/python -m benchmarks.graph
	$(BIN)/python -m benchmarks.policy_mlp

clean:
	rm -rf $(VENV) .pytest_cache .jax_cache site docs/generated
