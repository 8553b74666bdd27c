"""Paired statistics: each student against the base student on the same prompts and seeds.

The difference of a metric (student - base) is taken per pair, its mean gets a percentile
bootstrap 95% CI (resampling pairs), and a Wilcoxon signed-rank test gives the p-value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.stats import wilcoxon

from kd_core.io import write_parquet
from kd_core.metrics.bootstrap import bootstrap_ci  # noqa: F401 - re-exported
from kd_core.metrics.directions import HIGHER_IS_BETTER

IMPROVEMENT_SCHEMA = pa.schema([
    ("model", pa.string()), ("baseline", pa.string()), ("metric", pa.string()), ("higher_is_better", pa.bool_()),
    ("baseline_mean", pa.float64()), ("model_mean", pa.float64()), ("difference", pa.float64()),
    ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("relative_change", pa.float64()), ("p_value", pa.float64()),
    ("improved", pa.bool_()), ("n", pa.int64()),
])


def paired_improvement(long: pd.DataFrame, baseline: str, out_path: str | Path | None = None, seed: int = 0,
                       higher_is_better: dict[str, bool | None] | None = None, n_boot: int = 5000) -> pd.DataFrame:
    """``long``: rows (model, prompt_id, seed, metric, value). One row per model != baseline and metric.

    ``improved`` is true when the whole CI of the difference lies on the better side of zero.
    """
    better = {**HIGHER_IS_BETTER, **(higher_is_better or {})}
    rng = np.random.default_rng(seed)
    wide = long.pivot_table(index=["prompt_id", "seed", "metric"], columns="model", values="value", aggfunc="mean")
    rows = []
    for model in [m for m in long["model"].unique() if m != baseline]:
        for metric in sorted(long["metric"].unique()):
            if (metric not in wide.index.get_level_values("metric")) or model not in wide or baseline not in wide:
                continue
            sub = wide.xs(metric, level="metric")[[baseline, model]].dropna()
            sub = sub[np.isfinite(sub).all(axis=1)]
            if sub.empty:
                continue
            d = (sub[model] - sub[baseline]).to_numpy()
            lo, hi = bootstrap_ci(d, rng, n_boot)
            hib = better.get(metric, True)
            if hib is None:  # no direction (sharpness ratio): its distance metric carries it
                continue
            p = float(wilcoxon(d).pvalue) if np.any(d != 0) and len(d) > 1 else 1.0
            base_mean = float(sub[baseline].mean())
            rows.append({"model": model, "baseline": baseline, "metric": metric, "higher_is_better": hib,
                         "baseline_mean": base_mean, "model_mean": float(sub[model].mean()), "difference": float(d.mean()),
                         "ci_low": lo, "ci_high": hi,
                         "relative_change": float(d.mean() / abs(base_mean)) if base_mean else float("nan"),
                         "p_value": p, "improved": bool(lo > 0) if hib else bool(hi < 0), "n": len(d)})
    out = pd.DataFrame(rows, columns=IMPROVEMENT_SCHEMA.names)
    if out_path is not None:
        write_parquet(out, out_path, IMPROVEMENT_SCHEMA, "metrics/improvement",
                      {"bootstrap": n_boot, "seed": seed, "ci": "percentile 95%, pairs resampled", "test": "Wilcoxon signed-rank"})
    return out


def per_image_table(pairwise: list[str | Path] = (), attributes: list[str | Path] = (),
                    alignment: list[str | Path] = ()) -> pd.DataFrame:
    """Every per-image measurement in one long table: (model, split, prompt_id, seed, metric, value).

    Pairwise metrics against the reference, attribute accuracy (``accuracy_<attribute>`` and their
    mean ``accuracy_all``, per image) and alignment scores (CLIP score).
    """
    cols = ["model", "split", "prompt_id", "seed", "metric", "value"]
    frames = [pd.read_parquet(p)[cols] for p in pairwise]
    for p in attributes:
        a = pd.read_parquet(p)
        frames.append(pd.DataFrame({"model": a["model"], "split": a["split"], "prompt_id": a["prompt_id"], "seed": a["seed"],
                                    "metric": "accuracy_" + a["attribute"], "value": a["correct"].astype(float)}))
        mean = a.groupby(["model", "split", "prompt_id", "seed"], as_index=False)["correct"].mean()
        frames.append(mean.rename(columns={"correct": "value"}).assign(metric="accuracy_all"))
    frames += [pd.read_parquet(p)[cols] for p in alignment]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True)


def model_means(long: pd.DataFrame, rng: np.random.Generator, n_boot: int) -> pd.DataFrame:
    """Per (model, metric) of a long per-image table: the mean over its finite values with a percentile
    bootstrap 95% CI, ``n`` and ``higher_is_better`` (False for a metric without a direction)."""
    rows = []
    for (model, metric), g in long.groupby(["model", "metric"], sort=True):
        v = g["value"].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if not len(v):
            continue
        lo, hi = bootstrap_ci(v, rng, n_boot)
        rows.append({"model": model, "metric": metric, "higher_is_better": bool(HIGHER_IS_BETTER.get(metric, True)),
                     "mean": float(v.mean()), "ci_low": lo, "ci_high": hi, "n": len(v)})
    return pd.DataFrame(rows, columns=["model", "metric", "higher_is_better", "mean", "ci_low", "ci_high", "n"])


SUMMARY_SCHEMA = pa.schema([
    ("model", pa.string()), ("split", pa.string()), ("metric", pa.string()), ("higher_is_better", pa.bool_()),
    ("mean", pa.float64()), ("median", pa.float64()), ("std", pa.float64()), ("ci_low", pa.float64()),
    ("ci_high", pa.float64()), ("n", pa.int64()), ("n_nonfinite", pa.int64()),
])


def summarize(long: pd.DataFrame, out_path: str | Path | None = None, seed: int = 0, n_boot: int = 2000) -> pd.DataFrame:
    """Per model, split and metric: mean, median, std and a percentile bootstrap 95% CI of the mean.

    Non-finite values (PSNR of identical images) are left out of the statistics and counted.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for (model, split, metric), g in long.groupby(["model", "split", "metric"], sort=True):
        v = g["value"].to_numpy(dtype=float)
        finite = v[np.isfinite(v)]
        lo, hi = bootstrap_ci(finite, rng, n_boot) if len(finite) else (float("nan"), float("nan"))
        rows.append({"model": model, "split": split, "metric": metric,
                     "higher_is_better": HIGHER_IS_BETTER.get(metric, True),
                     "mean": float(finite.mean()) if len(finite) else float("nan"),
                     "median": float(np.median(finite)) if len(finite) else float("nan"),
                     "std": float(finite.std(ddof=1)) if len(finite) > 1 else float("nan"),
                     "ci_low": lo, "ci_high": hi, "n": len(finite), "n_nonfinite": len(v) - len(finite)})
    out = pd.DataFrame(rows, columns=SUMMARY_SCHEMA.names)
    if out_path is not None:
        write_parquet(out, out_path, SUMMARY_SCHEMA, "metrics/summary",
                      {"bootstrap": n_boot, "seed": seed, "ci": "percentile 95% of the mean, images resampled"})
    return out


def improvement_table(pairwise: list[str | Path], attributes: list[str | Path], baseline: str, out_path: str | Path,
                      seed: int = 0, alignment: list[str | Path] = (), split: str = "eval",
                      n_boot: int = 5000) -> pd.DataFrame:
    """Each student against ``baseline`` on the ``split`` images: pairwise metrics against the
    reference, per-attribute accuracy and alignment scores."""
    long = per_image_table(pairwise, attributes, alignment)
    return paired_improvement(long[long["split"] == split], baseline, out_path, seed, n_boot=n_boot)
