"""``python -m kd_core.hub CONFIG.yaml [...] [--download]``: the Hugging Face hub ids an experiment
needs, and their download into the Hugging Face cache for a host without network.

Every config key that may name a hub id carries ``x-hub: pipeline | model | dataset`` in
config/schema.yaml; this module walks the config (defaults filled in) along the schema and lists
the values of those keys that are hub ids (not local paths, not models the workflow builds). With
``--download`` each is fetched the way its loader reads it: a pipeline by diffusers'
``DiffusionPipeline.download`` (safetensors, the config's weights variant), a single model
(VAE, CLIP, classifier) by ``snapshot_download`` of its configs, tokenizer files and safetensors,
a caption dataset by ``datasets.load_dataset`` (which also prepares it for offline use). Copy the
cache folder (``HF_HOME``) to the offline host and run there with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kd_core.config import validate_config
from kd_core.errors import KDError
from kd_core.sources import is_built, is_local

SCHEMA = "config/schema.yaml"
#: What a single model's loaders read (transformers / diffusers ``from_pretrained`` with
#: ``use_safetensors=True``): configs, tokenizer and processor files, safetensors weights.
MODEL_FILES = ["*.json", "*.txt", "*.model", "*.safetensors"]


@dataclass(frozen=True)
class HubRef:
    """One hub id a config names: the key that names it, the id, and what it is."""

    key: str
    repo_id: str
    kind: str  # pipeline | model | dataset
    options: Mapping[str, Any] = field(default_factory=dict)  # variant (pipelines), split (datasets)

    @property
    def repo_type(self) -> str:
        return "dataset" if self.kind == "dataset" else "model"


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    """A schema node with its ``$ref`` and ``allOf`` parts merged in (the parts this walk needs)."""
    out = {k: v for k, v in node.items() if k not in ("$ref", "allOf")}
    parts = [node["$ref"]] if "$ref" in node else []
    parts += [p["$ref"] if "$ref" in p else p for p in node.get("allOf", [])]
    for part in parts:
        if isinstance(part, str):
            target: Any = root
            for name in part.lstrip("#/").split("/"):
                target = target[name]
            part = target
        merged = _resolve(part, root)
        out["properties"] = {**merged.get("properties", {}), **out.get("properties", {})}
        for key in ("x-hub", "additionalProperties"):
            if key in merged and key not in out:
                out[key] = merged[key]
    return out


def _walk(value: Any, node: Mapping[str, Any], root: Mapping[str, Any], key: str) -> Iterator[tuple[str, str, Any]]:
    """``(key, x-hub kind, value)`` of every annotated key under ``value``."""
    node = _resolve(node, root)
    if "x-hub" in node:
        yield key, node["x-hub"], value
    if not isinstance(value, Mapping):
        return
    props = node.get("properties", {})
    extra = node.get("additionalProperties")
    for name, item in value.items():
        sub = props.get(name, extra if isinstance(extra, Mapping) else None)
        if sub is not None:
            yield from _walk(item, sub, root, f"{key}.{name}" if key else name)


def hub_references(cfg: Mapping[str, Any], schema: Mapping[str, Any]) -> list[HubRef]:
    """Every hub id of ``cfg`` (a validated config, defaults filled in), in config order, one per key."""
    refs = []
    for key, kind, value in _walk(cfg, schema, schema, ""):
        if not isinstance(value, str) or value == "teacher" or is_built(value) or is_local(value):
            continue
        options: dict[str, Any] = {}
        parent = _parent(cfg, key)
        if kind == "pipeline" and (variant := (parent.get("generation") or {}).get("variant")):
            options["variant"] = variant
        if kind == "dataset" and parent.get("split"):
            options["split"] = parent["split"]
        refs.append(HubRef(key, value, kind, options))
    return refs


def _parent(cfg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    node: Any = cfg
    for name in key.split(".")[:-1]:
        node = node[name]
    return node


def load(configfiles: list[str], schema_path: str | Path = SCHEMA) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config of these files (later ones override earlier), checked against the schema, and the schema.

    Only the schema's checks: listing what to download must not need the data or models to be here."""
    from kd_core.check import read_configs

    return validate_config(read_configs(configfiles), schema_path), yaml.safe_load(Path(schema_path).read_text())


def in_cache(ref: HubRef) -> bool:
    from kd_core.models.folders import cached_snapshot

    return cached_snapshot(ref.repo_id, ref.repo_type) is not None


def download(ref: HubRef) -> str:
    """Fetch ``ref`` into the Hugging Face cache as its loader reads it; returns where it lies."""
    if ref.kind == "pipeline":
        from diffusers import DiffusionPipeline

        return str(DiffusionPipeline.download(ref.repo_id, use_safetensors=True, **ref.options))
    if ref.kind == "dataset":
        try:
            import datasets
        except ImportError:
            datasets = None
        if datasets is not None:
            datasets.load_dataset(ref.repo_id, split=ref.options.get("split") or "train")
            return str(Path(datasets.config.HF_DATASETS_CACHE))
    from huggingface_hub import snapshot_download

    patterns = None if ref.kind == "dataset" else MODEL_FILES
    return snapshot_download(ref.repo_id, repo_type=ref.repo_type, allow_patterns=patterns)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kd_core.hub", description=__doc__.splitlines()[0])
    parser.add_argument("configfiles", nargs="+", help="config files, later ones override earlier")
    parser.add_argument("--download", action="store_true",
                        help="fetch each into the Hugging Face cache (HF_HOME), as the workflow's loaders read it")
    parser.add_argument("--schema", default=SCHEMA)
    args = parser.parse_args(argv)
    try:
        cfg, schema = load(args.configfiles, args.schema)
    except KDError as exc:
        sys.stderr.write(f"config error: {exc}\n")
        return 1
    refs = hub_references(cfg, schema)
    if not refs:
        print(f"{', '.join(args.configfiles)}: no hub ids (every model is built by the workflow or a local path)")
        return 0
    from huggingface_hub import constants

    print(f"{len(refs)} hub id(s) in {', '.join(args.configfiles)}; cache: {constants.HF_HUB_CACHE}")
    width = max(len(r.key) for r in refs)
    for ref in refs:
        extra = "".join(f" {k}={v}" for k, v in ref.options.items())
        print(f"  {ref.key:<{width}}  {ref.repo_id}  ({ref.kind}{extra}; {'cached' if in_cache(ref) else 'not cached'})")
    if not args.download:
        return 0
    distinct = {(r.repo_id, r.kind, tuple(sorted(r.options.items()))): r for r in refs}
    failed = []
    for ref in distinct.values():
        print(f"downloading {ref.repo_id} ({ref.kind}) ...", flush=True)
        try:
            where = download(ref)
        except Exception as exc:  # network, gated repository, missing files: one line, the next id still tried
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            sys.stderr.write(f"{ref.key}: {ref.repo_id} not downloaded: {type(exc).__name__}: {first}\n")
            failed.append(ref.repo_id)
            continue
        print(f"  -> {where}")
    if failed:
        sys.stderr.write(f"{len(failed)} of {len(distinct)} not downloaded: {', '.join(failed)}\n")
        return 1
    print("copy this cache to the offline host (same HF_HOME there) and run with HF_HUB_OFFLINE=1")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
