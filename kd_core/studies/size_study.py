"""Model-size study: the teacher's U-Net distilled into students of several width factors
(``w<factor>``, from the teacher's most important channels or from random weights; with
``compare_init`` each again from the other start, ``w<factor>_<init>``), each sampled like the
teacher; then the size analyses (noise-prediction error per timestep, sampling-trajectory
divergence, U-Net step latency, cost and quality against size). Training: kd_core.train.size_study;
analyses: kd_core.metrics.{timestep,trajectory,latency,size_study}; rules: rules/size_study.smk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kd_core import config_checks
from kd_core.studies.base import PaperTable, Study, format_ci


def width_student_name(factor: float) -> str:
    """``w0p25`` for factor 0.25: the model name of a width student (results/<exp>/models/<name>/)."""
    return "w" + f"{factor:g}".replace(".", "p")


def format_size_study(df):
    import numpy as np
    import pandas as pd

    def num(v, fmt="{:.4g}"):
        return fmt.format(v) if np.isfinite(v) else "n/a"

    def cis(column, digits=3):
        return [format_ci(v, lo, hi, digits) for v, lo, hi in
                zip(df[column], df[f"{column}_ci_low"], df[f"{column}_ci_high"], strict=True)]

    return pd.DataFrame({
        "model": df["model"], "width": df["factor"].map("x{:g}".format), "parameters": df["params"].map("{:,}".format),
        "MSE to teacher": [c if name != "teacher" else "0" for name, c in zip(df["model"], cis("mse_teacher"), strict=True)],
        "task MSE": df["mse_noise"].map(num), "final latent drift": df["trajectory_final"].map(num),
        "U-Net ms / step [95% CI]": cis("step_ms", 4),
        "GFLOPs / step": df["gflops_per_step"].map(num), "ms / image": df["latency_per_image_ms"].map(num),
        "peak MiB": df["peak_memory_mib"].map(num),
        "FID [95% CI]": cis("fid", 4),
        **({"attribute accuracy [95% CI]": cis("accuracy")} if "accuracy" in df and df["accuracy"].notna().any() else {}),
        "frontier": np.where(df["on_frontier"], "yes", ""),
    })


def format_timestep_mse(df):
    vs = df[df["target"] == "teacher"]
    order = vs.drop_duplicates("model").sort_values("factor")["model"]
    out = vs.pivot(index="model", columns="bucket", values="mse").loc[list(order)]
    edges = vs.drop_duplicates("bucket").set_index("bucket").sort_index()
    out.columns = [f"t {lo}-{hi}" if b >= 0 else "all t" for b, lo, hi in
                   zip(edges.index, edges["t_low"], edges["t_high"], strict=True)]
    out = out[[*out.columns[1:], out.columns[0]]] if len(out.columns) > 1 and out.columns[0] == "all t" else out
    return out.map("{:.4g}".format).reset_index()


def size_headline(df, meta: dict) -> list[str]:
    """Width against error and against latency: Spearman rank correlations over the students."""
    import numpy as np

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
        values = ", ".join(f"x{r.factor:g} {format_ci(r.accuracy, r.accuracy_ci_low, r.accuracy_ci_high)}" for r in s.itertuples())
        teacher = df[df["model"] == "teacher"]
        of = f" (teacher {teacher['accuracy'].iloc[0]:.3g})" if len(teacher) and np.isfinite(teacher["accuracy"].iloc[0]) else ""
        accuracy = (f"attribute accuracy {values}{of} (Spearman width vs accuracy "
                    f"{meta.get('spearman_width_vs_accuracy', np.nan):+.2f}, p = {meta.get('spearman_width_vs_accuracy_p', np.nan):.2g}); ")
    return [f"**Model size** ({len(s)} width students{init}): {accuracy}noise-prediction MSE to the teacher {errors} "
            f"(Spearman rank correlation of width with error {rho_e:+.2f}, p = {p_e:.2g}); {what} {latency} "
            f"(Spearman width vs latency {rho_l:+.2f}, p = {p_l:.2g}; {meta.get('spearman_p', 'p from scipy')})"
            + _batch_latency(s, meta) + "."]


def _batch_latency(s, meta: dict) -> str:
    """The step latency at the study's largest batch, where the device is busier than at one image."""
    import numpy as np

    batches = meta.get("latency_batches") or []
    if len(batches) < 2 or "step_ms_batch" not in s or s["step_ms_batch"].isna().all():
        return ""
    latency = ", ".join(f"x{r.factor:g} {r.step_ms_batch:.4g} ms" for r in s.itertuples())
    return (f"; at {max(batches)} images per step {latency} (Spearman {meta.get('spearman_width_vs_latency_batch', np.nan):+.2f}, "
            f"p = {meta.get('spearman_width_vs_latency_batch_p', np.nan):.2g})")


