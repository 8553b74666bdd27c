"""Step distillation: a few-step student of a teacher pipeline by latent consistency distillation
(``method: lcm_lora``, LoRA on the teacher's U-Net; ``method: lcm``, the whole U-Net with a guidance
embedding and an EMA target), compared with its teacher step count by step count.

The student samples with ``LCMScheduler`` at each of ``step_distill.steps``; the teacher samples at
the same counts with its own scheduler (the honest baseline) and at its full count (the model
``teacher`` itself, every image's reference). Each (model, steps) pair is a model of the plan,
``<method>_s<n>`` and ``<teacher>_s<n>``, sampled on the eval prompts with the same seeds and
evaluated by every metric the workflow has. Training: kd_core.train.step_distill; rules:
rules/step_distill.smk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kd_core import config_checks
from kd_core.errors import ConfigError
from kd_core.studies.base import PaperTable, Study, format_ci, quality


def format_step_distill(df):
    """One row per (model, steps): the quality measure [CI], the paired difference to the teacher at
    the same steps [CI] and its p, the share of the full-step teacher's, FID [CI], latency [CI]."""
    import pandas as pd

    metric = quality(df)
    rows = []
    for (model, role, steps), g in df.groupby(["model", "role", "steps"], sort=False):
        by = g.set_index("metric")
        row = {"model": model, "role": role, "steps": int(steps)}
        if metric in by.index:
            r = by.loc[metric]
            row[f"{metric} [95% CI]"] = format_ci(r["mean"], r["ci_low"], r["ci_high"])
            row["vs teacher, same steps [95% CI]"] = (f"{r['difference']:+.3g} [{r['diff_ci_low']:+.3g}, {r['diff_ci_high']:+.3g}]"
                                                     if r["baseline"] else "")
            row["p"] = f"{r['p_value']:.2g}" if r["baseline"] else ""
            row["of full-step teacher"] = f"{r['of_full_teacher']:.1%}"
        if "fid" in by.index:
            r = by.loc["fid"]
            row["FID [95% CI]"] = format_ci(r["mean"], r["ci_low"], r["ci_high"], 4)
        if "latency_ms" in by.index:
            r = by.loc["latency_ms"]
            row["ms / image [95% CI]"] = format_ci(r["mean"], r["ci_low"], r["ci_high"], 4)
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["role", "steps"], ascending=[True, True], ignore_index=True).fillna("")


def step_headline(df, meta: dict) -> list[str]:
    """One sentence per student step count: quality against the teacher at the same steps (paired),
    its share of the full-step teacher's, and the latency of each."""
    metric = quality(df)
    if metric is None:
        return []
    q = df[df["metric"] == metric].set_index("model")
    lat = df[df["metric"] == "latency_ms"].set_index("model")
    full = q[(q["role"] == "teacher") & (q["steps"] == meta.get("full_steps"))]
    lines = []
    for model, r in q[q["role"] == "student"].sort_values("steps").iterrows():
        if not r["baseline"] or r["baseline"] not in q.index:
            continue
        b = q.loc[r["baseline"]]
        ms = (f"; {lat.loc[model, 'mean']:.3g} ms per image against the teacher's {lat.loc[r['baseline'], 'mean']:.3g} ms"
              if model in lat.index and r["baseline"] in lat.index else "")
        of_full = (f", {r['of_full_teacher']:.1%} of the teacher's at {int(full['steps'].iloc[0])} steps "
                   f"({format_ci(full['mean'].iloc[0], full['ci_low'].iloc[0], full['ci_high'].iloc[0])})" if len(full) else "")
        lines.append(f"**{model}** (step distillation, {int(r['steps'])} steps): {metric} "
                     f"{format_ci(r['mean'], r['ci_low'], r['ci_high'])} against the teacher at {int(r['steps'])} steps "
                     f"{format_ci(b['mean'], b['ci_low'], b['ci_high'])}: {r['difference']:+.3g} "
                     f"[{r['diff_ci_low']:+.3g}, {r['diff_ci_high']:+.3g}] (paired, Wilcoxon p = {r['p_value']:.2g})"
                     f"{of_full}{ms}.")
    return lines


