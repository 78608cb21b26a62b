PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test experiments benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The headline experiment: every estimate checked against jax.grad of the exact expectation.
demo: $(STAMP)
	$(BIN)/python -m experiments.exact_check

# The sharded tests need 4 devices: a dedicated session with 4 forced host CPU devices.
test: $(STAMP)
	$(BIN)/python -m pytest -q
	XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q tests/test_sharding.py

experiments: $(STAMP)
	$(BIN)/python -m experiments.exact_check
	$(BIN)/python -m experiments.gaussian_variance
	$(BIN)/python -m experiments.qmc
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
	$(BIN)/python -m benchmarks.plate
	$(BIN)/python -m benchmarks.graph
	$(BIN)/python -m benchmarks.policy_mlp

clean:
	rm -rf $(VENV) .pytest_cache
