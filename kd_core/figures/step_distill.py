"""Figures of the step-distillation study: quality against sampling steps (the student and its
teacher at equal step counts, 95% CI bands, the full-step teacher as a line), and quality against
latency per image."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from kd_core.errors import KDError
from kd_core.figures.plots import _table
from kd_core.figures.style import Figure, plt, save_figure, style
from kd_core.studies.base import QUALITY, quality

LABELS = {"accuracy_all": "attribute accuracy", "clip_score": "CLIP score", "ssim": "SSIM to the full-step teacher",
          "psnr": "PSNR to the full-step teacher (dB)", "fid": "FID to real images", "latency_ms": "latency per image (ms)"}
COLOURS = {"student": "#d62728", "teacher": "#222222"}


def quality_metric(table: pd.DataFrame) -> str:
    """The study's quality measure: attribute accuracy in the shapes world, else the CLIP score, else SSIM."""
    metric = quality(table)
    if metric is not None:
        return metric
    raise KDError(f"the step-distillation table has none of the quality measures {QUALITY}")


def _curves(table: pd.DataFrame, metric: str, full_steps: int):
    rows = table[table["metric"] == metric]
    student = rows[rows["role"] == "student"].sort_values("steps")
    teacher = rows[(rows["role"] == "teacher") & (rows["steps"] != full_steps)].sort_values("steps")
    full = rows[(rows["role"] == "teacher") & (rows["steps"] == full_steps)]
    return student, teacher, full


def steps_plot(table: pd.DataFrame | str | os.PathLike, out_png: str | os.PathLike, full_steps: int | None = None) -> Figure:
    """Quality (and, where measured, FID) against sampling steps: student and teacher, 95% CI bands."""
    df = _table(table)
    full_steps = full_steps or int(df.attrs.get("full_steps") or df[df["role"] == "teacher"]["steps"].max())
    metrics = [quality_metric(df)] + (["fid"] if "fid" in set(df["metric"]) else [])
    with style():
        fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.4), squeeze=False)
        for ax, metric in zip(axes[0], metrics, strict=True):
            student, teacher, full = _curves(df, metric, full_steps)
            for role, part in (("student", student), ("teacher", teacher)):
                if part.empty:
                    continue
                label = f"{part['model'].iloc[0].rsplit('_s', 1)[0]} ({'LCMScheduler' if role == 'student' else 'its own scheduler'})"
                ax.plot(part["steps"], part["mean"], marker="o", color=COLOURS[role], label=label)
                ax.fill_between(part["steps"], part["ci_low"], part["ci_high"], color=COLOURS[role], alpha=0.2, lw=0)
            if len(full):
                r = full.iloc[0]
                ax.axhline(r["mean"], color=COLOURS["teacher"], ls="--", lw=1, label=f"teacher, {full_steps} steps")
                ax.axhspan(r["ci_low"], r["ci_high"], color=COLOURS["teacher"], alpha=0.08, lw=0)
            steps = sorted(set(student["steps"]) | set(teacher["steps"]))
            ax.set_xscale("log", base=2)
            ax.set_xticks(steps, [str(s) for s in steps])
            ax.set(xlabel="sampling steps", ylabel=LABELS.get(metric, metric) + " (95% CI)",
                   title=f"{LABELS.get(metric, metric).split(' (')[0].capitalize()} against steps")
            ax.legend()
        fig.tight_layout()
        return save_figure(fig, out_png)


def latency_plot(table: pd.DataFrame | str | os.PathLike, out_png: str | os.PathLike) -> Figure:
    """Quality against latency per image: every (model, steps) pair with both CIs, the step count beside it."""
    df = _table(table)
    metric = quality_metric(df)
    q = df[df["metric"] == metric].set_index("model")
    lat = df[df["metric"] == "latency_ms"].set_index("model")
    both = q.index.intersection(lat.index)
    if both.empty:
        raise KDError("the step-distillation table has no model with both quality and latency")
    with style():
        fig, ax = plt.subplots(figsize=(5.6, 3.6))
        for role in ("teacher", "student"):
            names = [m for m in both if q.loc[m, "role"] == role]
            if not names:
                continue
            x, y = lat.loc[names], q.loc[names]
            order = np.argsort(x["mean"].to_numpy())
            x, y = x.iloc[order], y.iloc[order]
            ax.errorbar(x["mean"], y["mean"], xerr=[x["mean"] - x["ci_low"], x["ci_high"] - x["mean"]],
                        yerr=[y["mean"] - y["ci_low"], y["ci_high"] - y["mean"]], marker="o", capsize=2,
                        color=COLOURS[role], label=role)
            for m in names:
                ax.annotate(f"{int(q.loc[m, 'steps'])}", (lat.loc[m, "mean"], q.loc[m, "mean"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set(xlabel=LABELS["latency_ms"] + " (95% CI, log)", ylabel=LABELS.get(metric, metric),
               title="Quality against latency (labels: steps)")
        ax.legend()
        fig.tight_layout()
        return save_figure(fig, out_png)