class SizeStudy(Study):
    key = "size_study"
    order = 30
    config_class = "kd_core.train.size_study:SizeStudyConfig"
    trains_on_prompts = False  # an unconditional teacher (prompts.grammar: null) is distilled too
    samples_images = True
    compares_with_teacher = True
    figure_titles = {
        "size_heatmap": "Model size: noise-prediction error to the teacher per timestep",
        "size_trajectory": "Model size: sampling-trajectory divergence from the teacher",
        "size_denoising": "Model size: predicted x0 along the sampling path",
        "size_cost": "Model size: latency and memory against parameters",
        "size_quality": "Model size: FID and error against size and cost, efficiency frontier",
    }
    paper_tables = {
        "size_study": PaperTable("Model size: width students against the teacher (MSE to the teacher over all "
                                 "timestep buckets [95% CI over images])", format_size_study, size_headline),
        "timestep_mse": PaperTable("Model size: noise-prediction MSE to the teacher per timestep bucket (rows: "
                                   "models by width)", format_timestep_mse),
    }

    # ---- models -----------------------------------------------------------------------------------
    @property
    def factors(self) -> dict[str, float]:
        """The study's width students: model name -> width factor, narrowest first."""
        return {width_student_name(f): f for f in sorted(self.cfg["factors"])}

    @property
    def compared(self) -> dict[str, float]:
        """``compare_init``: every width student again from the other initialisation, named
        ``w<factor>_<init>`` (``w0p5_random``), trained and evaluated like every model; the size
        analyses keep to the students of ``init``. Name -> width factor."""
        if not self.cfg["compare_init"]:
            return {}
        return {f"{width_student_name(f)}_{self._other_init}": f for f in sorted(self.cfg["factors"])}

    @property
    def _other_init(self) -> str:
        return "random" if self.cfg["init"] == "teacher" else "teacher"

    @property
    def models(self) -> list[str]:
        """Every width student that trains: the study's, then those of the other initialisation."""
        return list(self.factors) + list(self.compared)

    def model_entry(self, name: str) -> dict[str, Any]:
        return self.sampled_like_teacher(name)

    def factor(self, name: str) -> float:
        return self.factors.get(name, self.compared.get(name))

    def init(self, name: str) -> str:
        return self._other_init if name in self.compared else self.cfg["init"]

    # ---- jobs -------------------------------------------------------------------------------------
    def inputs(self) -> dict[str, Any]:
        """A width student's training: the teacher (when built here) and its training images."""
        return self.with_data({"teacher": self.plan.built_input(self.plan.teacher["source"])})

    def student_dirs(self) -> dict[str, str]:
        """The study's own students' folders (the analyses'), name -> folder."""
        return {m: f"{self.out}/models/{m}" for m in self.factors}

    def model_inputs(self) -> dict[str, Any]:
        """The teacher and every width student: what the latency measurement reads (no images, no prompts)."""
        return {"teacher": self.plan.built_input(self.plan.teacher["source"]), "students": list(self.student_dirs().values())}

    def analysis_inputs(self) -> dict[str, Any]:
        """The teacher, every width student, and the teacher's eval images (timestep MSE) or eval prompts."""
        return self.model_inputs() | {"eval": self.plan.manifest("teacher", "eval"),
                                      "prompts": f"{self.out}/prompts/eval.parquet"}

    def summary_inputs(self) -> dict[str, Any]:
        plan, metrics = self.plan, f"{self.out}/metrics"
        inputs: dict[str, Any] = {"timestep": f"{metrics}/timestep_mse.parquet", "trajectory": f"{metrics}/trajectory.parquet",
                                  "latency": f"{metrics}/size_latency.parquet"}
        if plan.efficiency:
            inputs["efficiency"] = f"{metrics}/efficiency.parquet"
        if plan.extractor != "none":
            inputs["distribution"] = f"{metrics}/distribution.parquet"
        if plan.world:  # attribute accuracy of the teacher and every width student
            inputs["attributes"] = [f"{metrics}/attributes/{m}.parquet" for m in ["teacher", *self.factors]]
        return inputs

    # ---- outputs ----------------------------------------------------------------------------------
    def loss_tables(self) -> dict[str, str]:
        return {f"width {m}": f"{self.out}/train/{m}/loss.parquet" for m in self.models}

    def metric_tables(self) -> list[str]:
        return ["size_study", "timestep_mse"] if self.factors else []

    def figures(self) -> list[str]:
        return list(self.figure_titles) if self.factors else []

    def figure_files(self) -> list[str]:
        return [f"{self.out}/figures/{f}.{ext}" for f in self.figures() for ext in ("png", "pdf")]

    def wildcards(self) -> dict[str, str]:
        return {"width_student": "|".join(self.models)}

    # ---- checks -----------------------------------------------------------------------------------
    def names(self):
        return [("size_study.factors", self.cfg["factors"], width_student_name)]

    def check(self, folders: dict[str, Path | None], grammar: Any) -> None:
        config_checks.training_data(self.config, self.key)

    def image_sizes(self) -> list[tuple[str, str, int | None]]:
        return self.teacher_resolution()