class StepDistill(Study):
    key = "step_distill"
    order = 50
    config_class = "kd_core.train.step_distill:StepDistillConfig"
    samples_images = True
    figure_titles = {
        "step_distill_steps": "Step distillation: quality against sampling steps, student and teacher",
        "step_distill_latency": "Step distillation: quality against latency per image",
    }
    paper_tables = {
        "step_distill": PaperTable("Step distillation: the student (LCMScheduler) and its teacher (its own scheduler) "
                                   "at equal step counts [95% CI over images]; paired difference to the teacher at the "
                                   "same steps", format_step_distill, step_headline),
    }

    # ---- models ----------------------------------------------------------------------------------
    @property
    def method(self) -> str:
        return self.cfg["method"]

    @property
    def teacher_name(self) -> str:
        """The configured model that is distilled (``step_distill.teacher``)."""
        return self.cfg["teacher"]

    @property
    def teacher_entry(self) -> dict[str, Any]:
        return self.config["models"][self.teacher_name]

    @property
    def trained(self) -> str:
        """The trained student: the LoRA adapter (lcm_lora) or the pipeline folder (lcm)."""
        return f"{self.out}/models/{self.method}"

    @property
    def students(self) -> dict[str, int]:
        """The student at each step count: model name -> steps."""
        return {f"{self.method}_s{n}": n for n in sorted(self.cfg["steps"])}

    @property
    def teachers(self) -> dict[str, int]:
        """The teacher at each step count (its full count is the model itself): model name -> steps."""
        full = self.teacher_entry["generation"]["steps"]
        return {f"{self.teacher_name}_s{n}": n for n in sorted(self.cfg["steps"]) if n != full}

    @property
    def models(self) -> list[str]:
        return list(self.students) + list(self.teachers)

    @property
    def student_guidance(self) -> float:
        """The guidance scale the student samples with: set, else 1 (LCM-LoRA: none) or, for a full LCM
        student (told the scale through its guidance embedding), the teacher's."""
        g = self.cfg["student_guidance"]
        if g is not None:
            return g
        return 1.0 if self.method == "lcm_lora" else self.teacher_entry["generation"]["guidance_scale"]

    def model_entry(self, name: str) -> dict[str, Any]:
        generation = self.teacher_entry["generation"]
        if name in self.teachers:
            return {"source": self.teacher_entry["source"], "splits": ["eval"],
                    "generation": generation | {"steps": self.teachers[name]}}
        sampled = generation | {"steps": self.students[name], "scheduler": "lcm", "guidance_scale": self.student_guidance}
        if self.method == "lcm_lora":
            return {"source": self.teacher_entry["source"], "splits": ["eval"], "generation": sampled | {"lora": self.trained}}
        return {"source": self.trained, "splits": ["eval"], "generation": sampled}

    # ---- jobs ------------------------------------------------------------------------------------
    @property
    def teacher_source(self) -> str:
        return self.plan.model_dir(self.teacher_entry["source"])

    @property
    def teacher_images(self) -> str:
        """``data: teacher``: the train-split images of the distilled model (``step_distill.teacher``)."""
        return self.plan.manifest(self.teacher_name, "train")

    def inputs(self) -> dict[str, Any]:
        """The teacher (when built here) and its training images."""
        return self.with_data({"teacher": self.plan.built_input(self.teacher_entry["source"])})

    def latency_inputs(self) -> dict[str, list[str]]:
        """The built folders and adapters of every timed pair (step_latency's inputs)."""
        return self.plan.efficiency_inputs(self.timed())

    def latency_models(self) -> dict[str, tuple[str, dict]]:
        """Every timed pair as sampled: name -> (source, generation config)."""
        return self.plan.efficiency_models(self.timed())

    def timed_at_own_steps(self) -> list[str]:
        return list(self.models)

    def loss_tables(self) -> dict[str, str]:
        return {f"step distillation {self.method}": f"{self.out}/train/{self.method}/loss.parquet"}

    @property
    def full_steps(self) -> int:
        return self.teacher_entry["generation"]["steps"]

    def timed(self) -> list[str]:
        """Every (model, steps) pair the latency job times: the full-step teacher first (the reference)."""
        return [self.teacher_name, *self.models]

    def summary_inputs(self) -> dict[str, Any]:
        """The per-image tables of every pair (pairwise: not the full-step teacher, their reference),
        the latency table, and FID / KID where measured."""
        metrics, plan = f"{self.out}/metrics", self.plan
        inputs: dict[str, Any] = {"pairwise": [f"{metrics}/pairwise/{m}.parquet" for m in self.models],
                                  "latency": f"{metrics}/step_latency.parquet"}
        if plan.world:
            inputs["attributes"] = [f"{metrics}/attributes/{m}.parquet" for m in self.timed()]
        if plan.clip:
            inputs["alignment"] = [f"{metrics}/alignment/{m}.parquet" for m in self.timed()]
        if plan.extractor != "none":
            inputs["distribution"] = f"{metrics}/distribution.parquet"
        return inputs

    def metric_tables(self) -> list[str]:
        return ["step_distill"]

    def figures(self) -> list[str]:
        return list(self.figure_titles)

    # ---- checks ----------------------------------------------------------------------------------
    def check(self, folders: dict[str, Path | None], grammar: Any) -> None:
        cfg, models = self.cfg, self.config["models"]
        if cfg["teacher"] not in models:
            raise ConfigError(f"config key 'step_distill.teacher' is {cfg['teacher']!r}; choose a model among {list(models)}")
        if cfg["data"] == "teacher" and "train" not in self.teacher_entry["splits"]:
            raise ConfigError(f"config key 'step_distill.data' is 'teacher' but 'models.{cfg['teacher']}.splits' lacks "
                              "'train', whose images the student trains on; add it")
        if cfg["data"] != "teacher":
            config_checks.training_data(self.config, self.key)
        if cfg["guidance_min"] > cfg["guidance_max"]:
            raise ConfigError(f"config keys 'step_distill.guidance_min' ({cfg['guidance_min']}) and 'guidance_max' "
                              f"({cfg['guidance_max']}): the range is empty; give min <= max")
        if self.teacher_entry["source"].startswith("ddpm:"):
            raise ConfigError("config key 'step_distill.teacher' names an unconditional DDPM teacher; step distillation "
                              "distils a text-to-image teacher's guided estimate")

    def image_sizes(self) -> list[tuple[str, str, int | None]]:
        return [(self.teacher_name, "step_distill.resolution", self.cfg["resolution"])]
