# Fresh machine: `make demo` (setup + a short SimCLR run + kNN), `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# Data root: $SELFSUP_DATA if set, else ./data when it holds CIFAR-10, else ../shared/data when present.
SELFSUP_DATA ?= $(if $(wildcard data/cifar-10-batches-py),data,$(if $(wildcard ../shared/data/cifar-10-batches-py),../shared/data,data))
export SELFSUP_DATA
LIGHTLY ?= lightly==1.6.0
DEMO_DIR ?= output/demo-simclr-cifar10
# 5 epochs of 2,000 images at batch 64 (155 steps): the shortest run whose kNN gain over the random init is
# several points on every seed measured (benchmarks/RESULTS.md, "make demo over seeds"); the kNN bank is
# capped at 5,000 training images so that the full CIFAR-10 evaluates as fast as the shared subset.
DEMO_ARGS ?= method=simclr data=cifar10 backbone=resnet18 data.subset=2000 trainer.epochs=5 \
	trainer.batch_size=64 eval.every=0 eval.train_subset=5000 output_dir=$(DEMO_DIR)

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet -e '.[dev]'
	# lightly 1.6, the independent reference of tests/equivalence/ (test-only; its losses, heads and transforms
	# import without its own dependencies, which selfsup does not need).
	$(PY) -m pip install --quiet --no-deps $(LIGHTLY)
	touch $@

demo: setup
	$(VENV)/bin/selfsup pretrain $(DEMO_ARGS)
	$(VENV)/bin/selfsup eval knn run=$(DEMO_DIR) baseline=epoch-0000

# Two test files at a time (one per core on the CI machine), one thread each: most tests are small steps,
# process starts and I/O that a single process leaves the second core idle for (23 min -> 12.5 min on 2 cores).
# A test file stays on one worker, so its module fixtures are built once. TEST_WORKERS=0: one process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 4 ? n : 4 )))
test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: setup
	$(VENV)/bin/ruff check selfsup tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) output
