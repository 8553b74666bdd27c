"""Block distillation's table: each block-removed student's quality against the teacher's, the base
student's and its own ablation's, beside its size and its measured step latency against the
teacher's (the latency: kd_core.metrics.latency, the only part that loads a model).

Quality. Per model and metric (attribute accuracy in the shapes world, the CLIP score where
configured, the pairwise metrics against the teacher's image of the same prompt and seed): the mean
with a percentile bootstrap 95% CI over images; for a student, the paired difference (same prompts
and seeds) with its CI and a Wilcoxon p-value to each baseline it has: the teacher, the base student
(where configured), and for a student trained with feature KD its ablation without it. Cost: the
U-Net's parameters and FLOPs per step, and its step latency (median over interleaved rounds, CI)
with the median of its time over the teacher's in the same round (CI); the ablation has its level's
architecture and cost.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from kd_core.io import write_parquet
from kd_core.metrics.directions import HIGHER_IS_BETTER
from kd_core.metrics.stats import model_means, paired_improvement, per_image_table

TABLE_SCHEMA = pa.schema([
    ("model", pa.string()), ("level", pa.string()), ("feature_kd", pa.bool_()), ("metric", pa.string()),
    ("higher_is_better", pa.bool_()), ("mean", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
    ("n", pa.int64()), ("baseline", pa.string()), ("difference", pa.float64()), ("diff_ci_low", pa.float64()),
    ("diff_ci_high", pa.float64()), ("p_value", pa.float64()),
])
#: Cost rows: (metric, column of the latency table, its CI columns or None).
COST = (("params", "params", None), ("gflops_per_step", "gflops", None), ("step_ms", "step_ms", ("ci_low", "ci_high")),
        ("step_ms_ratio_teacher", "ratio_teacher", ("ratio_ci_low", "ratio_ci_high")))


def block_kd_summary(students: dict[str, dict], teacher: str, base: str | None, pairwise: list[str | Path],
                     attributes: list[str | Path], alignment: list[str | Path], latency: str | Path,
                     out_path: str | Path | None = None, split: str = "eval", seed: int = 0,
                     n_boot: int = 5000) -> pd.DataFrame:
    """The study's table. ``students``: name -> {"level", "feature_kd"}; ``teacher`` and ``base``
    (None when there is no base student): the reference models' names; the per-image tables of every
    one of them (pairwise: the students' and the base student's, the teacher being their reference);
    ``latency``: :func:`kd_core.metrics.latency.denoiser_latency`'s table, one model per level."""
    kinds = {m: (s["level"], bool(s["feature_kd"])) for m, s in students.items()}
    kinds[teacher] = ("teacher", False)
    if base:
        kinds[base] = ("base student", False)
    long = per_image_table(pairwise, attributes, alignment)
    long = long[(long["split"] == split) & long["model"].isin(list(kinds))]
    rng = np.random.default_rng(seed)
    directed = long[long["metric"].map(lambda m: HIGHER_IS_BETTER.get(m, True) is not None)]  # not the sharpness ratio
    own = model_means(directed, rng, n_boot).assign(baseline="")
    diffs = []
    for model, (level, feature_kd) in kinds.items():
        if model in (teacher, base):
            continue
        ablation = next((m for m, (lv, f) in kinds.items() if lv == level and not f), None) if feature_kd else None
        for ref in [r for r in (teacher, base, ablation) if r]:
            d = paired_improvement(long[long["model"].isin([model, ref])], ref, seed=seed, n_boot=n_boot)
            if d.empty:
                continue
            d = d[["model", "metric", "baseline", "difference", "ci_low", "ci_high", "p_value"]].rename(
                columns={"ci_low": "diff_ci_low", "ci_high": "diff_ci_high"})
            diffs.append(d.merge(own.drop(columns="baseline"), on=["model", "metric"], how="left"))
    table = pd.concat([own, *diffs], ignore_index=True)
    lat = pd.read_parquet(latency)
    table = pd.concat([table, _cost_rows(kinds, teacher, lat)], ignore_index=True)
    table["level"] = table["model"].map(lambda m: kinds[m][0])
    table["feature_kd"] = table["model"].map(lambda m: kinds[m][1])
    for col in TABLE_SCHEMA.names:
        if col not in table:
            table[col] = np.nan
    table["baseline"] = table["baseline"].fillna("")
    order = {m: i for i, m in enumerate([teacher, *([base] if base else []), *students])}
    table = table[TABLE_SCHEMA.names].sort_values(["model", "metric", "baseline"], key=lambda c: c.map(order)
                                                  if c.name == "model" else c, ignore_index=True)
    if out_path is not None:
        write_parquet(table, out_path, TABLE_SCHEMA, "metrics/block_kd",
                      {"protocol": __doc__.split("\n\n")[1].replace("\n", " "), "teacher": teacher, "base": base,
                       "students": students, "bootstrap": n_boot, "ci": "percentile 95%, images (pairs) resampled",
                       "test": "Wilcoxon signed-rank",
                       "latency": lat[["model", "batch_size", "rounds", "device", "dtype"]].drop_duplicates().to_dict("records")})
    return table


def _cost_rows(kinds: dict[str, tuple[str, bool]], teacher: str, lat: pd.DataFrame) -> pd.DataFrame:
    """Parameters, GFLOPs and step latency (the smallest batch timed) of the teacher and every student
    (a student without feature KD: its level's, the same architecture)."""
    lat = lat[lat["batch_size"] == lat["batch_size"].min()].set_index("model")
    rows = []
    for model, (level, _) in kinds.items():
        timed = "teacher" if model == teacher else level
        if timed not in lat.index:
            continue
        r = lat.loc[timed]
        for metric, col, ci in COST:
            if metric == "step_ms_ratio_teacher" and model == teacher:
                continue
            rows.append({"model": model, "metric": metric, "higher_is_better": False, "mean": float(r[col]),
                         "ci_low": float(r[ci[0]]) if ci else np.nan, "ci_high": float(r[ci[1]]) if ci else np.nan,
                         "n": int(r["rounds"]), "baseline": "teacher" if metric == "step_ms_ratio_teacher" else ""})
    return pd.DataFrame(rows)
