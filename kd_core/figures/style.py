"""One figure style for every plot: fonts, model colours, and saving as PNG + PDF atomically."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from kd_core.io import atomic_path  # noqa: E402

RC = {
    "figure.dpi": 100, "savefig.dpi": 150, "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
    "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "savefig.bbox": "tight",
    "pdf.fonttype": 42, "svg.hashsalt": "kd_core",
}
FIXED = {"teacher": "#222222", "base_student": "#9e9e9e"}
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def model_colours(models: list[str]) -> dict[str, str]:
    """Teacher dark, base student grey, the other students in a fixed order of distinct colours."""
    others = [m for m in models if m not in FIXED]
    return {**{m: FIXED[m] for m in models if m in FIXED}, **{m: PALETTE[i % len(PALETTE)] for i, m in enumerate(others)}}


def model_order(models) -> list[str]:
    """Teacher first, then the base student, then the others in their given order."""
    models = list(dict.fromkeys(models))
    return [m for m in ("teacher", "base_student") if m in models] + [m for m in models if m not in FIXED]


def save_figure(fig: Figure, png: str | os.PathLike, pdf: str | os.PathLike | None = None) -> Figure:
    """Save ``fig`` as PNG and PDF (PDF beside the PNG unless given), each written atomically; returns
    the closed figure, whose axes and artists still tell what was drawn."""
    pdf = pdf or Path(png).with_suffix(".pdf")
    for path, fmt, meta in ((png, "png", {"Software": None}), (pdf, "pdf", {"CreationDate": None, "Producer": None})):
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, metadata=meta)
    plt.close(fig)
    return fig


def style():
    """Context manager applying the figure style."""
    return plt.rc_context(RC)
