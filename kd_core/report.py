"""Paper materials: ``paper/summary.md`` with the headline result (which student improved, by how
much, how sure), the tables (also as CSV, Markdown and LaTeX files), the key figures, the
evaluation protocol and the provenance of every number.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from kd_core.figures.style import model_order
from kd_core.io import atomic_dir, read_metadata, write_text
from kd_core.provenance import versions

#: Tables of the paper: metric table name -> title; FORMATTERS turn a metric table into the table as printed.
TITLES = {
    "summary": "Per-image metrics, eval prompts: mean [95% CI]",
    "improvement": "Each student against the base student (paired, eval prompts)",
    "distribution": "FID and KID against reference sets [95% CI]",
    "attribute_accuracy": "Attribute accuracy read by the shapes-world classifier [95% CI]",
    "efficiency": "Efficiency (median of repeats)",
    "size_study": "Model size: width students against the teacher (MSE to the teacher over all timestep buckets [95% CI over images])",
    "timestep_mse": "Model size: noise-prediction MSE to the teacher per timestep bucket (rows: models by width)",
    "dmkd": "DM-KD: classifiers on the real test split, mean over training seeds [95% CI over seeds and test images]; paired difference to the hard-label student",
}


def _ci(mean: float, lo: float, hi: float, digits: int = 3) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"


def format_summary(df: pd.DataFrame, split: str = "eval") -> pd.DataFrame:
    df = df[df["split"] == split]
    cells = df.assign(cell=[_ci(m, lo, hi) for m, lo, hi in zip(df["mean"], df["ci_low"], df["ci_high"], strict=True)])
    out = cells.pivot(index="metric", columns="model", values="cell").fillna("")
    return out[model_order(out.columns)].reset_index()


def format_improvement(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "model": df["model"], "metric": df["metric"], "better": np.where(df["higher_is_better"], "higher", "lower"),
        "baseline": df["baseline_mean"].map("{:.4g}".format), "student": df["model_mean"].map("{:.4g}".format),
        "difference [95% CI]": [_ci(d, lo, hi) for d, lo, hi in zip(df["difference"], df["ci_low"], df["ci_high"], strict=True)],
        "relative": df["relative_change"].map("{:+.1%}".format), "p (Wilcoxon)": df["p_value"].map("{:.2g}".format),
        "improved": np.where(df["improved"], "yes", "no"), "n": df["n"],
    })


def format_distribution(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "model": df["model"], "reference": df["reference"], "metric": df["metric"].str.upper(),
        "value [95% CI]": [_ci(v, lo, hi, 4) for v, lo, hi in zip(df["value"], df["ci_low"], df["ci_high"], strict=True)],
        "n model": df["n_model"], "n reference": df["n_reference"], "features": df["extractor"] + " " + df["feature_dim"].astype(str) + "-d",
    })


def format_attributes(df: pd.DataFrame) -> pd.DataFrame:
    df = df[df["split"] == "eval"]
    cells = df.assign(cell=[_ci(a, lo, hi) for a, lo, hi in zip(df["accuracy"], df["ci_low"], df["ci_high"], strict=True)])
    return cells.pivot(index="attribute", columns="model", values="cell").reset_index()


def format_efficiency(df: pd.DataFrame) -> pd.DataFrame:
    df = df.assign(metric=df["metric"] + " (" + df["unit"] + ")")
    out = df.pivot(index="metric", columns="model", values="value").map(lambda v: f"{v:.4g}")
    return out.reset_index()


def format_dmkd(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "run": df["run"], "data": df["data"], "objective": df["objective"],
        "guidance": df["guidance"].map(lambda g: "" if not np.isfinite(g) else f"{g:g}"), "train images": df["n_train"],
        "seeds": df["n_seeds"],
        "accuracy [95% CI]": [_ci(a, lo, hi) for a, lo, hi in zip(df["accuracy"], df["ci_low"], df["ci_high"], strict=True)],
        "seed sd": df["seed_sd"].map(lambda v: "" if not np.isfinite(v) else f"{v:.3f}"),
        "of real-data student": df["relative_to_real"].map("{:.1%}".format),
        "vs hard labels [95% CI]": [_ci(d, lo, hi) if b else "" for d, lo, hi, b in
                                    zip(df["difference"], df["diff_ci_low"], df["diff_ci_high"], df["baseline"], strict=True)],
        "p": [f"{p:.2g}" if b else "" for p, b in zip(df["p_value"], df["baseline"], strict=True)],
    })


def dmkd_headline(df: pd.DataFrame) -> list[str]:
    """One sentence per KD student on a full synthetic set: its share of the real-data student, and
    the paired difference to the hard-label student on the same images."""
    lines = []
    kd = df[(df["objective"] == "kd") & (df["baseline"] != "") & ~df["run"].str.contains("_f[0-9]+_", regex=True)]
    for r in kd.itertuples():
        seeds = f"mean of {r.n_seeds} seeds; CI over seeds and test images" if r.n_seeds > 1 else "one seed; CI over test images"
        test = "bootstrap" if r.n_seeds > 1 else "McNemar"
        lines.append(f"**{r.run}** (DM-KD, {r.n_train} synthetic images): real-test accuracy {_ci(r.accuracy, r.ci_low, r.ci_high)} "
                     f"({seeds}), {r.relative_to_real:.1%} of the student trained on real images; "
                     f"against hard labels on the same images ({r.baseline}) {r.difference:+.3g} "
                     f"[{r.diff_ci_low:+.3g}, {r.diff_ci_high:+.3g}] ({test} p = {r.p_value:.2g}).")
    return lines


def format_size_study(df: pd.DataFrame) -> pd.DataFrame:
    def num(v, fmt="{:.4g}"):
        return fmt.format(v) if np.isfinite(v) else "n/a"

    return pd.DataFrame({
        "model": df["model"], "width": df["factor"].map("x{:g}".format), "parameters": df["params"].map("{:,}".format),
        "MSE to teacher": [_ci(m, lo, hi) if name != "teacher" else "0" for name, m, lo, hi in
                           zip(df["model"], df["mse_teacher"], df["mse_teacher_ci_low"], df["mse_teacher_ci_high"], strict=True)],
        "task MSE": df["mse_noise"].map(num), "final latent drift": df["trajectory_final"].map(num),
        "U-Net ms / step [95% CI]": [_ci(v, lo, hi, 4) for v, lo, hi in
                                     zip(df["step_ms"], df["step_ms_ci_low"], df["step_ms_ci_high"], strict=True)],
        "GFLOPs / step": df["gflops_per_step"].map(num), "ms / image": df["latency_per_image_ms"].map(num),
        "peak MiB": df["peak_memory_mib"].map(num),
        "FID [95% CI]": [_ci(v, lo, hi, 4) for v, lo, hi in zip(df["fid"], df["fid_ci_low"], df["fid_ci_high"], strict=True)],
        **({"attribute accuracy [95% CI]": [_ci(v, lo, hi) for v, lo, hi in
                                            zip(df["accuracy"], df["accuracy_ci_low"], df["accuracy_ci_high"], strict=True)]}
           if "accuracy" in df and df["accuracy"].notna().any() else {}),
        "frontier": np.where(df["on_frontier"], "yes", ""),
    })


def format_timestep_mse(df: pd.DataFrame) -> pd.DataFrame:
    vs = df[df["target"] == "teacher"]
    order = vs.drop_duplicates("model").sort_values("factor")["model"]
    out = vs.pivot(index="model", columns="bucket", values="mse").loc[list(order)]
    edges = vs.drop_duplicates("bucket").set_index("bucket").sort_index()
    out.columns = [f"t {lo}-{hi}" if b >= 0 else "all t" for b, lo, hi in
                   zip(edges.index, edges["t_low"], edges["t_high"], strict=True)]
    out = out[[*out.columns[1:], out.columns[0]]] if len(out.columns) > 1 and out.columns[0] == "all t" else out
    return out.map("{:.4g}".format).reset_index()


def size_headline(df: pd.DataFrame, meta: dict) -> list[str]:
    """Width against error and against latency: Spearman rank correlations over the students."""
    s = df[df["model"] != "teacher"].sort_values("factor")
    if s.empty:
        return []
    rho_e, p_e = meta.get("spearman_width_vs_mse_teacher", np.nan), meta.get("spearman_width_vs_mse_teacher_p", np.nan)
    rho_l, p_l = meta.get("spearman_width_vs_latency", np.nan), meta.get("spearman_width_vs_latency_p", np.nan)
    errors = ", ".join(f"x{r.factor:g} {r.mse_teacher:.3g}" for r in s.itertuples())
    col = meta.get("spearman_latency_column", "latency_per_image_ms")
    what = "U-Net step latency (interleaved timing)" if col == "step_ms" else "latency per image"
    latency = ", ".join(f"x{r.factor:g} {getattr(r, col):.4g} ms" for r in s.itertuples())
    init = {"teacher": ", each started from the teacher's most important channels",
            "random": ", each started from random weights"}.get(meta.get("init"), "")
    accuracy = ""
    if "accuracy" in s and s["accuracy"].notna().any():
        values = ", ".join(f"x{r.factor:g} {_ci(r.accuracy, r.accuracy_ci_low, r.accuracy_ci_high)}" for r in s.itertuples())
        teacher = df[df["model"] == "teacher"]
        of = f" (teacher {teacher['accuracy'].iloc[0]:.3g})" if len(teacher) and np.isfinite(teacher["accuracy"].iloc[0]) else ""
        accuracy = (f"attribute accuracy {values}{of} (Spearman width vs accuracy "
                    f"{meta.get('spearman_width_vs_accuracy', np.nan):+.2f}, p = {meta.get('spearman_width_vs_accuracy_p', np.nan):.2g}); ")
    return [f"**Model size** ({len(s)} width students{init}): {accuracy}noise-prediction MSE to the teacher {errors} "
            f"(Spearman rank correlation of width with error {rho_e:+.2f}, p = {p_e:.2g}); {what} {latency} "
            f"(Spearman width vs latency {rho_l:+.2f}, p = {p_l:.2g}; {meta.get('spearman_p', 'p from scipy')})"
            + _batch_latency(s, meta) + "."]


def _batch_latency(s: pd.DataFrame, meta: dict) -> str:
    """The step latency at the study's largest batch, where the device is busier than at one image."""
    batches = meta.get("latency_batches") or []
    if len(batches) < 2 or "step_ms_batch" not in s or s["step_ms_batch"].isna().all():
        return ""
    latency = ", ".join(f"x{r.factor:g} {r.step_ms_batch:.4g} ms" for r in s.itertuples())
    return (f"; at {max(batches)} images per step {latency} (Spearman {meta.get('spearman_width_vs_latency_batch', np.nan):+.2f}, "
            f"p = {meta.get('spearman_width_vs_latency_batch_p', np.nan):.2g})")


