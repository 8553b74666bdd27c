# Config validation, output paths, input functions, wildcard constraints and code hashes.

import sys
from pathlib import Path

from kd_core.errors import KDError
from kd_core.experiment import validate_experiment
from kd_core.provenance import code_hash
from kd_core.sources import BUILT, is_built, local_path

try:
    _validated = validate_experiment(config, Path(workflow.basedir) / "config" / "schema.yaml")
except KDError as _exc:
    sys.stderr.write(f"config error: {_exc}\n")
    sys.exit(1)
config.clear()
config.update(_validated)

OUT = f"results/{config['experiment']}"
MODELS = list(config["models"])
WORLD = config["world"]["enabled"]


wildcard_constraints:
    model="|".join(MODELS),
    split="train|eval|filler",
    kind="sd|sdxl",


def model_dir(source):
    """Folder of a model the workflow builds (toy:*, tiny:*), else the hub id or local path."""
    return f"{OUT}/models/{BUILT[source]}" if is_built(source) else local_path(source)


def generate_input(wildcards):
    m = config["models"][wildcards.model]
    inputs = {f"prompts_{s}": f"{OUT}/prompts/{s}.parquet" for s in m["splits"]}
    if is_built(m["source"]):
        inputs["model"] = model_dir(m["source"])
    return inputs


def generate_source(wildcards):
    return model_dir(config["models"][wildcards.model]["source"])


def generate_config(wildcards):
    return config["models"][wildcards.model]["generation"]


def all_targets():
    targets = [f"{OUT}/prompts/{s}.parquet" for s in ("train", "eval", "filler")]
    targets += [f"{OUT}/images/{m}/manifest.parquet" for m in MODELS]
    if WORLD:
        targets += [f"{OUT}/models/classifier/heldout_accuracy.parquet", f"{OUT}/metrics/attribute_accuracy.parquet"]
    return targets
