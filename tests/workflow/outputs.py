"""Compare the results of two runs of one config: tables by value, weights tensor by tensor, sampled
images byte by byte; timings and memory aside (they are measured, not computed)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

#: Tables of measured times only (their other columns follow from the config: model, batch size...).
TIMED_TABLES = {"metrics/efficiency.parquet", "metrics/size_latency.parquet"}
#: Columns of measured times and memory, and the fingerprints of model folders (file mtimes) that manifests keep.
#: ``on_frontier``: the size study's Pareto front over quality and measured latency.
TIMED_COLUMNS = re.compile(r"wall_time|settings_hash|step_ms|latency|seconds|memory|on_frontier")
#: Tensors holding a model fingerprint (file mtimes): latent caches' ``key``.
FINGERPRINTS = {"key"}
IMAGES = ("images/", "dmkd/synthetic/", "data/")
SKIPPED = ("logs/", "benchmarks/", "report.html")


def _files(root: Path) -> set[str]:
    rels = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    return {r for r in rels if not r.startswith(SKIPPED) and "/checkpoints/" not in f"/{r}"}


def differences(reference: Path, rerun: Path) -> list[str]:
    """Every output that differs between two ``results/<experiment>`` folders, or exists in one only."""
    a, b = _files(reference), _files(rerun)
    found = [f"only in the reference: {r}" for r in sorted(a - b)] + [f"only in the rerun: {r}" for r in sorted(b - a)]
    for rel in sorted(a & b):
        x, y = reference / rel, rerun / rel
        if rel.endswith(".parquet") and rel not in TIMED_TABLES:
            left, right = pd.read_parquet(x), pd.read_parquet(y)
            drop = [c for c in left.columns if TIMED_COLUMNS.search(c)]
            try:
                pd.testing.assert_frame_equal(left.drop(columns=drop), right.drop(columns=drop, errors="ignore"), check_exact=True)
            except AssertionError as exc:
                found.append(f"table {rel}: {str(exc).splitlines()[0]}")
        elif rel.endswith(".safetensors"):
            left, right = load_file(x), load_file(y)
            if left.keys() != right.keys():
                found.append(f"weights {rel}: other tensor names")
            bad = [k for k in left if k in right and k not in FINGERPRINTS and not torch.equal(left[k], right[k])]
            found += [f"weights {rel}: tensor {k} differs" for k in bad[:3]]
        elif rel.endswith(".png") and rel.startswith(IMAGES) and x.read_bytes() != y.read_bytes():
            found.append(f"image {rel} differs")
    return found