FORMATTERS = {"dmkd": format_dmkd, "size_study": format_size_study, "timestep_mse": format_timestep_mse, "summary": format_summary, "improvement": format_improvement, "distribution": format_distribution,
              "attribute_accuracy": format_attributes, "efficiency": format_efficiency}


def headline(improvement: pd.DataFrame) -> list[str]:
    """One sentence per student: the metrics whose paired CI excludes zero, on either side."""
    lines = []
    for model, g in improvement.groupby("model", sort=False):
        better, worse = g[g["improved"]], g[~g["improved"] & np.where(g["higher_is_better"], g["ci_high"] < 0, g["ci_low"] > 0)]
        parts = [f"**{model}** against **{g['baseline'].iloc[0]}** ({int(g['n'].max())} paired images): "
                 f"better on {len(better)} of {len(g)} metrics (95% CI of the paired difference excludes 0)"]
        if len(better):
            parts.append("; " + "; ".join(
                f"{r.metric} {r.baseline_mean:.3g} -> {r.model_mean:.3g} ({r.difference:+.3g} [{r.ci_low:+.3g}, {r.ci_high:+.3g}], "
                f"p = {r.p_value:.2g})" for r in better.itertuples()))
        parts.append(f". Worse on {len(worse)}" + (": " + ", ".join(worse["metric"]) if len(worse) else "") + ".")
        lines.append("".join(parts))
    return lines


