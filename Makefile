# cifar-sweep: `make help` lists the targets.
PYTHON ?= .venv/bin/python
EPOCHS ?=
ARGS ?=
DATA ?=
SEEDS ?=
CAP ?=
# a config folder of your own (docs/own-model.md): its model/, data/, ablation/ ... options too
CONFIG_DIR ?=
CONFIG_ARG = $(if $(CONFIG_DIR),--config-dir $(abspath $(CONFIG_DIR)),)
EPOCHS_ARG = $(if $(EPOCHS),trainer.epochs=$(EPOCHS),)
# the report and clean-runs read the store only: of ARGS they take the tracking.* overrides;
# report.* (report.columns=...: table.tex's columns) are the report's alone, never a run's
STORE_ARGS = $(filter tracking.%,$(ARGS))
REPORT_ARGS = $(filter report.%,$(ARGS))
RUN_ARGS = $(filter-out report.%,$(ARGS))
# one study per file of conf/ablation/ (and of $(CONFIG_DIR)/ablation/)
STUDIES = $(sort $(basename $(notdir $(wildcard conf/ablation/*.yaml $(if $(CONFIG_DIR),$(CONFIG_DIR)/ablation/*.yaml,)))))

.DEFAULT_GOAL := help
.PHONY: help install train test test-full lint ui bench bench-memory-format tables clean clean-runs bench-checkpoint \
	ablations $(addprefix ablation-,$(STUDIES))
.PHONY: server plan gpu-check gpu-check-dry bench-sweep
.PHONY: slurm-up slurm-down ray-up ray-down test-cluster install-ray

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'
	@echo '  ablation-<study>      run a study ($(STUDIES)), then print its table; EPOCHS=, ARGS=, SEEDS=auto, CONFIG_DIR='

install:  ## create .venv and install the package with its dev tools (exact versions: constraints.txt)
	python3 -m venv .venv
	.venv/bin/pip install --upgrade pip
	.venv/bin/pip install -c constraints.txt -e '.[dev]'

install-ray:  ## create .venv-ray with the [ray] extra (its cloudpickle<3 pin keeps it out of .venv)
	python3 -m venv .venv-ray
	.venv-ray/bin/pip install --upgrade pip
	.venv-ray/bin/pip install -c constraints.txt -e '.[dev,ray]'

plan:  ## what a sweep would do, job by job, training nothing: ARGS='ablation=lr trainer.seed=0,1,2'
	$(PYTHON) src/plan.py $(CONFIG_ARG) $(EPOCHS_ARG) $(ARGS)

train:  ## one run with the defaults (ModifiedNet, SGD 0.005); pass EPOCHS= and ARGS=
	$(PYTHON) src/train.py $(CONFIG_ARG) $(EPOCHS_ARG) $(ARGS)

# two pytest workers (pytest-xdist), each test where it is free next (worksteal): on 2 cores the
# suite ran in about half the time of one worker, its sweeps' processes included (README)
TEST_WORKERS ?= 2

test:  ## the default test suite (CPU, synthetic data, a few minutes); TEST_WORKERS=1: one process
	$(PYTHON) -m pytest -q $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

test-full:  ## every test, the slow ones included
	$(PYTHON) -m pytest -q -m ''

# Real clusters on this machine (root, loopback; docs/cluster.md): the scripts install the Debian
# packages where missing and stop by pid what they started. ACCOUNTING=1: slurmdbd over MariaDB.
ACCOUNTING ?=
slurm-up:  ## a one-node SLURM cluster on loopback (root); ACCOUNTING=1 adds slurmdbd, so sacct answers
	tests/clusters/slurm.sh up $(if $(ACCOUNTING),--accounting,)

slurm-down:  ## stop the SLURM cluster's daemons
	tests/clusters/slurm.sh down

RAY_PYTHON ?= .venv-ray/bin/python  # make install-ray: the [ray] extra in a venv of its own
ray-up:  ## a Ray cluster on loopback: a head and one worker node, separate `ray start` processes
	PYTHON=$(RAY_PYTHON) tests/clusters/ray.sh up

ray-down:  ## stop the Ray cluster
	PYTHON=$(RAY_PYTHON) tests/clusters/ray.sh down

test-cluster:  ## the real-cluster tests (root: they bring the clusters up and down; RAY_PYTHON= a venv with [ray])
	RAY_PYTHON=$(RAY_PYTHON) $(PYTHON) -m pytest -q -m 'cluster and not slow' tests/test_real_cluster.py
	if [ -x $(RAY_PYTHON) ]; then $(RAY_PYTHON) -m pytest -q -m 'slow or not slow' tests/test_cluster.py -k ray; fi

lint:  ## ruff, then mypy over src/ (pyproject.toml lists the modules not yet clean)
	$(PYTHON) -m ruff check src tests benchmarks
	$(PYTHON) -m mypy

# MLflow 3's UI opens on its GenAI view unless the URL (or one click on "Model training") says
# otherwise: the link below opens the runs tables. Its job runner is off, as for `make server`
# (GenAI evaluation and prompt jobs, which this project does not use, and their processes), and
# it runs one worker, enough for one person: 2 processes and 568 MiB instead of 7 and 1470 MiB
# (`benchmarks/ui_memory.py`). STORE= a store's folder (tracking.uri=<folder>) or a database URI;
# a tracking server (http://...) serves its own UI.
STORE ?= mlruns
# a published store (reports/store) is served from a copy whose locations are absolute again
UI_BACKEND = $(if $(findstring ://,$(STORE)),$(STORE),sqlite:///$$($(PYTHON) src/publish_store.py --readable $(STORE))/mlflow.db)
ui:  ## the MLflow UI on a store: STORE=<folder or URI> (default mlruns) PORT=5000; open the printed link
	@case "$(STORE)" in http://*|https://*) echo "$(STORE) is a tracking server: it serves its own UI: open $(STORE)/#/experiments?workflowType=machine_learning"; exit 0;; esac; \
	if [ "$(findstring ://,$(STORE))" = "" ] && [ ! -f "$(STORE)/mlflow.db" ]; then \
		echo "error: STORE=$(STORE) holds no store (no $(STORE)/mlflow.db); allowed: a folder a run logged to (tracking.uri=<folder>) or a database URI (sqlite:///<file>.db)" >&2; exit 2; fi; \
	echo "open http://127.0.0.1:$(PORT)/#/experiments?workflowType=machine_learning"; \
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
	exec $(PYTHON) -m mlflow ui --backend-store-uri $(UI_BACKEND) --host 127.0.0.1 --port $(PORT) --workers 1

# `make server`: plain `=`, not `?=`, so that a HOST in the environment (tcsh exports one: the
# machine's name) never opens the server to the network; `make server HOST=0.0.0.0` does.
# The server's job runner (GenAI evaluation and prompt jobs, 7 more processes, about 1.4 GB) is
# off: this project does not use it.
HOST = 127.0.0.1
PORT = 5000
BACKEND ?=
ARTIFACTS ?= mlruns/artifacts
WORKERS ?= 4
ALLOWED_HOSTS ?=
SERVER_ARGS ?=

server:  ## tracking server for jobs on other machines: HOST=127.0.0.1 PORT=5000 BACKEND=<db URI> ALLOWED_HOSTS= SERVER_ARGS=
	$(if $(BACKEND),,$(PYTHON) -c "from cifar_sweep.tracking.experiments import store_locations; store_locations('mlruns')")
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
	$(PYTHON) -m mlflow server --host $(HOST) --port $(PORT) --workers $(WORKERS) \
		--backend-store-uri $(or $(BACKEND),sqlite:///mlruns/mlflow.db) \
		--serve-artifacts --artifacts-destination $(ARTIFACTS) \
		$(if $(ALLOWED_HOSTS),--allowed-hosts $(ALLOWED_HOSTS),) $(SERVER_ARGS)

ablations: $(addprefix ablation-,$(STUDIES))  ## every study, then its table

# SEEDS=auto: 3 seeds per row, then more only where the seeds cannot yet tell a row from the
# baseline (src/seeds.py; CAP= seeds per row at most, 8 by default)
# a study with `study.tune` (docs/tuned.md): each arm searched on validation with the same budget,
# each arm's best trained over the seeds, then the table (src/tune.py)
TUNED = $(sort $(basename $(notdir $(shell grep -lE '^[[:space:]]+tune:' conf/ablation/*.yaml $(if $(CONFIG_DIR),$(CONFIG_DIR)/ablation/*.yaml,) 2>/dev/null))))
$(addprefix ablation-,$(TUNED)): ablation-%:
	$(PYTHON) src/tune.py $(CONFIG_ARG) ablation=$* $(EPOCHS_ARG) $(ARGS)

$(addprefix ablation-,$(filter-out $(TUNED),$(STUDIES))): ablation-%:
ifeq ($(SEEDS),auto)
	$(PYTHON) src/seeds.py $(CONFIG_ARG) ablation=$* $(if $(CAP),cap=$(CAP),) $(EPOCHS_ARG) $(ARGS)
else
	@status=0; $(PYTHON) src/train.py $(CONFIG_ARG) -m ablation=$* $(EPOCHS_ARG) $(RUN_ARGS) || status=$$?; \
	case $$status in \
	0|1) $(PYTHON) src/report.py $(CONFIG_ARG) ablation=$* $(STORE_ARGS) $(REPORT_ARGS) || exit $$?; \
	     exit $$status;; \
	*) echo "make: study $* stopped before its jobs ran (exit $$status): no table printed or rewritten$$( \
	     [ -f results/$*/LATEST ] && echo "; the last one: results/$*/$$(cat results/$*/LATEST)/")" >&2; \
	   exit $$status;; \
	esac
endif

# alone: the project's published tables (reports/, tracked); with a store or CONFIG_DIR: results/
tables:  ## regenerate every table and figure from the MLflow store, without training (alone: into reports/)
	$(PYTHON) src/report.py $(CONFIG_ARG) all $(if $(STORE_ARGS)$(CONFIG_DIR),,published) $(STORE_ARGS) $(REPORT_ARGS)

# The published studies (reports/README.md, docs/reproducing.md): CIFAR-10 (JPEG copy) extracted at
# DATA=, the report's protocol with early stopping (patience 10) within 100 epochs, 3 seeds, into a
# store outside the repository; about 5-6 hours on 2 cores; the same command continues them. Then
# `make publish-store STORE=$(STUDIES_STORE)` and `make tables`. ResNet18 is left out of arch: about
# 12 minutes an epoch on this 2-core CPU.
STUDIES_STORE ?= ../studies-store
STUDY_ARGS = trainer.seed=0,1,2 trainer.early_stop.patience=10 data=cifar10_jpeg data.root=$(DATA) tracking.uri=$(STUDIES_STORE)
.PHONY: studies
studies:  ## the published studies, converged (hours): DATA=<CIFAR-10 JPEG copy> STUDIES_STORE=<store outside the repo>
	@test -n "$(DATA)" || { echo "error: DATA is missing: the extracted CIFAR-10 JPEG copy (make studies DATA=<folder>)" >&2; exit 2; }
	$(MAKE) ablation-lr EPOCHS=100 ARGS='$(STUDY_ARGS)'
	$(MAKE) ablation-optimizer EPOCHS=100 ARGS='$(STUDY_ARGS)'
	$(MAKE) ablation-loss EPOCHS=100 ARGS='$(STUDY_ARGS)'
	$(MAKE) ablation-arch EPOCHS=100 ARGS='$(STUDY_ARGS) model=origin_net,modified_net,modified_net_ds'
	$(MAKE) ablation-optimizer_tuned EPOCHS=100 ARGS='$(STUDY_ARGS) study.tune.trials=8 study.tune.epochs=30'

# The project's published store: the studies' runs, shipped with the repository (docs/reproducing.md)
PUBLISHED_STORE ?= reports/store
.PHONY: publish-store
publish-store:  ## copy a working store (STORE=<folder>, default mlruns) into the published store, naming no path or host
	$(PYTHON) src/publish_store.py $(or $(STORE),mlruns) $(PUBLISHED_STORE)

.PHONY: register
register:  ## register a study's best setting in MLflow's Model Registry: STUDY=lr ARGS='tracking.uri=...'
	$(PYTHON) src/register_model.py ablation=$(STUDY) $(STORE_ARGS)

bench-checkpoint:  ## what the per-epoch checkpoint costs; DATA=<extracted CIFAR-10 JPEG copy> or synthetic
	$(PYTHON) benchmarks/checkpoint_cost.py $(if $(DATA),--data-root $(DATA),)

bench:  ## the side-by-side speed benchmark; DATA=<extracted CIFAR-10 JPEG copy> or synthetic
	$(PYTHON) benchmarks/bench.py $(if $(DATA),--data-root $(DATA),)

bench-memory-format:  ## NCHW against NHWC batches on this CPU, 1 and 2 threads (runtime.py's choice)
	$(PYTHON) benchmarks/memory_format.py

gpu-check:  ## on a GPU machine: the GPU check, about 8 min (docs/gpu.md); DATA=<CIFAR-10 python release> or synthetic
	PYTHON=$(PYTHON) benchmarks/gpu_check.sh $(if $(DATA),--data-root $(DATA),)

gpu-check-dry:  ## the GPU check on this CPU with tiny sizes (what the test runs)
	PYTHON=$(PYTHON) benchmarks/gpu_check.sh --dry

clean-runs:  ## mark RUNNING runs whose process died KILLED (they continue from their checkpoints)
	$(PYTHON) src/clean_runs.py $(STORE_ARGS)

clean:  ## remove Hydra outputs and caches (keeps the MLflow store mlruns/)
	rm -rf outputs multirun .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

N ?= 100
N2 ?=
bench-sweep:  ## what the sweep machinery costs per job, at N jobs (and N2: its growth); ARGS= overrides
	$(PYTHON) benchmarks/sweep_cost.py $(N) $(N2) $(ARGS)
