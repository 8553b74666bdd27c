"""The step-distillation study's table: quality and cost against steps, with the paired difference
of the student and its teacher at equal steps (its latency: kd_core.metrics.step_latency, the only
part that loads a pipeline).

Quality. Per (model, steps) and metric (attribute accuracy in the shapes world, the CLIP score where
configured, the pairwise metrics against the teacher's full-step image of the same prompt and seed):
the mean with a percentile bootstrap 95% CI over images; for the student, the paired difference to
the teacher at the same step count (the same prompts and seeds) with its CI and a Wilcoxon p-value,
and its mean as a share of the full-step teacher's. FID / KID (one value per model, CI from the
feature bootstrap) are taken from the distribution table as they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from kd_core.io import write_parquet
from kd_core.metrics.stats import model_means, paired_improvement, per_image_table

TABLE_SCHEMA = pa.schema([
    ("model", pa.string()), ("role", pa.string()), ("steps", pa.int64()), ("metric", pa.string()),
    ("higher_is_better", pa.bool_()), ("mean", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
    ("n", pa.int64()), ("baseline", pa.string()), ("difference", pa.float64()), ("diff_ci_low", pa.float64()),
    ("diff_ci_high", pa.float64()), ("p_value", pa.float64()), ("of_full_teacher", pa.float64()),
])

def step_distill_summary(students: dict[str, int], teachers: dict[str, int], teacher: str, full_steps: int,
                         pairwise: list[str | Path], attributes: list[str | Path], alignment: list[str | Path],
                         latency: str | Path, distribution: str | Path | None = None, out_path: str | Path | None = None,
                         split: str = "eval", seed: int = 0, n_boot: int = 5000) -> pd.DataFrame:
    """The study's table. ``students`` / ``teachers``: model name -> steps (the teacher at its full
    ``full_steps`` is ``teacher``); the per-image tables of every one of them (pairwise: students' and
    step teachers' only, the full teacher being their reference)."""
    roles = {m: ("student", n) for m, n in students.items()} | {m: ("teacher", n) for m, n in teachers.items()}
    roles[teacher] = ("teacher", full_steps)
    at_steps = {n: m for m, n in teachers.items()} | {full_steps: teacher}
    long = per_image_table(pairwise, attributes, alignment)
    long = long[(long["split"] == split) & long["model"].isin(list(roles))]
    rng = np.random.default_rng(seed)
    table = model_means(long, rng, n_boot)
    table.insert(1, "role", table["model"].map(lambda m: roles[m][0]))
    table.insert(2, "steps", table["model"].map(lambda m: roles[m][1]))
    diffs = []
    for model, n in students.items():  # the paired difference to the teacher at the same step count
        base = at_steps.get(n)
        if base is None:
            continue
        pair = long[long["model"].isin([model, base])]
        d = paired_improvement(pair, base, seed=seed, n_boot=n_boot)
        diffs.append(d.assign(model=model)[["model", "metric", "baseline", "difference", "ci_low", "ci_high", "p_value"]]
                     .rename(columns={"ci_low": "diff_ci_low", "ci_high": "diff_ci_high"}))
    if len(table):
        if diffs:
            table = table.merge(pd.concat(diffs, ignore_index=True), on=["model", "metric"], how="left")
        full = table[table["model"] == teacher].set_index("metric")["mean"]
        table["of_full_teacher"] = table["mean"] / table["metric"].map(full)
    table = _with_latency_and_distribution(table, roles, latency, distribution, at_steps)
    for col in TABLE_SCHEMA.names:
        if col not in table:
            table[col] = np.nan if col != "baseline" else ""
    table["baseline"] = table["baseline"].fillna("")
    table = table[TABLE_SCHEMA.names].sort_values(["role", "steps", "metric"], ignore_index=True)
    if out_path is not None:
        write_parquet(table, out_path, TABLE_SCHEMA, "metrics/step_distill",
                      {"protocol": __doc__.split("\n\n")[1].replace("\n", " "), "teacher": teacher, "full_steps": full_steps,
                       "students": students, "teachers": teachers, "bootstrap": n_boot,
                       "ci": "percentile 95%, images (pairs) resampled", "test": "Wilcoxon signed-rank"})
    return table


def _with_latency_and_distribution(table: pd.DataFrame, roles: dict[str, tuple[str, int]], latency: str | Path,
                                   distribution: str | Path | None, at_steps: dict[int, str]) -> pd.DataFrame:
    """Rows of the latency per image (and, where measured, FID / KID against the real images) of every pair."""
    rows = []
    lat = pd.read_parquet(latency).set_index("model")
    for model, (role, steps) in roles.items():
        if model not in lat.index:
            continue
        r = lat.loc[model]
        rows.append({"model": model, "role": role, "steps": steps, "metric": "latency_ms", "higher_is_better": False,
                     "mean": r["latency_ms"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n": int(r["rounds"]),
                     "of_full_teacher": r["ratio_teacher"]})
    if distribution is not None:
        dist = pd.read_parquet(distribution)
        dist = dist[(dist["reference"] == "real") & dist["model"].isin(list(roles))]
        for r in dist.itertuples():
            role, steps = roles[r.model]
            rows.append({"model": r.model, "role": role, "steps": steps, "metric": r.metric, "higher_is_better": False,
                         "mean": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high, "n": int(r.n_model)})
    extra = pd.DataFrame(rows)
    if extra.empty:
        return table
    return pd.concat([table, extra], ignore_index=True) if len(table) else extra
