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
LORA = config["lora"]["enabled"]
MODELS = list(config["models"]) + (["lora_student"] if LORA else [])
STUDENTS = [m for m in MODELS if m != "teacher"]
WORLD = config["world"]["enabled"]


wildcard_constraints:
    model="|".join(MODELS),
    split="train|eval|filler",
    kind="sd|sdxl",


def model_dir(source):
    """Folder of a model the workflow builds (toy:*, tiny:*), else the hub id or local path."""
    return f"{OUT}/models/{BUILT[source]}" if is_built(source) else local_path(source)


def model_entry(name):
    """A model's config; the LoRA student is its base student with the trained adapter."""
    if name == "lora_student":
        base = config["models"][config["lora"]["student"]]
        return {**base, "generation": {**base["generation"], "lora": f"{OUT}/models/lora_student"}}
    return config["models"][name]


def generate_input(wildcards):
    m = model_entry(wildcards.model)
    inputs = {f"prompts_{s}": f"{OUT}/prompts/{s}.parquet" for s in m["splits"]}
    if is_built(m["source"]):
        inputs["model"] = model_dir(m["source"])
    if m["generation"].get("lora"):
        inputs["adapter"] = m["generation"]["lora"]
    return inputs


def generate_source(wildcards):
    return model_dir(model_entry(wildcards.model)["source"])


def generate_config(wildcards):
    return model_entry(wildcards.model)["generation"]


def lora_input(wildcards):
    student = config["models"][config["lora"]["student"]]
    inputs = {}
    if config["lora"]["data"] == "teacher":
        inputs["data"] = f"{OUT}/images/teacher/manifest.parquet"
    if is_built(student["source"]):
        inputs["model"] = model_dir(student["source"])
    return inputs


def lora_student_source(wildcards):
    return model_dir(config["models"][config["lora"]["student"]]["source"])


def lora_data(wildcards):
    data = config["lora"]["data"]
    return f"{OUT}/images/teacher/manifest.parquet" if data == "teacher" else local_path(data)


def all_targets():
    targets = [f"{OUT}/prompts/{s}.parquet" for s in ("train", "eval", "filler")]
    targets += [f"{OUT}/images/{m}/manifest.parquet" for m in MODELS]
    targets += [f"{OUT}/metrics/pairwise/{m}.parquet" for m in STUDENTS]
    if len(STUDENTS) > 1:
        targets.append(f"{OUT}/metrics/improvement.parquet")
    if WORLD:
        targets += [f"{OUT}/models/classifier/heldout_accuracy.parquet", f"{OUT}/metrics/attribute_accuracy.parquet"]
    return targets
