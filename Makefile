# clplat: `make run` sets up and runs the default experiment; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test test-slurm test-all bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# Hydra's Optuna sweeper (hydra/sweeper=optuna) declares optuna<3 but runs on the Optuna that
	# clplat-tune needs (4+): installed without its pin (docs/sweeps.md, tests/test_sweeps.py)
	$(BIN)/python -m pip install --quiet --no-deps "hydra-optuna-sweeper>=1.2,<1.4"
	touch $(STAMP)

run: setup
	$(BIN)/clplat-train $(ARGS)

# the default test run (CI runs this, then test-slurm); slow, notebook and SLURM tests are opt-in.
# pytest-xdist runs it on TEST_WORKERS processes, each test module on one worker (its module
# fixtures are built once); TEST_WORKERS=0 runs it in this process
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -m "not slow and not notebooks and not gpu and not slurm" \
		-n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

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
