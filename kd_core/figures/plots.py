"""Research figures from the metric tables: per-metric bars with 95% CIs, a radar chart of
normalised metrics, per-metric distributions, FID/KID, attribute accuracy, training-loss curves
and efficiency (quality against latency and parameters). Each is written as PNG and PDF.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from kd_core.errors import KDError
from kd_core.figures.style import Figure, model_colours, model_order, plt, save_figure, style
from kd_core.metrics.directions import HIGHER_IS_BETTER

LABELS = {
    "mse": "MSE", "psnr": "PSNR (dB)", "ssim": "SSIM", "hist_correlation": "hist. correlation",
    "hist_bhattacharyya": "hist. 1 - Bhattacharyya", "phash_similarity": "pHash similarity",
    "sharpness_ratio": "sharpness ratio", "sharpness_error": "|log2 sharpness ratio|",
    "colour_similarity": "colour similarity", "clip_score": "CLIP score", "accuracy_all": "attribute accuracy",
}


def _table(x: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    return x if isinstance(x, pd.DataFrame) else pd.read_parquet(x)


def _label(metric: str) -> str:
    if metric.startswith("accuracy_") and metric not in LABELS:
        return f"{metric.removeprefix('accuracy_')} accuracy"
    return LABELS.get(metric, metric)


def _direction(metric: str, table_value=None) -> bool | None:
    if table_value is not None and not (isinstance(table_value, float) and math.isnan(table_value)):
        return bool(table_value)
    return HIGHER_IS_BETTER.get(metric, True)


def _grid(n: int, cols: int = 4, size: tuple[float, float] = (2.6, 2.2)):
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def metric_bars(summary: pd.DataFrame | str | os.PathLike, out_png: str | os.PathLike, split: str = "eval") -> Figure:
    """One panel per metric: the mean of each model with its bootstrap 95% CI."""
    summary = _table(summary)
    df = summary[summary["split"] == split]
    metrics = sorted(df["metric"].unique(), key=lambda m: (m.startswith("accuracy_"), m))
    if not metrics:
        raise KDError(f"no metrics for split {split!r} to plot")
    models = model_order(df["model"])
    colours = model_colours(models)
    with style():
        fig, axes = _grid(len(metrics))
        for ax, metric in zip(axes, metrics, strict=True):
            sub = df[df["metric"] == metric].set_index("model")
            names = [m for m in models if m in sub.index]
            mean = sub.loc[names, "mean"].to_numpy()
            err = np.abs(np.vstack([mean - sub.loc[names, "ci_low"], sub.loc[names, "ci_high"] - mean]))
            ax.bar(range(len(names)), mean, yerr=err, color=[colours[m] for m in names], capsize=3)
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
            hib = _direction(metric, sub["higher_is_better"].iloc[0] if "higher_is_better" in sub else None)
            arrow = "" if hib is None else (" (higher better)" if hib else " (lower better)")
            ax.set_title(_label(metric) + arrow)
            ax.grid(axis="x", visible=False)
        fig.suptitle(f"Per-image metrics ({split} prompts): mean and bootstrap 95% CI", y=1.0)
        fig.tight_layout()
        return save_figure(fig, out_png)


def normalised_scores(summary: pd.DataFrame, split: str = "eval") -> pd.DataFrame:
    """Model x metric table of means relative to the best model per metric (best = 1, 0 = floor).

    Higher-is-better metrics are divided by the best mean, lower-is-better ones give best / mean;
    negative values are floored at 0. The axes are the directional metrics that every student has;
    a model (the teacher, reference of the pairwise metrics) lacking any of them is left out.
    """
    df = summary[summary["split"] == split]
    wide = df.pivot_table(index="model", columns="metric", values="mean").replace([np.inf, -np.inf], np.nan)
    students = [m for m in wide.index if m != "teacher"] or list(wide.index)
    metrics = [m for m in wide.columns if HIGHER_IS_BETTER.get(m, True) is not None and wide.loc[students, m].notna().all()]
    wide = wide[metrics].dropna()
    keep = {}
    for metric in metrics:
        col = wide[metric].clip(lower=0)
        if HIGHER_IS_BETTER.get(metric, True):
            keep[metric] = col / col.max() if col.max() > 0 else col * 0
        else:
            keep[metric] = col.min() / col.where(col > 0) if col.min() > 0 else (col == 0).astype(float)
    if len(keep) < 3 or len(wide) < 1:
        raise KDError(f"the radar chart needs >= 3 metrics shared by the models, found {sorted(keep)}")
    return pd.DataFrame(keep).fillna(0).loc[model_order(wide.index)]


def radar(summary: pd.DataFrame | str | os.PathLike, out_png: str | os.PathLike, split: str = "eval") -> Figure:
    """Radar chart of the metrics relative to the best model on each axis (see normalised_scores)."""
    scores = normalised_scores(_table(summary), split)
    metrics = list(scores.columns)
    colours = model_colours(list(scores.index))
    angles = np.linspace(0, 2 * np.pi, len(metrics), endpoint=False).tolist()
    with style():
        fig = plt.figure(figsize=(5.5, 5.5))
        ax = fig.add_subplot(projection="polar")
        for model, row in scores.iterrows():
            vals = row.to_numpy().tolist()
            ax.plot(angles + angles[:1], vals + vals[:1], color=colours[model], label=model, lw=1.5)
            ax.fill(angles + angles[:1], vals + vals[:1], color=colours[model], alpha=0.12)
        ax.set_xticks(angles, [_label(m) for m in metrics])
        ax.set_ylim(0, 1)
        ax.set_yticks([0.25, 0.5, 0.75, 1.0], ["", "", "", ""])
        ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1))
        ax.set_title("Metric means relative to the best model on each axis (= 1)", pad=20)
        return save_figure(fig, out_png)


def distributions(per_image: pd.DataFrame, out_png: str | os.PathLike, split: str = "eval") -> Figure:
    """Box plots of every per-image metric, one panel per metric."""
    df = per_image[(per_image["split"] == split) & np.isfinite(per_image["value"])]
    metrics = sorted(m for m in df["metric"].unique() if not m.startswith("accuracy_"))
    if not metrics:
        raise KDError(f"no per-image metrics for split {split!r} to plot")
    models = model_order(df["model"])
    colours = model_colours(models)
    with style():
        fig, axes = _grid(len(metrics))
        for ax, metric in zip(axes, metrics, strict=True):
            sub = df[df["metric"] == metric]
            names = [m for m in models if m in set(sub["model"])]
            box = ax.boxplot([sub.loc[sub["model"] == m, "value"] for m in names], patch_artist=True, widths=0.6,
                             medianprops={"color": "black"}, flierprops={"markersize": 2})
            for patch, m in zip(box["boxes"], names, strict=True):
                patch.set_facecolor(colours[m])
                patch.set_alpha(0.7)
            ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
            ax.set_title(_label(metric))
        fig.suptitle(f"Distributions over images ({split} prompts)", y=1.0)
        fig.tight_layout()
        return save_figure(fig, out_png)


def distribution_bars(table: pd.DataFrame | str | os.PathLike, out_png: str | os.PathLike) -> Figure:
    """FID and KID per model and reference set, with their bootstrap 95% CIs."""
    table = _table(table)
    if table.empty:
        raise KDError("the distribution table is empty")
    panels = list(table.groupby(["reference", "metric"], sort=True))
    models = model_order(table["model"])
    colours = model_colours(models)
    with style():
        fig, axes = _grid(len(panels), cols=2, size=(3.4, 2.6))
        for ax, ((ref, metric), sub) in zip(axes, panels, strict=True):
            sub = sub.set_index("model")
            names = [m for m in models if m in sub.index]
            v = sub.loc[names, "value"].to_numpy()
            err = np.clip(np.vstack([v - sub.loc[names, "ci_low"], sub.loc[names, "ci_high"] - v]), 0, None)
            ax.bar(range(len(names)), v, yerr=err, color=[colours[m] for m in names], capsize=3)
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
            n = int(sub["n_model"].iloc[0])
            ax.set_title(f"{metric.upper()} vs {ref} (n={n}, lower better)")
        extractor = table["extractor"].iloc[0]
        fig.suptitle(f"Distribution metrics, {extractor} features ({int(table['feature_dim'].iloc[0])}-d)", y=1.0)
        fig.tight_layout()
        return save_figure(fig, out_png)


def attribute_bars(accuracy: pd.DataFrame | str | os.PathLike, out_png: str | os.PathLike, split: str = "eval") -> Figure:
    """Per-attribute accuracy of each model (shapes-world classifier), with bootstrap 95% CIs."""
    accuracy = _table(accuracy)
    df = accuracy[accuracy["split"] == split]
    attrs = sorted(df["attribute"].unique())
    models = model_order(df["model"])
    colours = model_colours(models)
    width = 0.8 / len(models)
    with style():
        fig, ax = plt.subplots(figsize=(1.3 * len(attrs) + 2, 3))
        for i, m in enumerate(models):
            sub = df[df["model"] == m].set_index("attribute").reindex(attrs)
            x = np.arange(len(attrs)) + (i - (len(models) - 1) / 2) * width
            err = np.abs(np.vstack([sub["accuracy"] - sub["ci_low"], sub["ci_high"] - sub["accuracy"]]))
            ax.bar(x, sub["accuracy"], width, yerr=err, color=colours[m], label=m, capsize=2)
        ax.set_xticks(range(len(attrs)), attrs)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("accuracy")
        ax.legend(ncol=len(models), loc="lower center", bbox_to_anchor=(0.5, 1.0))
        ax.set_title(f"Attribute accuracy read by the classifier ({split} prompts)", pad=24)
        return save_figure(fig, out_png)


def loss_curves(runs: dict[str, str | os.PathLike], out_png: str | os.PathLike, smooth: int = 25) -> Figure:
    """Every loss term of every training run: raw values faint, a running mean on top; the
    learning rate (term ``lr``) on a second axis. Panels per run (and per model within a run)."""
    panels = []
    for run, path in runs.items():
        df = pd.read_parquet(path)
        if "model" in df.columns and df["model"].nunique() > 1:
            panels += [(f"{run}: {m}", g) for m, g in df.groupby("model", sort=False)]
        else:
            panels.append((run, df))
    if not panels:
        raise KDError("no training runs to plot")
    with style():
        fig, axes = _grid(len(panels), cols=3, size=(3.6, 2.6))
        for ax, (title, df) in zip(axes, panels, strict=True):
            df = df.reset_index(drop=True)
            split = df["split"] if "split" in df.columns else pd.Series("train", index=df.index)
            lr = df[df["term"] == "lr"]
            for i, ((s, term), g) in enumerate(df[df["term"] != "lr"].groupby([split, "term"], sort=True)):
                g = g.sort_values("step")
                colour = f"C{i}"
                if s == "train" and len(g) > smooth:
                    ax.plot(g["step"], g["value"], color=colour, alpha=0.2, lw=0.6)
                    ax.plot(g["step"], g["value"].rolling(smooth, min_periods=1).mean(), color=colour, lw=1.2,
                            label=f"{s} {term}")
                else:
                    ax.plot(g["step"], g["value"], color=colour, lw=1.2, marker="o" if s != "train" else None,
                            markersize=2, label=f"{s} {term}")
            if (df["value"][df["term"] != "lr"] > 0).all():
                ax.set_yscale("log")
            if not lr.empty:
                ax2 = ax.twinx()
                ax2.plot(lr["step"], lr["value"], color="grey", ls="--", lw=0.8)
                ax2.set_ylabel("lr", color="grey")
                ax2.grid(False)
            ax.set_xlabel("step")
            ax.set_title(title)
            ax.legend(fontsize=6)
        fig.tight_layout()
        return save_figure(fig, out_png)


def efficiency_plot(efficiency: pd.DataFrame | str | os.PathLike, summary: pd.DataFrame | str | os.PathLike, out_png: str | os.PathLike,
                    quality: str | None = None, split: str = "eval") -> Figure:
    """Quality against latency per image and against denoiser parameters, one point per model.

    ``quality``: a metric of the summary table (default ``accuracy_all`` when present, else SSIM
    against the reference); models without it are drawn on the cost axes only (at the top).
    """
    efficiency, summary = _table(efficiency), _table(summary)
    eff = efficiency.pivot_table(index="model", columns="metric", values="value")
    summ = summary[summary["split"] == split]
    quality = quality or ("accuracy_all" if (summ["metric"] == "accuracy_all").any() else "ssim")
    q = summ[summ["metric"] == quality].set_index("model")
    models = model_order(eff.index)
    colours = model_colours(models)
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        for ax, cost, xlabel in ((axes[0], "latency_per_image", "latency per image (ms)"),
                                 (axes[1], "params_denoiser", "denoiser parameters (M)")):
            for m in models:
                x = eff.loc[m, cost] / (1e6 if cost.startswith("params") else 1)
                if m in q.index:
                    y, lo, hi = q.loc[m, "mean"], q.loc[m, "ci_low"], q.loc[m, "ci_high"]
                    ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], fmt="o", color=colours[m], capsize=3, label=m)
                else:
                    ax.axvline(x, color=colours[m], ls=":", label=f"{m} (no {quality})")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(_label(quality))
        axes[1].legend(loc="best")
        device = efficiency["device"].iloc[0]
        fig.suptitle(f"Quality against cost ({device}, {int(efficiency['steps'].iloc[0])} steps, "
                     f"{int(efficiency['resolution'].iloc[0])} px)", y=1.02)
        fig.tight_layout()
        return save_figure(fig, out_png)


def metric_figures(summary: str | os.PathLike, per_image: pd.DataFrame, bars_png: str | os.PathLike,
                   radar_png: str | os.PathLike, distributions_png: str | os.PathLike,
                   split: str = "eval") -> tuple[Figure, Figure, Figure]:
    """The three views of the per-image metrics: bars with CIs, radar, distributions."""
    summary = _table(summary)
    return (metric_bars(summary, bars_png, split), radar(summary, radar_png, split),
            distributions(per_image, distributions_png, split))
