"""Real-test accuracy of the DM-KD classifiers, with CIs and paired comparisons.

Every run is scored on the same real test images, once per training seed. A run's accuracy is the
mean over its seeds; its 95% CI comes from a two-level bootstrap that resamples seeds and test
images (:func:`kd_core.metrics.bootstrap.two_level_means`), so it covers both the luck of the
seed and the finite test set. A run compared with its baseline (KD against hard labels on the
same images) is paired by test image and by seed: the difference gets the same two-level CI, and a
p-value from an exact McNemar test with one seed (binomial test on the images exactly one run gets
right) or, with several seeds, the two-sided bootstrap p (twice the share of resampled differences
on the far side of zero).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.stats import binomtest

from kd_core.io import read_metadata, write_parquet
from kd_core.metrics.bootstrap import bootstrap_ci, percentile_interval, two_level_means

DMKD_SCHEMA = pa.schema([
    ("run", pa.string()), ("data", pa.string()), ("objective", pa.string()), ("guidance", pa.float64()),
    ("n_train", pa.int64()), ("n_seeds", pa.int64()), ("accuracy", pa.float64()), ("ci_low", pa.float64()),
    ("ci_high", pa.float64()), ("seed_sd", pa.float64()), ("seed_accuracies", pa.list_(pa.float64())),
    ("n_test", pa.int64()), ("relative_to_real", pa.float64()), ("baseline", pa.string()),
    ("difference", pa.float64()), ("diff_ci_low", pa.float64()), ("diff_ci_high", pa.float64()),
    ("p_value", pa.float64()), ("best_step", pa.int64()),
])


def paired_difference(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n_boot: int) -> tuple[float, float, float, float]:
    """(mean(a) - mean(b), CI low, CI high, exact McNemar p) of two 0/1 vectors over the same items."""
    d = a.astype(float) - b.astype(float)
    lo, hi = bootstrap_ci(d, rng, n_boot)
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return float(d.mean()), lo, hi, float(p)


def paired_seed_difference(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                           n_boot: int) -> tuple[float, float, float, float]:
    """(mean difference, CI low, CI high, p) of two (seeds x items) 0/1 matrices paired by seed and item.

    One seed: :func:`paired_difference` (exact McNemar). Several: two-level bootstrap CI and p.
    """
    if a.shape != b.shape:
        raise ValueError(f"a run and its baseline have different seeds or test sets ({a.shape} vs {b.shape})")
    if a.shape[0] == 1:
        return paired_difference(a[0], b[0], rng, n_boot)
    d = a.astype(float) - b.astype(float)
    means = two_level_means(d, rng, n_boot)
    lo, hi = percentile_interval(means)
    p = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return float(d.mean()), lo, hi, p


def _correct(paths: str | Path | list) -> np.ndarray:
    """(seeds x test images) 0/1 matrix from one predictions table per seed."""
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    if not paths:
        raise ValueError("a run has no prediction tables")
    rows = [pd.read_parquet(p)["correct"].to_numpy(dtype=int) for p in paths]
    if len({len(r) for r in rows}) > 1:
        raise ValueError(f"runs were scored on different test sets (sizes {sorted({len(r) for r in rows})})")
    return np.stack(rows)


def summarize_dmkd(runs: dict[str, dict], out_path: str | Path | None = None, seed: int = 0,
                          n_boot: int = 5000, real_run: str | None = "real_ce") -> pd.DataFrame:
    """``runs``: name -> {predictions (one table, or a list: one per training seed, in the same seed
    order for every run), data, objective, guidance, baseline}. One row per run.

    ``relative_to_real`` is the run's mean accuracy over ``real_run``'s; ``baseline`` names the run
    it is compared with (a KD student against the hard-label student on the same synthetic images).
    """
    rng = np.random.default_rng(seed)
    correct = {name: _correct(r["predictions"]) for name, r in runs.items()}
    sizes = {c.shape[1] for c in correct.values()}
    if len(sizes) > 1:
        raise ValueError(f"runs were scored on different test sets (sizes {sorted(sizes)})")
    real = correct[real_run].mean() if real_run in correct else float("nan")
    rows = []
    for name, r in runs.items():
        c = correct[name]
        first = r["predictions"] if isinstance(r["predictions"], str | Path) else r["predictions"][0]
        meta = read_metadata(first)
        lo, hi = percentile_interval(two_level_means(c, rng, n_boot))
        per_seed = c.mean(axis=1)
        base = r.get("baseline")
        diff = paired_seed_difference(c, correct[base], rng, n_boot) if base in correct else (float("nan"),) * 4
        rows.append({"run": name, "data": r["data"], "objective": r["objective"],
                     "guidance": float(r["guidance"]) if r.get("guidance") is not None else float("nan"),
                     "n_train": int(meta.get("n_train", 0)) + int(meta.get("n_val", 0)), "n_seeds": len(c),
                     "accuracy": float(c.mean()), "ci_low": lo, "ci_high": hi,
                     "seed_sd": float(per_seed.std(ddof=1)) if len(c) > 1 else float("nan"),
                     "seed_accuracies": [float(v) for v in per_seed], "n_test": c.shape[1],
                     "relative_to_real": float(c.mean() / real) if real else float("nan"),
                     "baseline": base if base in correct else "", "difference": diff[0], "diff_ci_low": diff[1],
                     "diff_ci_high": diff[2], "p_value": diff[3], "best_step": int(meta.get("best_step") or -1)})
    out = pd.DataFrame(rows, columns=DMKD_SCHEMA.names)
    if out_path is not None:
        write_parquet(out, out_path, DMKD_SCHEMA, "metrics/dmkd",
                      {"bootstrap": n_boot, "seed": seed, "real_run": real_run,
                       "ci": "percentile 95%, two-level bootstrap over training seeds and test images",
                       "test": "exact McNemar (paired) with one seed; two-sided two-level bootstrap p with several"})
    return out
