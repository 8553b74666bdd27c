"""Whether a local model folder is whole, checked before ``from_pretrained`` reads it.

A diffusers pipeline folder (``model_index.json`` and one sub-folder per component), a single
diffusers / transformers model folder (``config.json`` and safetensors weights) or a LoRA adapter
folder: every config file must parse, every model component must have safetensors weights, and
each weights file must hold the bytes its header announces (a truncated, empty or overwritten
file is caught here; ``from_pretrained`` would fail later with a library traceback, or not at all).
Each problem is one :class:`~kd_core.errors.KDError` line naming the file and what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

from kd_core.errors import KDError
from kd_core.sources import is_local, local_path

#: Component classes without weights (their folders hold vocabularies and settings).
WEIGHTLESS = ("Tokenizer", "TokenizerFast", "Scheduler", "FeatureExtractor", "ImageProcessor", "Processor")
FIX = ("delete the folder and run the workflow again to rebuild it, or download / copy it again "
       "(a model the workflow trained: rerun the rule that wrote it)")


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a ``.safetensors`` file (empty, truncated, not safetensors), or None.

    The format: 8 bytes of little-endian header length N, N bytes of JSON naming every tensor's
    byte range, then the data; a whole file ends exactly where the last range ends.
    """
    size = path.stat().st_size
    if size < 8:
        return "is empty" if size == 0 else "is truncated"
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if n <= 1 or 8 + n > size:
            return "is truncated or not a safetensors file (its header does not fit)"
        try:
            header = json.loads(fh.read(n))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return "is not a safetensors file (its header does not parse)"
    need = 8 + n + max(ends, default=0)
    if size < need:
        return f"is truncated ({size} bytes of {need})"
    if size > need:
        return f"has {size - need} bytes more than its header announces (overwritten or not one file)"
    return None


def _json_problem(path: Path) -> str | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return "is not valid JSON (damaged or truncated)"
    return None if isinstance(value, dict) else "is not a JSON object"


def _weights(folder: Path) -> list[Path]:
    """The safetensors files of a model folder: single or sharded (``*.safetensors.index.json``), any variant."""
    files = sorted(folder.glob("*.safetensors"))
    for index in sorted(folder.glob("*.safetensors.index.json")):
        if (problem := _json_problem(index)) is not None:
            raise KDError(f"{index} {problem}; {FIX}")
        shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            raise KDError(f"{folder} lacks the weight shard(s) {missing} that {index.name} lists; {FIX}")
    return files


def check_model_component(folder: Path, what: str) -> None:
    """A model folder (``config.json`` and safetensors weights) is whole, or one line naming the file."""
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "is missing"
        raise KDError(f"{what} folder {folder} {state}; {FIX}")
    config = folder / "config.json"
    if not config.is_file():
        raise KDError(f"{what} folder {folder} has no config.json; {FIX}")
    if (problem := _json_problem(config)) is not None:
        raise KDError(f"{config} {problem}; {FIX}")
    weights = _weights(folder)
    if not weights:
        bins = sorted(p.name for p in folder.glob("*.bin"))
        extra = f" (only {bins}: pickled weights, which are not loaded; convert them to safetensors)" if bins else ""
        raise KDError(f"{what} folder {folder} has no safetensors weights{extra}; {FIX}")
    for f in weights:
        if (problem := safetensors_problem(f)) is not None:
            raise KDError(f"{f} {problem}; {FIX}")


def check_model_folder(path: str | Path, what: str = "model") -> None:
    """A local pipeline folder (every component of ``model_index.json``) or single model folder is whole."""
    root = Path(path)
    if not root.is_dir():
        raise KDError(f"{what} {root} is not a folder; give a diffusers pipeline or model folder")
    index = root / "model_index.json"
    if not index.is_file():
        check_model_component(root, what)
        return
    if (problem := _json_problem(index)) is not None:
        raise KDError(f"{index} {problem}; {FIX}")
    for name, spec in json.loads(index.read_text()).items():
        if name.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or spec[1] is None:
            continue
        if not (root / name).is_dir():
            raise KDError(f"{what} {root}: component folder {name}/ that model_index.json lists is missing; {FIX}")
        if not str(spec[1]).endswith(WEIGHTLESS):
            check_model_component(root / name, f"{what} component {name}")


def check_adapter_folder(path: str | Path, what: str = "lora adapter") -> None:
    """A LoRA folder written by ``save_lora_weights``: its safetensors files whole."""
    root = Path(path)
    files = sorted(root.glob("*.safetensors")) if root.is_dir() else []
    if not files:
        raise KDError(f"{what} folder {root} has no safetensors weights; {FIX}")
    for f in files:
        if (problem := safetensors_problem(f)) is not None:
            raise KDError(f"{f} {problem}; {FIX}")



def check_local_model(source: str, what: str = "model", check=check_model_folder) -> None:
    """``check`` a local folder ``source``; a hub id, or a path that does not exist, is left to the loader."""
    path = Path(local_path(source))
    if is_local(source) and path.exists():
        check(path, what)
