"""BK-SDM block distillation: the teacher's U-Net distilled into block-removed students (task +
output-KD + feature-KD losses), one per ``block_kd.levels`` entry and, with ``ablate_features``,
``<level>_nofeat`` trained without the feature term; each sampled like the teacher. Its table
(``metrics/block_kd.parquet``): each student's quality against the teacher, the base student and
its ablation, its size and its step latency against the teacher's. Training: kd_core.train.block_kd;
students: kd_core.models.bk_sdm; table: kd_core.metrics.block_kd; rules: rules/block_kd.smk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kd_core import config_checks
from kd_core.errors import ConfigError, KDError
from kd_core.models.bk_configs import SDXL_UNET_CONFIG, student_config
from kd_core.studies.base import PaperTable, Study, format_ci, quality

ABLATION = "_nofeat"


def _signed(x: float) -> str:
    return f"{0.0 if abs(x) < 1e-9 else x:+.3g}"  # a bound at zero, not -1.7e-18 from summing rounded means


def _diff(r) -> str:
    return f"{_signed(r['difference'])} [{_signed(r['diff_ci_low'])}, {_signed(r['diff_ci_high'])}]"


def format_block_kd(df):
    """One row per model: the quality measure [CI] and its paired difference to the teacher, the base
    student and (feature KD) the ablation [CI]; U-Net parameters, GFLOPs and step latency [CI], and
    the latency over the teacher's in the same round [CI]."""
    import pandas as pd

    metric = quality(df)
    rows = []
    for model, g in df.groupby("model", sort=False):
        own = g[g["baseline"] == ""].set_index("metric")
        row = {"model": model, "level": g["level"].iloc[0], "feature KD": "yes" if g["feature_kd"].iloc[0] else ""}
        if metric in own.index:
            r = own.loc[metric]
            row[f"{metric} [95% CI]"] = format_ci(r["mean"], r["ci_low"], r["ci_high"])
            for ref, title in zip(KINDS, ("vs teacher", "vs base student", "vs without feature KD"), strict=True):
                d = g[(g["metric"] == metric) & (g["baseline"] != "")]
                d = d[d["baseline"].map(lambda b, ref=ref, lv=row["level"]: _baseline_kind(b, lv) == ref)]
                row[f"{title} [95% CI]"] = _diff(d.iloc[0]) if len(d) else ""
        if "params" in own.index:
            row["U-Net params (M)"] = f"{own.loc['params', 'mean'] / 1e6:.4g}"
            row["GFLOPs / step"] = f"{own.loc['gflops_per_step', 'mean']:.3g}"
        if "step_ms" in own.index:
            r = own.loc["step_ms"]
            row["ms / step [95% CI]"] = format_ci(r["mean"], r["ci_low"], r["ci_high"])
        ratio = g[g["metric"] == "step_ms_ratio_teacher"]
        row["x teacher's latency [95% CI]"] = (format_ci(*ratio.iloc[0][["mean", "ci_low", "ci_high"]]) if len(ratio) else "")
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


KINDS = ("teacher", "base", "ablation")


def _baseline_kind(baseline: str, level: str) -> str:
    if baseline == "teacher":
        return "teacher"
    return "ablation" if baseline == f"{level}{ABLATION}" else "base"


def block_kd_headline(df, meta: dict) -> list[str]:
    """One sentence per student: its quality against the teacher's (paired), the base student's and
    the ablation's, and its size and step latency against the teacher's."""
    metric = quality(df)
    if metric is None:
        return []
    own = df[(df["baseline"] == "") & (df["metric"] == metric)].set_index("model")
    cost = df[df["baseline"] == ""].pivot_table(index="model", columns="metric", values="mean")
    ratio = df[df["metric"] == "step_ms_ratio_teacher"].set_index("model")
    teacher = meta.get("teacher", "teacher")
    lines = []
    for model in [m for m in own.index if m not in (teacher, meta.get("base"))]:
        r = own.loc[model]
        level = df.loc[df["model"] == model, "level"].iloc[0]
        diffs = df[(df["model"] == model) & (df["metric"] == metric) & (df["baseline"] != "")]
        diffs = diffs.sort_values("baseline", key=lambda b, lv=level: b.map(lambda x: KINDS.index(_baseline_kind(x, lv))))
        parts = [f"against {d['baseline']} {_diff(d)} (paired, Wilcoxon p = {d['p_value']:.2g})" for _, d in diffs.iterrows()]
        size = ""
        if {"params"} <= set(cost.columns) and model in cost.index and teacher in cost.index:
            size = f"; {cost.loc[model, 'params'] / cost.loc[teacher, 'params']:.0%} of the teacher's U-Net parameters"
        if model in ratio.index:
            q = ratio.loc[model]
            size += (f", step latency {cost.loc[model, 'step_ms']:.3g} ms against the teacher's "
                     f"{cost.loc[teacher, 'step_ms']:.3g} ms (x{q['mean']:.2f} [{q['ci_low']:.2f}, {q['ci_high']:.2f}])")
        what = "block distillation" + ("" if model == level else f", {level} without feature KD")
        lines.append(f"**{model}** ({what}): {metric} "
                     f"{format_ci(r['mean'], r['ci_low'], r['ci_high'])}; " + "; ".join(parts) + size + ".")
    return lines


