"""The model-size study's summary: one row per model (teacher and width students) joining size,
error against the teacher, trajectory drift, cost and distribution quality, plus Spearman rank
correlations of width with error and with latency (the study's two headline trends); with as
few students as a study has, the p-value is exact (every permutation of the ranks)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.stats import rankdata, spearmanr

from kd_core.io import write_parquet
from kd_core.metrics.bootstrap import bootstrap_ci
from kd_core.metrics.stats import per_image_table

SIZE_SCHEMA = pa.schema([
    ("model", pa.string()), ("factor", pa.float64()), ("params", pa.int64()), ("mse_teacher", pa.float64()),
    ("mse_teacher_ci_low", pa.float64()), ("mse_teacher_ci_high", pa.float64()), ("mse_noise", pa.float64()),
    ("trajectory_final", pa.float64()), ("step_ms", pa.float64()), ("step_ms_ci_low", pa.float64()),
    ("step_ms_ci_high", pa.float64()), ("step_ms_batch", pa.float64()), ("gflops_per_step", pa.float64()),
    ("latency_per_step_ms", pa.float64()), ("latency_per_image_ms", pa.float64()),
    ("peak_memory_mib", pa.float64()), ("fid", pa.float64()), ("fid_ci_low", pa.float64()), ("fid_ci_high", pa.float64()),
    ("kid", pa.float64()), ("fid_x_mparams", pa.float64()), ("fid_x_seconds", pa.float64()), ("on_frontier", pa.bool_()),
    ("accuracy", pa.float64()), ("accuracy_ci_low", pa.float64()), ("accuracy_ci_high", pa.float64()),
])


def _spearman(x, y) -> tuple[float, float]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return float("nan"), float("nan")
    x, y = x[keep], y[keep]
    r = spearmanr(x, y)
    rho = float(r.statistic)
    if len(x) > 8:
        return rho, float(r.pvalue)
    rx, ry = rankdata(x), rankdata(y)  # exact two-sided p: every ordering of y's ranks against x's
    null = np.array([np.corrcoef(rx, perm)[0, 1] for perm in itertools.permutations(ry)])
    return rho, float(np.mean(np.abs(null) >= abs(rho) - 1e-12))


def pareto_front(cost: np.ndarray, error: np.ndarray) -> np.ndarray:
    """True where no other point is at most as costly and at most as bad, and better in one (lower is better)."""
    cost, error = np.asarray(cost, float), np.asarray(error, float)
    front = np.isfinite(cost) & np.isfinite(error)
    for i in np.flatnonzero(front):
        dominated = (cost <= cost[i]) & (error <= error[i]) & ((cost < cost[i]) | (error < error[i]))
        front[i] = not dominated.any()
    return front


def _errors(timestep: str | Path, factors: dict[str, float]) -> pd.DataFrame:
    """Per model (teacher, then students by width): parameters and noise-prediction errors over every timestep."""
    ts = pd.read_parquet(timestep)
    models = ["teacher", *sorted(factors, key=factors.get)]
    rows = []
    overall = ts[ts["bucket"] == -1]  # every timestep bucket at once, with its CI over images
    for m in models:
        t = overall[overall["model"] == m]
        vs = t[t["target"] == "teacher"]
        rows.append({"model": m, "factor": 1.0 if m == "teacher" else factors[m],
                     "params": int(t["params"].iloc[0]) if len(t) else -1,
                     "mse_teacher": float(vs["mse"].iloc[0]) if len(vs) else 0.0,
                     "mse_teacher_ci_low": float(vs["ci_low"].iloc[0]) if len(vs) else 0.0,
                     "mse_teacher_ci_high": float(vs["ci_high"].iloc[0]) if len(vs) else 0.0,
                     "mse_noise": float(t.loc[t["target"] == "noise", "mse"].iloc[0]) if len(t) else float("nan")})
    return pd.DataFrame(rows)


def _join_costs(out: pd.DataFrame, trajectory: str | Path, efficiency: str | Path | None, latency: str | Path | None,
                distribution: str | Path | None, reference: str) -> pd.DataFrame:
    """Adds to ``out`` (in place) trajectory divergence, pipeline latencies and memory, U-Net step latencies,
    FID and KID and the cost-weighted errors; returns the U-Net latency table."""
    tr = pd.read_parquet(trajectory)
    final = tr[(tr["quantity"] == "latent") & (tr["step"] == tr["step"].max())].set_index("model")["distance"]
    out["trajectory_final"] = [0.0 if m == "teacher" else float(final.get(m, np.nan)) for m in out["model"]]
    eff = pd.read_parquet(efficiency).pivot_table(index="model", columns="metric", values="value") if efficiency else pd.DataFrame()
    for col, metric in (("latency_per_step_ms", "latency_per_step"), ("latency_per_image_ms", "latency_per_image"),
                        ("peak_memory_mib", "peak_memory")):
        out[col] = [float(eff.loc[m, metric]) if m in eff.index and metric in eff.columns else np.nan for m in out["model"]]
    lat = pd.read_parquet(latency) if latency else pd.DataFrame(columns=["model", "batch_size", "step_ms", "ci_low",
                                                                         "ci_high", "gflops"])
    small = lat[lat["batch_size"] == lat["batch_size"].min()].set_index("model") if len(lat) else lat.set_index("model")
    big = lat[lat["batch_size"] == lat["batch_size"].max()].set_index("model") if len(lat) else lat.set_index("model")
    for col, frame, src in (("step_ms", small, "step_ms"), ("step_ms_ci_low", small, "ci_low"),
                            ("step_ms_ci_high", small, "ci_high"), ("step_ms_batch", big, "step_ms"),
                            ("gflops_per_step", small, "gflops")):
        out[col] = [float(frame.loc[m, src]) if m in frame.index else np.nan for m in out["model"]]
    dist = pd.read_parquet(distribution) if distribution else pd.DataFrame(columns=["model", "reference", "split", "metric"])
    dist = dist[(dist["reference"] == reference) & (dist["split"] == "eval")]
    for metric in ("fid", "kid"):
        d = dist[dist["metric"] == metric].set_index("model")
        out[metric] = [float(d.loc[m, "value"]) if m in d.index else np.nan for m in out["model"]]
        if metric == "fid":
            out["fid_ci_low"] = [float(d.loc[m, "ci_low"]) if m in d.index else np.nan for m in out["model"]]
            out["fid_ci_high"] = [float(d.loc[m, "ci_high"]) if m in d.index else np.nan for m in out["model"]]
    # cost-weighted error (lower is better): FID times millions of parameters, FID times seconds per image
    out["fid_x_mparams"] = out["fid"] * out["params"] / 1e6
    out["fid_x_seconds"] = out["fid"] * out["latency_per_image_ms"] / 1e3
    out["on_frontier"] = pareto_front(out["latency_per_image_ms"].to_numpy(), out["fid"].to_numpy())
    return lat


def _accuracy(out: pd.DataFrame, attributes: list[str | Path], n_boot: int, seed: int) -> None:
    """Adds the attribute accuracy of each model (the shapes world's classifier reading its eval
    images): per image the fraction of attributes drawn right, then the mean over images and its
    bootstrap 95% CI over images. NaN where a model has no attribute table."""
    long = per_image_table(attributes=attributes)
    long = long[(long["metric"] == "accuracy_all") & (long["split"] == "eval")]
    per_image = {str(m): g["value"].to_numpy(float) for m, g in long.groupby("model")}
    rng = np.random.default_rng(seed)
    stats = {m: (float(x.mean()), *bootstrap_ci(x, rng, n_boot)) for m, x in sorted(per_image.items())}
    for i, col in enumerate(("accuracy", "accuracy_ci_low", "accuracy_ci_high")):
        out[col] = [stats[m][i] if m in stats else np.nan for m in out["model"]]


def size_study_summary(timestep: str | Path, trajectory: str | Path, efficiency: str | Path | None, distribution: str | Path | None,
                 factors: dict[str, float], out_path: str | Path | None = None, reference: str = "real",
                 latency: str | Path | None = None, attributes: list[str | Path] = (), init: str | None = None,
                 n_boot: int = 5000, seed: int = 0) -> pd.DataFrame:
    """Join the size study's tables (FID/KID against ``reference`` images, eval split). ``step_ms``:
    the interleaved U-Net step latency at the smallest batch (kd_core.metrics.latency; CI over
    rounds), ``step_ms_batch`` at the largest; the efficiency table's whole-pipeline latencies and
    memory beside them; attribute accuracy [CI] from the per-model ``attributes`` tables (shapes
    world); ``init`` (how the students were initialised) goes to the metadata."""
    out = _errors(timestep, factors)
    lat = _join_costs(out, trajectory, efficiency, latency, distribution, reference)
    _accuracy(out, list(attributes), n_boot, seed)
    students = out[out["model"] != "teacher"]
    rho_acc = _spearman(students["factor"], students["accuracy"])
    rho_err = _spearman(students["factor"], students["mse_teacher"])
    timed = "step_ms" if students["step_ms"].notna().any() else "latency_per_image_ms"
    rho_lat = _spearman(students["factor"], students[timed])
    rho_big = _spearman(students["factor"], students["step_ms_batch"])
    meta = {"spearman_width_vs_mse_teacher": rho_err[0], "spearman_width_vs_mse_teacher_p": rho_err[1],
            "spearman_width_vs_latency": rho_lat[0], "spearman_width_vs_latency_p": rho_lat[1],
            "spearman_latency_column": timed, "latency_batches": sorted(int(b) for b in lat["batch_size"].unique()),
            "spearman_width_vs_latency_batch": rho_big[0], "spearman_width_vs_latency_batch_p": rho_big[1],
            "spearman_width_vs_accuracy": rho_acc[0], "spearman_width_vs_accuracy_p": rho_acc[1],
            "spearman_p": "exact permutation p with up to 8 students, else the t approximation",
            "init": init,
            "fid_reference": reference,
            "mse_teacher": "per image the mean over timestep buckets, then the mean and bootstrap 95% CI over images"}
    out = out[SIZE_SCHEMA.names]
    if out_path is not None:
        write_parquet(out, out_path, SIZE_SCHEMA, "metrics/size_study", meta)
    out.attrs.update(meta)
    return out
