"""Compare the results of two runs of one config: tables by value, weights tensor by tensor, sampled
images byte by byte, JSON by value, the paper's CSV tables by value and its Markdown and LaTeX by
text; timings and memory aside (they are measured, not computed). Figures (PNG, PDF) are drawn from
the tables compared here and are not compared."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

#: Tables of measured times only (their other columns follow from the config: model, batch size...).
TIMED_TABLES = {"metrics/efficiency.parquet", "metrics/size_latency.parquet", "metrics/block_kd_latency.parquet"}
#: Columns of measured times and memory, and the fingerprints of model folders (file mtimes) that manifests keep.
#: ``on_frontier``: the size study's Pareto front over quality and measured latency.
TIMED_COLUMNS = re.compile(r"wall_time|settings_hash|step_ms|latency|seconds|memory|on_frontier")
#: Tensors holding a model fingerprint (file mtimes): latent caches' ``key``.
FINGERPRINTS = {"key"}
IMAGES = ("images/", "dmkd/synthetic/", "data/")
#: The paper's tables of measured times only (renderings of TIMED_TABLES).
TIMED_PAPER = {"paper/tables/efficiency"}
#: A line of the paper's text that reports a measured time or memory: its numbers are masked.
TIMED_LINE = re.compile(r"latenc|per.second|memory|frontier|\bms\b|\(ms\)|seconds", re.IGNORECASE)
NUMBER = re.compile(r"[-+]?\d[\d.]*(?:e[-+]?\d+)?", re.IGNORECASE)
SKIPPED = ("logs/", "benchmarks/", "report.html")


def _files(root: Path) -> set[str]:
    """The outputs under ``root``: not logs, benchmarks, checkpoints, nor the hidden records a job keeps
    of what it made (``.<name>.record.parquet``: a cache that a killed and rerun job extends with its
    earlier attempts' rows)."""
    rels = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    return {r for r in rels if not r.startswith(SKIPPED) and "/checkpoints/" not in f"/{r}"
            and not any(part.startswith(".") for part in Path(r).parts)}


def differences(reference: Path, rerun: Path) -> list[str]:
    """Every output that differs between two ``results/<experiment>`` folders, or exists in one only."""
    a, b = _files(reference), _files(rerun)
    found = [f"only in the reference: {r}" for r in sorted(a - b)] + [f"only in the rerun: {r}" for r in sorted(b - a)]
    for rel in sorted(a & b):
        x, y = reference / rel, rerun / rel
        if rel.endswith(".parquet") and rel not in TIMED_TABLES:
            left, right = _untimed_rows(pd.read_parquet(x)), _untimed_rows(pd.read_parquet(y))
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
        elif rel.endswith(".json") and json.loads(x.read_text()) != json.loads(y.read_text()):
            found.append(f"json {rel} differs")
        elif rel.endswith((".csv", ".md", ".tex")) and rel.rsplit(".", 1)[0] not in TIMED_PAPER:
            found += _text_differences(rel, x, y)
    return found


def _untimed_rows(table: pd.DataFrame) -> pd.DataFrame:
    """A long table without its rows of measured times (``metric`` such as ``step_ms``)."""
    if "metric" not in table.columns:
        return table
    return table[~table["metric"].astype(str).str.contains(TIMED_COLUMNS)].reset_index(drop=True)


def _text_differences(rel: str, x: Path, y: Path) -> list[str]:
    if rel.endswith(".csv"):
        left, right = pd.read_csv(x), pd.read_csv(y)
        drop = [c for c in left.columns if TIMED_COLUMNS.search(c)]
        try:
            pd.testing.assert_frame_equal(left.drop(columns=drop), right.drop(columns=drop, errors="ignore"), check_exact=True)
        except AssertionError as exc:
            return [f"table {rel}: {str(exc).splitlines()[0]}"]
        return []
    if rel.startswith("paper/tables/") and (x.with_suffix(".csv")).is_file():
        if any(TIMED_COLUMNS.search(c) for c in pd.read_csv(x.with_suffix(".csv"), nrows=0).columns):
            return []  # a rendering of a table with timed columns: its CSV is compared without them

    def lines(path: Path) -> list[str]:
        """Each line with a timed number masked, a Markdown table whose header names a timed column as
        one placeholder per row (its rows mix times with values: the tables are compared as Parquet),
        and the padding that aligns a table's columns (which a timed number's width changes) collapsed."""
        out, header = [], None
        for ln in path.read_text().splitlines():
            header = (header if header is not None else ln) if ln.startswith("|") else None
            if header is not None and TIMED_LINE.search(header):
                out.append("| a row with measured times |")
                continue
            ln = NUMBER.sub("#", ln) if TIMED_LINE.search(ln) else ln
            out.append(re.sub(r"-{2,}", "--", " ".join(ln.split())))
        return out

    a, b = lines(x), lines(y)
    if a != b:
        first = next((i for i, (p, q) in enumerate(zip(a, b, strict=False)) if p != q), min(len(a), len(b)))
        return [f"text {rel} differs from line {first + 1}"]
    return []
