# Config validation, the experiment plan (kd_core.plan: models, runs, names, output paths), thread
# counts, wildcard constraints, and the input functions of the shared rules that read their
# wildcards (a study's are in its rules file).

import sys
from pathlib import Path

from kd_core.config import Runtime, canonical_order, read_config_file
from kd_core.devices import visible_devices
from kd_core.errors import KDError
from kd_core.experiment import validate_experiment
from kd_core.plan import Plan
from kd_core.provenance import script_hash

try:
    for _file in workflow.configfiles:  # duplicate keys, which Snakemake's YAML reading drops silently
        read_config_file(_file)
    _validated = validate_experiment(config, Path(workflow.basedir) / "config" / "schema.yaml")
except KDError as _exc:
    sys.stderr.write(f"config error: {_exc}\n")
    sys.exit(1)
config.clear()
config.update(canonical_order(_validated))  # a job's params do not depend on the order of keys in the file

PLAN = Plan(config)
OUT = PLAN.out


def adapter_code(script):
    """The code hash of a rule: its adapter workflow_scripts/<script>.py and every kd_core module the
    adapter imports, transitively (kd_core.provenance.script_hash)."""
    return script_hash(Path(workflow.basedir) / "workflow_scripts" / f"{script}.py")


def _cpu_only_cores():
    """The core count of a local run on a machine without GPUs, else None (GPUs, or a cluster run
    with no core count given: a cluster job evaluates this again on its node)."""
    cores = workflow.global_resources.get("_cores")
    cores = getattr(cores, "value", cores)
    return None if visible_devices() or not isinstance(cores, int) else cores


def _model_threads():
    """Threads of a job that trains, samples or embeds with a model: 8 where GPUs are (data loading,
    PNG encoding) or no core count is given (a cluster run); on a CPU-only machine half its cores, so
    that two such jobs run side by side. Small models use a second thread poorly: two 1-thread
    toy-teacher training steps side by side do 1.85x the work of one 2-thread step on 2 cores
    (6.95 vs 3.76 it/s). A cluster job evaluates this again on its node, with the cores it was given:
    never more than it asked for."""
    cores = _cpu_only_cores()
    return 8 if cores is None else max(1, cores // 2)


MODEL_THREADS = _model_threads()
# toy_base: every core of a CPU-only machine. It is the first model job and nothing runs beside it
# (both toy U-Nets wait for it), and the VAE's 32 px convolutions use a second thread well (1.4x
# at 2 threads, where the toy U-Nets gain nothing).
BASE_THREADS = _cpu_only_cores() or MODEL_THREADS


# each study's own wildcards (kd_core.studies: Study.wildcards) too
wildcard_constraints:
    model="|".join(PLAN.models),
    split="train|eval|filler",
    kind="sd|sdxl|clip",
    shard=r"\d+-of-\d+",
    **PLAN.wildcard_constraints(),


def prompt_params(wildcards):
    return PLAN.prompt_params(wildcards.split)


def generate_input(wildcards):
    return PLAN.generate_inputs(wildcards.model, wildcards.split)


def generate_gather_input(wildcards):
    return PLAN.generate_gather_inputs(wildcards.model, wildcards.split)


def generate_source(wildcards):
    return PLAN.model_dir(PLAN.model_entry(wildcards.model)["source"])


def generate_config(wildcards):
    return PLAN.generation_params(wildcards.model)


def generate_runtime(wildcards):
    """The batch size: read by the job, not compared by Snakemake (kd_core.config.Runtime)."""
    return Runtime(PLAN.generation_runtime(wildcards.model))