#: The layout keys (those the students' configs read) of the toy teachers, from their world config.
TOY_LAYOUTS = {
    "toy:teacher": lambda c: {"down_block_types": ["CrossAttnDownBlock2D"] * len(c["channels"]),
                              "block_out_channels": c["channels"], "layers_per_block": c["layers_per_block"],
                              "mid_block_type": "UNetMidBlock2DCrossAttn"},
    "toy:teacher_xl": lambda c: {k: SDXL_UNET_CONFIG[k] for k in ("down_block_types", "mid_block_type", "addition_embed_type")}
                                | {"block_out_channels": c["channels"], "layers_per_block": c["layers_per_block"],
                                   "transformer_layers_per_block": c["transformer_depths"]},
}


class BlockKD(Study):
    key = "block_kd"
    order = 20
    config_class = "kd_core.train.block_kd:BlockKDConfig"
    samples_images = True
    paper_tables = {
        "block_kd": PaperTable("Block distillation: each student's quality [95% CI over images] and its paired difference "
                               "to the teacher, the base student and its ablation without feature KD; U-Net size and step "
                               "latency against the teacher's (timed interleaved)", format_block_kd, block_kd_headline),
    }

    @property
    def models(self) -> list[str]:
        """One student per level, then ``<level>_nofeat`` for the feature-KD ablation."""
        levels = self.cfg["levels"]
        return levels + ([f"{lv}{ABLATION}" for lv in levels] if self.cfg["ablate_features"] else [])

    def model_entry(self, name: str) -> dict[str, Any]:
        return self.sampled_like_teacher(name)

    @staticmethod
    def settings(name: str) -> dict[str, Any]:
        """The level and the ablation flag of a student's name."""
        return {"level": name.removesuffix(ABLATION), "feature_kd": not name.endswith(ABLATION)}

    def inputs(self) -> dict[str, Any]:
        return self.with_data({"teacher": self.plan.built_input(self.plan.teacher["source"])})

    def loss_tables(self) -> dict[str, str]:
        return {f"BK-SDM {m}": f"{self.out}/train/{m}/loss.parquet" for m in self.models}

    def metric_tables(self) -> list[str]:
        return ["block_kd"]

    @property
    def students(self) -> dict[str, dict[str, Any]]:
        """Every student: name -> its level and whether it learns with feature KD."""
        return {m: self.settings(m) for m in self.models}

    def latency_students(self) -> dict[str, str]:
        """One student per level (its ablation has the same architecture): name -> folder."""
        return {lv: f"{self.out}/models/{lv}" for lv in self.cfg["levels"]}

    def latency_inputs(self) -> dict[str, Any]:
        return {"teacher": self.plan.built_input(self.plan.teacher["source"]), "students": list(self.latency_students().values())}

    def summary_inputs(self) -> dict[str, Any]:
        """The per-image tables of the teacher, the base student and every student, and the latency."""
        metrics, plan = f"{self.out}/metrics", self.plan
        base = ["base_student"] if "base_student" in plan.models else []
        inputs: dict[str, Any] = {"pairwise": [f"{metrics}/pairwise/{m}.parquet" for m in base + self.models],
                                  "latency": f"{metrics}/block_kd_latency.parquet"}
        if plan.world:
            inputs["attributes"] = [f"{metrics}/attributes/{m}.parquet" for m in ["teacher", *base, *self.models]]
        if plan.clip:
            inputs["alignment"] = [f"{metrics}/alignment/{m}.parquet" for m in ["teacher", *base, *self.models]]
        return inputs

    def wildcards(self) -> dict[str, str]:
        return {"bk": "|".join(self.models)}

    def check(self, folders: dict[str, Path | None], grammar: Any) -> None:
        config_checks.training_data(self.config, self.key)
        teacher = folders.get("teacher")  # a local folder or a cached snapshot: its U-Net's config is here
        unet = teacher / "unet" / "config.json" if teacher is not None else None
        config = json.loads(unet.read_text()) if unet is not None and unet.is_file() else None
        source = self.config["models"]["teacher"]["source"]
        if source in TOY_LAYOUTS:  # a toy teacher, not built yet: its layout from the world's config
            config = TOY_LAYOUTS[source](self.config["world"]["toy"][source.removeprefix("toy:")])
        if config is not None:
            for level in self.cfg["levels"]:
                try:
                    student_config(config, level)
                except KDError as e:
                    raise ConfigError(f"config key 'block_kd.levels' has {level!r}, which the teacher "
                                      f"{self.config['models']['teacher']['source']} cannot give: {e}") from None

    def image_sizes(self) -> list[tuple[str, str, int | None]]:
        return self.teacher_resolution()
