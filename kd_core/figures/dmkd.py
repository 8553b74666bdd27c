"""Figures of the DM-KD study: real-test accuracy per run with 95% CIs, accuracy against guidance
and synthetic-set size, and per-epoch training loss and accuracy curves."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib import ticker

from kd_core.errors import KDError
from kd_core.figures.style import Figure, plt, save_figure, style

OBJECTIVE = {"kd": ("KD (teacher soft labels)", "#1f77b4"), "ce": ("hard labels", "#d62728")}


def _errorbar(ax, x, df: pd.DataFrame, colour: str, label: str) -> None:
    ax.errorbar(x, df["accuracy"], yerr=[df["accuracy"] - df["ci_low"], df["ci_high"] - df["accuracy"]], color=colour,
                marker="o", ms=4, capsize=3, lw=1.2, label=label)


def accuracy_figure(table: pd.DataFrame | str | os.PathLike, out_png: str | os.PathLike) -> Figure:
    """Panels: every run's real-test accuracy (bars: mean over seeds, 95% CI; dots: each seed);
    against guidance; against set size."""
    df = table if isinstance(table, pd.DataFrame) else pd.read_parquet(table)
    if df.empty:
        raise KDError("no DM-KD runs to plot")
    full = df[~df["run"].str.contains("_f[0-9]+_", regex=True)]
    synthetic = full[full["data"] == "synthetic"]
    main_guidance = synthetic["guidance"].iloc[0] if not synthetic.empty else np.nan
    sized = df[(df["data"] == "synthetic") & ((df["guidance"] == main_guidance) | df["guidance"].isna())]
    panels = ["bars"] + (["guidance"] if synthetic["guidance"].nunique() > 1 else []) + (
        ["size"] if sized["n_train"].nunique() > 1 else [])
    with style():
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.5, 3.2), squeeze=False)
        axes = list(axes.flat)
        ax = axes[0]
        colours = ["#222222" if r == "teacher" else "#9e9e9e" if d == "real" else OBJECTIVE[o][1]
                   for r, d, o in zip(full["run"], full["data"], full["objective"], strict=True)]
        y = np.arange(len(full))
        ax.barh(y, full["accuracy"], color=colours, alpha=0.85,
                xerr=[full["accuracy"] - full["ci_low"], full["ci_high"] - full["accuracy"]], capsize=3)
        for yi, seeds in zip(y, full["seed_accuracies"], strict=True):
            if len(seeds) > 1:  # one dot per training seed
                ax.scatter(seeds, np.full(len(seeds), yi), s=9, color="black", zorder=3, lw=0)
        ax.set_yticks(y, full["run"])
        ax.invert_yaxis()
        lo = max(0.0, float(full["ci_low"].min()) - 0.05)
        ax.set_xlim(lo, 1.0)
        ax.set_xlabel("accuracy on the real test split")
        ax.set_title("Real-test accuracy (95% CI" + (", dots: seeds)" if full["n_seeds"].max() > 1 else ")"))
        for name in panels[1:]:
            ax = axes[panels.index(name)]
            for obj, (label, colour) in OBJECTIVE.items():
                if name == "guidance":
                    g = synthetic[synthetic["objective"] == obj].sort_values("guidance")
                    _errorbar(ax, g["guidance"], g, colour, label)
                    ax.set_xlabel("guidance scale of the synthetic images")
                else:
                    g = sized[sized["objective"] == obj].sort_values("n_train")
                    _errorbar(ax, g["n_train"], g, colour, label)
                    ax.set_xscale("log")
                    ax.set_xticks(sorted(sized["n_train"].unique()))
                    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
                    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
                    ax.set_xlabel("synthetic training images")
            real = df[df["run"] == "real_ce"]
            if not real.empty:
                ax.axhline(real["accuracy"].iloc[0], color="#9e9e9e", ls="--", lw=1, label="student on real images")
            ax.set_ylabel("real-test accuracy")
            ax.set_title("Accuracy against " + ("guidance" if name == "guidance" else "synthetic-set size"))
            ax.legend(loc="lower right")
        return save_figure(fig, out_png)


def curves_figure(runs: dict[str, str | os.PathLike], out_png: str | os.PathLike) -> Figure:
    """Per run: training loss (epoch means) and validation / real-test accuracy per epoch."""
    if not runs:
        raise KDError("no DM-KD runs to plot")
    with style():
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.4))
        for i, (run, path) in enumerate(runs.items()):
            df = pd.read_parquet(path)
            colour = plt.get_cmap("tab20")(i % 20)
            train = df[(df["split"] == "train") & (df["term"] == "loss")].groupby("epoch")["value"].mean()
            ax_loss.plot(train.index + 1, train.values, color=colour, lw=1.2, label=run)
            for split, ls in (("val", "--"), ("test", "-")):
                acc = df[(df["split"] == split) & (df["term"] == "accuracy")].sort_values("step")
                ax_acc.plot(acc["epoch"] + 1, acc["value"], color=colour, ls=ls, lw=1.2,
                            label=f"{run} ({'real test' if split == 'test' else 'validation'})")
        ax_loss.set(xlabel="epoch", ylabel="training loss (epoch mean)", yscale="log", title="Training loss")
        ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy per epoch (dashed: validation)")
        ax_loss.legend(fontsize=6, ncol=2)
        handles, labels = ax_acc.get_legend_handles_labels()
        keep = [k for k, lab in enumerate(labels) if lab.endswith("(real test)")]
        ax_acc.legend([handles[k] for k in keep], [labels[k].removesuffix(" (real test)") for k in keep], fontsize=6, ncol=2)
        return save_figure(fig, out_png)
