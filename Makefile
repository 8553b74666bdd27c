# Two commands for a fresh machine:  make demo  (run the default experiment)  and  make test.
# Both create .venv, install torch==2.13.0 first (the CPU wheel here; on a GPU machine install
# the CUDA build of your choice into .venv first), then `pip install -e .[dev]`.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config/config.yaml
TORCH  ?= torch==2.13.0
SNAKEMAKE_ARGS ?=

EXPERIMENT := $(or $(shell sed -n 's/^experiment: *//p' $(CONFIG)),shapes)

.PHONY: setup check demo report profile test test-slurm lint dag clean help

help:
	@echo "make demo   - run the default experiment (config/config.yaml) with profiles/default, then its report"
	@echo "make check  - check CONFIG as the workflow does, naming file and line of a YAML error (make demo runs it first)"
	@echo "make report - the Snakemake HTML report: results/<experiment>/report.html"
	@echo "make profile - wall time, CPU time and peak memory per rule and per study of results/<experiment>"
	@echo "make test   - the test suite without its slow tier (TIERS=all: every test; SLURM=1: with the SLURM cluster tests, as CI)"
	@echo "make test-slurm - profiles/slurm on a single-node SLURM cluster started here (installs slurm-wlm, munge)"
	@echo "make lint   - ruff and snakemake --lint"
	@echo "make dag    - print the rule graph (mermaid)"
	@echo "variables: CONFIG=path/to/config.yaml  SNAKEMAKE_ARGS='--cores 4'  PYTHON=python3.11"

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

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
