# clplat: `make run` sets up and runs the default experiment; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test test-slurm test-all bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: setup
	$(BIN)/clplat-train $(ARGS)

# the default test run (CI runs this, then test-slurm); slow, notebook and SLURM tests are opt-in
test: setup
	$(BIN)/python -m pytest -q -m "not slow and not notebooks and not gpu and not slurm" $(PYTEST_ARGS)

# launcher=slurm against a real single-node cluster on this machine (root: installs and starts it)
test-slurm: setup
	bash .ci/slurm_cluster.sh start
	$(BIN)/python -m pytest -q -m slurm $(PYTEST_ARGS)

test-all: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/scan.py

clean:
	rm -rf runs multirun outputs
