# Two commands for a fresh machine:  make demo  (run the default experiment)  and  make test.
# Both create .venv and install the lock there: torch from requirements/torch-$(TORCH_BUILD).txt
# (cpu by default; cuda: PyPI's CUDA build; none: keep the torch already in .venv), every other
# package at the exact version of requirements/lock.txt, then kd_core itself (editable).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config/config.yaml
TORCH_BUILD ?= cpu
# WHEELHOUSE=<folder>: install from that folder only (make wheelhouse), with no network
WHEELHOUSE ?=
LOCK   := requirements/lock.txt
# where torch's CPU build is found (PyPI's Linux torch is the CUDA build), read for torch alone; empty:
# only where pip looks already (a mirror or find-links folder)
TORCH_PAGE ?= https://download.pytorch.org/whl/torch/
PIP    = $(BIN)/python -m pip install --quiet --disable-pip-version-check $(if $(WHEELHOUSE),--no-index --find-links $(WHEELHOUSE))
SNAKEMAKE_ARGS ?=

EXPERIMENT := $(or $(shell sed -n 's/^experiment: *//p' $(CONFIG)),shapes)

.PHONY: setup lock wheelhouse models check demo report profile test test-slurm lint dag clean help

help:
	@echo "make demo   - run the default experiment (config/config.yaml) with profiles/default, then its report"
	@echo "make check  - check CONFIG as the workflow does, naming file and line of a YAML error (make demo runs it first)"
	@echo "make report - the Snakemake HTML report: results/<experiment>/report.html"
	@echo "make profile - wall time, CPU time and peak memory per rule and per study of results/<experiment>"
	@echo "make test   - the test suite without its slow tier (TIERS=all: every test; SLURM=1: with the SLURM cluster tests, as CI)"
	@echo "make test-slurm - profiles/slurm on a single-node SLURM cluster started here (installs slurm-wlm, munge)"
	@echo "make lint   - ruff and snakemake --lint"
	@echo "make dag    - print the rule graph (mermaid)"
	@echo "make lock   - resolve requirements/*.txt afresh from pyproject.toml's bounds (network)"
	@echo "make wheelhouse WHEELHOUSE=dir - every locked wheel in dir, for make setup WHEELHOUSE=dir on an offline host"
	@echo "make models - the hub ids CONFIG needs (MODELS_ARGS=--download: into the Hugging Face cache, HF_HOME)"
	@echo "variables: CONFIG=path/to/config.yaml  SNAKEMAKE_ARGS='--cores 4'  PYTHON=python3.11  TORCH_BUILD=cpu|cuda|none"
	@echo "           WHEELHOUSE=dir  PY_VERSION=3.11 PLATFORM=manylinux_2_28_x86_64 (make wheelhouse for another host)"

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# one stamp per torch build, so that TORCH_BUILD=cuda after a CPU set-up installs the CUDA build;
# torch alone and --no-deps, so that TORCH_PAGE is read for torch only
$(VENV)/.installed-$(TORCH_BUILD): pyproject.toml $(LOCK) $(wildcard requirements/torch-$(TORCH_BUILD).txt) | $(BIN)/activate
	$(if $(filter none,$(TORCH_BUILD)),,$(PIP) --no-deps $(if $(WHEELHOUSE),,$(if $(and $(filter cpu,$(TORCH_BUILD)),$(TORCH_PAGE)),--find-links $(TORCH_PAGE))) -r requirements/torch-$(TORCH_BUILD).txt)
	$(PIP) -r $(LOCK)
	$(PIP) --no-deps -e .
	$(BIN)/python scripts/lock.py check --torch $(TORCH_BUILD)
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(VENV)/.installed-$(TORCH_BUILD)

lock:
	$(PYTHON) scripts/lock.py resolve

WHEELHOUSE_DIR = $(or $(WHEELHOUSE),wheelhouse)
wheelhouse:
	$(PYTHON) scripts/lock.py wheelhouse $(WHEELHOUSE_DIR) --torch $(TORCH_BUILD) --torch-page "$(TORCH_PAGE)" $(if $(PY_VERSION),--python-version $(PY_VERSION)) $(if $(PLATFORM),--platform $(PLATFORM))

MODELS_ARGS ?=
models: setup
	@$(BIN)/python -m kd_core.hub $(CONFIG) $(MODELS_ARGS)

# Snakemake reads --configfile before the workflow's checks, and reports a YAML error without its
# line: kd_core.check reads the file strictly first (one line naming file, line and column).
check: setup
	@$(BIN)/python -m kd_core.check $(CONFIG)

demo: check
	$(BIN)/snakemake --profile profiles/default --configfile $(CONFIG) $(SNAKEMAKE_ARGS)
	@case " $(SNAKEMAKE_ARGS) " in *" -n "*|*--dry-run*) ;; *) $(MAKE) --no-print-directory report ;; esac

report: setup
	$(BIN)/snakemake --configfile $(CONFIG) --report results/$(EXPERIMENT)/report.html

profile: setup
	$(BIN)/python bench/stages.py results/$(EXPERIMENT)

# make test: every tier but `slow` (minutes each, rarely broken); make test TIERS=all: all of them
# in one session (one shared smoke run), as .ci/run does, but the `soak` tier; make test TIERS=soak: the
# soak tier alone (the SIGKILL of every job kind, ~15 min on 2 cores). The ten slowest tests are printed.
TIERS ?= not-slow
# SLURM=1: the same session on the SLURM test cluster (scripts/slurm/test.sh starts it), the cluster
# tests included; they share the smoke run with the workflow tests (.ci/run: TIERS=all SLURM=1)
test: setup
	$(if $(SLURM),PYTHON=$(BIN)/python scripts/slurm/test.sh,$(BIN)/python -m pytest) -q --durations=10 $(if $(filter soak,$(TIERS)),-m soak,$(if $(filter all,$(TIERS)),-m "not soak",-m "not slow"))

test-slurm: setup
	PYTHON=$(BIN)/python scripts/slurm/test.sh


lint: setup
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint --configfile config/smoke.yaml

dag: setup
	@$(BIN)/snakemake --rulegraph mermaid-js --configfile $(CONFIG) --quiet all 2>/dev/null

clean:
	rm -rf results .snakemake
