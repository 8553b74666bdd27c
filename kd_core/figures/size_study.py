"""Figures of the model-size study: the size x timestep error heatmap, trajectory divergence, the
denoising grid (predicted x0 per step and model), cost against size, and quality against size and
cost with the efficiency frontier."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from safetensors import safe_open

from kd_core.errors import KDError
from kd_core.figures.plots import _table
from kd_core.figures.style import Figure, plt, save_figure, style
from kd_core.io import read_metadata


def load_summary(path: str | os.PathLike) -> pd.DataFrame:
    """The size-study summary table with its metadata (rank correlations, latency batches...) in ``attrs``."""
    df = pd.read_parquet(path)
    df.attrs.update({k: v for k, v in read_metadata(path).items() if k != "table"})
    return df


def _by_width(df: pd.DataFrame) -> list[str]:
    students = df[df["model"] != "teacher"].drop_duplicates("model").sort_values("factor")
    return list(students["model"])


def _colours(models: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("viridis")
    return {m: cmap(0.1 + 0.8 * i / max(1, len(models) - 1)) for i, m in enumerate(models)}


def heatmap(timestep: pd.DataFrame | str | os.PathLike, out_png: str | os.PathLike) -> Figure:
    """Left: MSE to the teacher per student (rows, by width) and timestep bucket (columns), numbers in
    the cells. Right: task MSE (to the true noise) per bucket for the teacher and every student."""
    df = _table(timestep)
    df = df[df["bucket"] >= 0]  # the per-bucket rows (bucket -1: all buckets at once)
    students = _by_width(df)
    if not students:
        raise KDError("no width students in the timestep table")
    vs = df[df["target"] == "teacher"].pivot_table(index="model", columns="bucket", values="mse").loc[students]
    edges = df.drop_duplicates("bucket").set_index("bucket")[["t_low", "t_high"]].sort_index()
    labels = [f"{lo}-{hi}" for lo, hi in edges.itertuples(index=False)]
    factor = df.drop_duplicates("model").set_index("model")["factor"]
    with style():
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 0.5 * len(students) + 2.6), gridspec_kw={"width_ratios": [3, 2]})
        im = ax.imshow(np.log10(vs.to_numpy()), aspect="auto", cmap="magma_r")
        for (i, j), v in np.ndenumerate(vs.to_numpy()):
            ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7,
                    color="white" if np.log10(v) > np.log10(vs.to_numpy()).mean() else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(students)), [f"{m} (x{factor[m]:g})" for m in students])
        ax.set_xlabel("timestep bucket")
        ax.set_title("Noise-prediction MSE to the teacher")
        ax.grid(False)
        fig.colorbar(im, ax=ax, label="log10 MSE")
        colours = _colours(students)
        task = df[df["target"] == "noise"]
        for m in ["teacher", *students]:
            t = task[task["model"] == m].sort_values("bucket")
            ax2.plot(t["bucket"], t["mse"], marker="o", ms=3, color="#222222" if m == "teacher" else colours[m],
                     lw=2 if m == "teacher" else 1.2, label=m)
        ax2.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax2.set(yscale="log", xlabel="timestep bucket", ylabel="MSE to the true noise", title="Task error per timestep")
        ax2.legend(fontsize=7)
        fig.tight_layout()
        return save_figure(fig, out_png)


def trajectory_plot(trajectory: pd.DataFrame | str | os.PathLike, out_png: str | os.PathLike) -> Figure:
    """Distance of each student's latents (left) and predicted x0 (right) to the teacher's, per step (95% CI)."""
    df = _table(trajectory)
    students = _by_width(df)
    if not students:
        raise KDError("no width students in the trajectory table")
    colours = _colours(students)
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        for ax, quantity, title in ((axes[0], "latent", "Latent distance to the teacher's path"),
                                    (axes[1], "x0", "Predicted-x0 distance to the teacher's")):
            for m in students:
                t = df[(df["model"] == m) & (df["quantity"] == quantity)].sort_values("step")
                ax.plot(t["step"], t["distance"], color=colours[m], lw=1.4, label=f"{m} (x{t['factor'].iloc[0]:g})")
                ax.fill_between(t["step"], t["ci_low"].clip(lower=1e-12), t["ci_high"], color=colours[m], alpha=0.2, lw=0)
            ax.set(xlabel="sampling step", ylabel="MSE to the teacher", yscale="log", title=title)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        return save_figure(fig, out_png)


def denoising_grid(images: str | os.PathLike, out_png: str | os.PathLike, prompts: int = 2) -> Figure:
    """Rows: teacher then students by width; columns: predicted x0 at the grid steps, for the first prompts."""
    with safe_open(images, "pt") as f:
        meta = f.metadata()
        models = meta["models"].split(",")
        data = {m: f.get_tensor(m) for m in models}
    steps, timesteps = meta["steps"].split(","), meta["timesteps"].split(",")
    names = meta["prompts"].split("\n")
    n_p = min(prompts, next(iter(data.values())).shape[1])
    cols = len(steps) * n_p
    with style():
        fig, axes = plt.subplots(len(models), cols, figsize=(1.1 * cols + 1, 1.15 * len(models) + 0.6), squeeze=False)
        for i, m in enumerate(models):
            for p in range(n_p):
                for j, (s, t) in enumerate(zip(steps, timesteps, strict=True)):
                    ax = axes[i, p * len(steps) + j]
                    ax.imshow(data[m][j, p].permute(1, 2, 0).numpy())
                    ax.set_xticks([])
                    ax.set_yticks([])
                    ax.grid(False)
                    if i == 0:
                        ax.set_title(f"step {s}\n(t={t})", fontsize=7)
                    if p == 0 and j == 0:
                        ax.set_ylabel(m, fontsize=8)
        fig.suptitle("Predicted x0 along the sampling path: " + " | ".join(names[:n_p]), fontsize=9)
        fig.tight_layout()
        return save_figure(fig, out_png)


def cost_plot(summary: pd.DataFrame | str | os.PathLike, out_png: str | os.PathLike) -> Figure:
    """U-Net step latency (interleaved, 95% CI) and FLOPs, latency per image and peak memory against
    denoiser parameters."""
    df = _table(summary)
    panels = [("step_ms", "U-Net step latency, interleaved (ms)"), ("gflops_per_step", "GFLOPs per step"),
              ("latency_per_image_ms", "latency per image (ms)"), ("peak_memory_mib", "peak memory (MiB)")]
    panels = [(c, label) for c, label in panels if c in df and df[c].notna().any()] or panels[2:]
    with style():
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
        for ax, (col, label) in zip(axes[0], panels, strict=True):
            s = df[df["model"] != "teacher"].sort_values("factor")
            if col == "step_ms":
                batches = df.attrs.get("latency_batches") or []
                ax.errorbar(s["params"] / 1e6, s[col], yerr=[s[col] - s["step_ms_ci_low"], s["step_ms_ci_high"] - s[col]],
                            marker="o", color="#1f77b4", capsize=3,
                            label=f"students, {min(batches)} image(s)" if batches else "students")
                if len(batches) > 1 and s["step_ms_batch"].notna().any():
                    ax.plot(s["params"] / 1e6, s["step_ms_batch"], marker="s", color="#2ca02c",
                            label=f"students, {max(batches)} images")
                    t = df[df["model"] == "teacher"]
                    ax.scatter(t["params"] / 1e6, t["step_ms_batch"], color="#222222", marker="*", s=80, zorder=3)
            else:
                ax.plot(s["params"] / 1e6, s[col], marker="o", color="#1f77b4", label="students")
            for r in s.itertuples():
                ax.annotate(f"x{r.factor:g}", (r.params / 1e6, getattr(r, col)), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
            t = df[df["model"] == "teacher"]
            ax.scatter(t["params"] / 1e6, t[col], color="#222222", marker="*", s=80, zorder=3, label="teacher")
            ax.set(xlabel="denoiser parameters (M)", ylabel=label)
        axes[0][0].legend(fontsize=7)
        rho = df.attrs.get("spearman_width_vs_latency", np.nan)
        fig.suptitle(f"Cost against size (Spearman width vs latency: {rho:.2f}, p = "
                     f"{df.attrs.get('spearman_width_vs_latency_p', np.nan):.2g})"
                     if "spearman_width_vs_latency" in df.attrs else "Cost against size", y=1.02)
        fig.tight_layout()
        return save_figure(fig, out_png)


def quality_plot(summary: pd.DataFrame | str | os.PathLike, out_png: str | os.PathLike) -> Figure:
    """FID (95% CI) and MSE to the teacher against parameters; FID against latency with the efficiency frontier."""
    df = _table(summary)
    s = df[df["model"] != "teacher"].sort_values("factor")
    t = df[df["model"] == "teacher"]
    with style():
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
        ax = axes[0]
        ax.errorbar(s["params"] / 1e6, s["fid"], yerr=[s["fid"] - s["fid_ci_low"], s["fid_ci_high"] - s["fid"]],
                    marker="o", capsize=3, color="#1f77b4", label="students")
        ax.errorbar(t["params"] / 1e6, t["fid"], yerr=[t["fid"] - t["fid_ci_low"], t["fid_ci_high"] - t["fid"]],
                    marker="*", ms=10, capsize=3, color="#222222", ls="none", label="teacher")
        ax.set(xlabel="denoiser parameters (M)", ylabel="FID to real images (95% CI)", title="Quality against size")
        ax.legend()
        ax = axes[1]
        ax.errorbar(s["params"] / 1e6, s["mse_teacher"],
                    yerr=[s["mse_teacher"] - s["mse_teacher_ci_low"], s["mse_teacher_ci_high"] - s["mse_teacher"]],
                    marker="o", capsize=3, color="#d62728")
        for r in s.itertuples():
            ax.annotate(f"x{r.factor:g}", (r.params / 1e6, r.mse_teacher), fontsize=7, xytext=(3, 3), textcoords="offset points")
        rho = df.attrs.get("spearman_width_vs_mse_teacher")
        ax.set(xlabel="denoiser parameters (M)", ylabel="noise-prediction MSE to the teacher", yscale="log",
               title="Error against size" + (f" (Spearman {rho:.2f})" if rho is not None and np.isfinite(rho) else ""))
        ax = axes[2]
        ax.scatter(df["latency_per_image_ms"], df["fid"], c=["#222222" if m == "teacher" else "#1f77b4" for m in df["model"]])
        for r in df.itertuples():
            ax.annotate(r.model, (r.latency_per_image_ms, r.fid), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = df[df["on_frontier"]].sort_values("latency_per_image_ms")
        ax.step(front["latency_per_image_ms"], front["fid"], where="post", color="#ff7f0e", lw=1.5, label="efficiency frontier")
        ax.set(xlabel="latency per image (ms)", ylabel="FID to real images", title="Quality against cost")
        ax.legend()
        fig.tight_layout()
        return save_figure(fig, out_png)
