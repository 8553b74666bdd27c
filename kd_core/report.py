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
from kd_core.studies import STUDIES
from kd_core.studies.base import PaperTable, format_ci


def format_summary(df: pd.DataFrame, split: str = "eval") -> pd.DataFrame:
    df = df[df["split"] == split]
    cells = df.assign(cell=[format_ci(m, lo, hi) for m, lo, hi in zip(df["mean"], df["ci_low"], df["ci_high"], strict=True)])
    out = cells.pivot(index="metric", columns="model", values="cell").fillna("")
    return out[model_order(out.columns)].reset_index()


def format_improvement(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "model": df["model"], "metric": df["metric"], "better": np.where(df["higher_is_better"], "higher", "lower"),
        "baseline": df["baseline_mean"].map("{:.4g}".format), "student": df["model_mean"].map("{:.4g}".format),
        "difference [95% CI]": [format_ci(d, lo, hi) for d, lo, hi in zip(df["difference"], df["ci_low"], df["ci_high"], strict=True)],
        "relative": df["relative_change"].map("{:+.1%}".format), "p (Wilcoxon)": df["p_value"].map("{:.2g}".format),
        "improved": np.where(df["improved"], "yes", "no"), "n": df["n"],
    })


def format_distribution(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "model": df["model"], "reference": df["reference"], "metric": df["metric"].str.upper(),
        "value [95% CI]": [format_ci(v, lo, hi, 4) for v, lo, hi in zip(df["value"], df["ci_low"], df["ci_high"], strict=True)],
        "n model": df["n_model"], "n reference": df["n_reference"], "features": df["extractor"] + " " + df["feature_dim"].astype(str) + "-d",
    })


def format_attributes(df: pd.DataFrame) -> pd.DataFrame:
    df = df[df["split"] == "eval"]
    cells = df.assign(cell=[format_ci(a, lo, hi) for a, lo, hi in zip(df["accuracy"], df["ci_low"], df["ci_high"], strict=True)])
    return cells.pivot(index="attribute", columns="model", values="cell").reset_index()


def format_efficiency(df: pd.DataFrame) -> pd.DataFrame:
    df = df.assign(metric=df["metric"] + " (" + df["unit"] + ")")
    out = df.pivot(index="metric", columns="model", values="value").map(lambda v: f"{v:.4g}")
    return out.reset_index()


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


#: Tables of the paper, metric table name -> title, how it is printed, its headline: the workflow's own,
#: then each study's (kd_core.studies: Study.paper_tables).
TABLES = {
    "summary": PaperTable("Per-image metrics, eval prompts: mean [95% CI]", format_summary),
    "improvement": PaperTable("Each student against the base student (paired, eval prompts)", format_improvement,
                              lambda df, meta: headline(df) if not df.empty else []),
    "distribution": PaperTable("FID and KID against reference sets [95% CI]", format_distribution),
    "attribute_accuracy": PaperTable("Attribute accuracy read by the shapes-world classifier [95% CI]", format_attributes),
    "efficiency": PaperTable("Efficiency (median of repeats)", format_efficiency),
} | {name: table for study in STUDIES.values() for name, table in study.paper_tables.items()}
#: the printed titles, by table name
TITLES = {name: table.title for name, table in TABLES.items()}


def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False)


def _tex(df: pd.DataFrame, caption: str, label: str) -> str:
    return df.to_latex(index=False, caption=caption, label=f"tab:{label}", escape=True)


def write_paper(tables: dict[str, str | os.PathLike], figures: dict[str, str | os.PathLike], config: dict,
                out_md: str | os.PathLike, tables_dir: str | os.PathLike) -> str:
    """Write ``summary.md`` and every table as CSV, Markdown and LaTeX in ``tables_dir``."""
    out_md, tables_dir = Path(out_md), Path(tables_dir)
    loaded = {name: pd.read_parquet(path) for name, path in tables.items() if name in TABLES}
    printed = {name: TABLES[name].format(df) for name, df in loaded.items()}
    with atomic_dir(tables_dir) as tmp:
        for name, df in printed.items():
            loaded[name].to_csv(tmp / f"{name}.csv", index=False)
            (tmp / f"{name}.md").write_text(_md(df) + "\n")
            (tmp / f"{name}.tex").write_text(_tex(df, TITLES[name], name))

    cfg_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    rel = os.path.relpath
    lines = [f"# Knowledge distillation study: `{config.get('experiment')}`", "",
             "Every number below is read from the Parquet tables in `metrics/`; every figure is in PNG and PDF.", ""]
    heads = [line for name, df in loaded.items() if TABLES[name].headline
             for line in TABLES[name].headline(df, read_metadata(tables[name]))]
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
