"""Real-test accuracy of the DM-KD classifiers, with CIs and paired comparisons.

Every run is scored on the same real test images, so comparisons are paired: the difference of
two runs' accuracies gets a percentile bootstrap 95% CI over test images (resampling images, both
runs together) and an exact McNemar test (binomial test on the images exactly one run gets right).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.stats import binomtest

from kd_core.io import read_metadata, write_parquet
from kd_core.metrics.bootstrap import bootstrap_ci

CLASSIFIER_SCHEMA = pa.schema([
    ("run", pa.string()), ("data", pa.string()), ("objective", pa.string()), ("guidance", pa.float64()),
    ("n_train", pa.int64()), ("accuracy", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
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


def summarize_classifiers(runs: dict[str, dict], out_path: str | Path | None = None, seed: int = 0,
                          n_boot: int = 5000, real_run: str | None = "real_ce") -> pd.DataFrame:
    """``runs``: name -> {predictions, data, objective, guidance, baseline}. One row per run.

    ``relative_to_real`` is the run's accuracy over ``real_run``'s; ``baseline`` names the run it
    is compared with (a KD student against the hard-label student on the same synthetic images).
    """
    rng = np.random.default_rng(seed)
    correct = {name: pd.read_parquet(r["predictions"])["correct"].to_numpy(dtype=int) for name, r in runs.items()}
    sizes = {len(c) for c in correct.values()}
    if len(sizes) > 1:
        raise ValueError(f"runs were scored on different test sets (sizes {sorted(sizes)})")
    real = correct[real_run].mean() if real_run in correct else float("nan")
    rows = []
    for name, r in runs.items():
        c = correct[name]
        meta = read_metadata(r["predictions"])
        lo, hi = bootstrap_ci(c.astype(float), rng, n_boot)
        base = r.get("baseline")
        diff = paired_difference(c, correct[base], rng, n_boot) if base in correct else (float("nan"),) * 4
        rows.append({"run": name, "data": r["data"], "objective": r["objective"],
                     "guidance": float(r["guidance"]) if r.get("guidance") is not None else float("nan"),
                     "n_train": int(meta.get("n_train", 0)) + int(meta.get("n_val", 0)), "accuracy": float(c.mean()),
                     "ci_low": lo, "ci_high": hi, "n_test": len(c), "relative_to_real": float(c.mean() / real) if real else float("nan"),
                     "baseline": base if base in correct else "", "difference": diff[0], "diff_ci_low": diff[1],
                     "diff_ci_high": diff[2], "p_value": diff[3], "best_step": int(meta.get("best_step") or -1)})
    out = pd.DataFrame(rows, columns=CLASSIFIER_SCHEMA.names)
    if out_path is not None:
        write_parquet(out, out_path, CLASSIFIER_SCHEMA, "metrics/classifier_kd",
                      {"bootstrap": n_boot, "seed": seed, "ci": "percentile 95%", "test": "exact McNemar (paired)",
                       "real_run": real_run})
    return out