def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False)


def _tex(df: pd.DataFrame, caption: str, label: str) -> str:
    return df.to_latex(index=False, caption=caption, label=f"tab:{label}", escape=True)


def write_paper(tables: dict[str, str | os.PathLike], figures: dict[str, str | os.PathLike], config: dict,
                out_md: str | os.PathLike, tables_dir: str | os.PathLike) -> str:
    """Write ``summary.md`` and every table as CSV, Markdown and LaTeX in ``tables_dir``."""
    out_md, tables_dir = Path(out_md), Path(tables_dir)
    loaded = {name: pd.read_parquet(path) for name, path in tables.items() if name in FORMATTERS}
    printed = {name: FORMATTERS[name](df) for name, df in loaded.items()}
    with atomic_dir(tables_dir) as tmp:
        for name, df in printed.items():
            loaded[name].to_csv(tmp / f"{name}.csv", index=False)
            (tmp / f"{name}.md").write_text(_md(df) + "\n")
            (tmp / f"{name}.tex").write_text(_tex(df, TITLES[name], name))

    cfg_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    rel = os.path.relpath
    lines = [f"# Knowledge distillation study: `{config.get('experiment')}`", "",
             "Every number below is read from the Parquet tables in `metrics/`; every figure is in PNG and PDF.", ""]
    heads = headline(loaded["improvement"]) if "improvement" in loaded and not loaded["improvement"].empty else []
    heads += size_headline(loaded["size_study"], read_metadata(tables["size_study"])) if "size_study" in loaded else []
    heads += dmkd_headline(loaded["dmkd"]) if "dmkd" in loaded else []
    if heads:
        lines += ["## Headline", ""] + [f"- {s}" for s in heads] + [""]
    lines += ["## Tables", ""]
    for name, df in printed.items():
        lines += [f"### {TITLES[name]}", "", _md(df), "",
                  f"Files: `{rel(tables_dir / name, out_md.parent)}.{{csv,md,tex}}`, source `metrics/{name}.parquet`.", ""]
    lines += ["## Figures", ""]
    for title, path in figures.items():
        lines += [f"### {title}", "", f"![{title}]({rel(path, out_md.parent)})", ""]
    lines += ["## Evaluation protocol", ""]
    for name, path in tables.items():
        meta = read_metadata(path)
        meta.pop("parts", None)
        keep = {k: v for k, v in meta.items() if k not in ("table",)}
        if keep:
            lines.append(f"- `{name}`: " + json.dumps(keep, default=str, sort_keys=True))
    lines += ["", "## Provenance", "", f"- config hash: `{cfg_hash}`",
              "- models: " + ", ".join(f"{m} = `{v['source']}`" for m, v in config.get("models", {}).items()),
              "- packages: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
              "- seed: " + str(config.get("seed")), "",
              "The full configuration, validated with its defaults:", "", "```json",
              json.dumps(config, indent=1, sort_keys=True, default=str), "```", ""]
    text = "\n".join(lines)
    write_text(out_md, text)
    return text
