"""DM-KD: a classifier teacher trained on real images teaches randomly initialised students only on
images the diffusion teacher generates from class prompts (one synthetic set per guidance scale, and
shares of the first); the baselines are a student on the real images and students on the synthetic
images with hard labels. Every run is trained once per seed (``dmkd.seeds``) and scored on the real
test split. Training: kd_core.train.dmkd; summary: kd_core.metrics.dmkd; rules: rules/dmkd.smk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kd_core import config_checks
from kd_core.errors import ConfigError
from kd_core.sources import local_path
from kd_core.studies.base import PaperTable, Study, format_ci, split_runtime

# the settings only students read, and those only the teacher reads (what each job depends on)
_STUDENT_ONLY = ("synthetic", "student", "student_train", "temperature", "kd_weight", "hard_weight", "seeds")
_TEACHER_ONLY = ("synthetic", "teacher", "teacher_train", "teacher_robustness", "seeds")


def guidance_tag(guidance: float) -> str:
    """``g2`` for guidance 2.0, ``g7p5`` for 7.5: the name of a synthetic set."""
    return f"g{guidance:g}".replace(".", "p")


def fraction_tag(fraction: float) -> str:
    """``f25`` for 0.25: the suffix of a run on that share of the main synthetic set."""
    return f"f{round(100 * fraction)}"


def format_dmkd(df):
    import numpy as np
    import pandas as pd

    return pd.DataFrame({
        "run": df["run"], "data": df["data"], "objective": df["objective"],
        "guidance": df["guidance"].map(lambda g: "" if not np.isfinite(g) else f"{g:g}"), "train images": df["n_train"],
        "seeds": df["n_seeds"],
        "accuracy [95% CI]": [format_ci(a, lo, hi) for a, lo, hi in zip(df["accuracy"], df["ci_low"], df["ci_high"], strict=True)],
        "seed sd": df["seed_sd"].map(lambda v: "" if not np.isfinite(v) else f"{v:.3f}"),
        "of real-data student": df["relative_to_real"].map("{:.1%}".format),
        "vs hard labels [95% CI]": [format_ci(d, lo, hi) if b else "" for d, lo, hi, b in
                                    zip(df["difference"], df["diff_ci_low"], df["diff_ci_high"], df["baseline"], strict=True)],
        "p": [f"{p:.2g}" if b else "" for p, b in zip(df["p_value"], df["baseline"], strict=True)],
    })


def dmkd_headline(df, meta: dict) -> list[str]:
    """One sentence per KD student on a full synthetic set: its share of the real-data student, and
    the paired difference to the hard-label student on the same images."""
    lines = []
    kd = df[(df["objective"] == "kd") & (df["baseline"] != "") & ~df["run"].str.contains("_f[0-9]+_", regex=True)]
    for r in kd.itertuples():
        seeds = f"mean of {r.n_seeds} seeds; CI over seeds and test images" if r.n_seeds > 1 else "one seed; CI over test images"
        test = "bootstrap" if r.n_seeds > 1 else "McNemar"
        lines.append(f"**{r.run}** (DM-KD, {r.n_train} synthetic images): real-test accuracy {format_ci(r.accuracy, r.ci_low, r.ci_high)} "
                     f"({seeds}), {r.relative_to_real:.1%} of the student trained on real images; "
                     f"against hard labels on the same images ({r.baseline}) {r.difference:+.3g} "
                     f"[{r.diff_ci_low:+.3g}, {r.diff_ci_high:+.3g}] ({test} p = {r.p_value:.2g}).")
    return lines


class DMKD(Study):
    key = "dmkd"
    order = 40
    without_images = True  # a classifier study: its table and figures need no image evaluation
    figure_titles = {
        "dmkd_accuracy": "DM-KD: real-test accuracy of classifiers taught on synthetic images",
        "dmkd_curves": "DM-KD: training loss and accuracy per epoch",
    }
    paper_tables = {
        "dmkd": PaperTable("DM-KD: classifiers on the real test split, mean over training seeds [95% CI over seeds "
                           "and test images]; paired difference to the hard-label student", format_dmkd, dmkd_headline),
    }

    # ---- synthetic sets, runs and jobs -------------------------------------------------------------
    @property
    def sets(self) -> dict[str, float | None]:
        """Synthetic sets: tag -> guidance scale (None: an existing folder); the first is the main set."""
        if self.cfg["synthetic"]["folder"]:
            return {"folder": None}
        return {guidance_tag(g): g for g in self.cfg["synthetic"]["guidance"]}

    @property
    def runs(self) -> dict[str, dict[str, Any]]:
        """Student runs: name -> data (real or a set tag), share, objective, guidance, baseline."""
        runs = {"real_ce": {"data": "real", "fraction": 1.0, "objective": "ce", "guidance": None, "baseline": None}}
        sets = self.sets
        main = next(iter(sets))
        shares = [(tag, tag, 1.0) for tag in sets]
        shares += [(f"{main}_{fraction_tag(f)}", main, f) for f in sorted(self.cfg["synthetic"]["fractions"])]
        for name, tag, share in shares:
            for objective in ("kd", "ce"):
                runs[f"{name}_{objective}"] = {"data": tag, "fraction": share, "objective": objective,
                                               "guidance": sets[tag], "baseline": f"{name}_ce" if objective == "kd" else None}
        return runs

    @property
    def jobs(self) -> dict[str, tuple[str, int]]:
        """Every student run once per seed: job name <run>_s<seed> (models/dmkd_<run>_s<seed>/) -> (run, seed)."""
        return {f"{run}_s{seed}": (run, seed) for run in self.runs for seed in self.cfg["seeds"]}

    def job(self, job: str) -> dict[str, Any]:
        """The settings of a student job: its run's (data, share, objective, ...) and its seed."""
        run, seed = self.jobs[job]
        return {**self.runs[run], "run": run, "seed": seed}

    # ---- what each job reads -----------------------------------------------------------------------
    @property
    def prompt_settings(self) -> dict[str, Any]:
        """What the class prompts depend on (so that, e.g., more student epochs do not regenerate images)."""
        keys = ("real", "labels", "classes", "prompt_template")
        return {k: self.cfg[k] for k in keys} | {"n_per_class": self.cfg["synthetic"]["n_per_class"]}

    @property
    def teacher_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.cfg.items() if k not in _STUDENT_ONLY}

    @property
    def student_settings(self) -> dict[str, Any]:
        """A student job gets its own seed (``job``): adding a seed to the list trains only it."""
        return {k: v for k, v in self.cfg.items() if k not in _TEACHER_ONLY}

    @property
    def real(self) -> str:
        """The real images: the shapes world's tables or a local folder."""
        return self.cfg["real"] and local_path(self.cfg["real"]) or f"{self.out}/data/world"

    def real_inputs(self) -> list[str]:
        return [] if self.cfg["real"] else [self.plan.world_table("train"), self.plan.world_table("test")]

    def synthetic_manifest(self, tag: str) -> str:
        return f"{self.out}/dmkd/synthetic/{tag}/manifest.parquet"

    def data(self, job: str) -> str:
        """Where a run's training images come from: 'real', a manifest or a folder."""
        data = self.job(job)["data"]
        if data == "real":
            return "real"
        if data == "folder":
            return local_path(self.cfg["synthetic"]["folder"])
        return self.synthetic_manifest(data)

    def student_inputs(self, job: str) -> dict[str, Any]:
        run = self.job(job)
        inputs: dict[str, Any] = {"real": self.real_inputs()}
        if run["data"] not in ("real", "folder"):
            inputs["synthetic"] = self.synthetic_manifest(run["data"])
        if run["objective"] == "kd":
            inputs["teacher"] = f"{self.out}/models/dmkd_teacher"
        return inputs

    def generation(self, synthetic_set: str) -> dict[str, Any]:
        return split_runtime(self.cfg["synthetic"]["generation"])[0] | {"guidance_scale": self.sets[synthetic_set]}

    def generation_runtime(self) -> dict[str, Any]:
        return split_runtime(self.cfg["synthetic"]["generation"])[1]

    def curves(self) -> dict[str, str]:
        """Training curves to plot: the teacher's and every run's at the first seed."""
        first = self.cfg["seeds"][0]
        return {"teacher": f"{self.out}/train/dmkd_teacher/loss.parquet"} | {
            r: f"{self.out}/train/dmkd_{r}_s{first}/loss.parquet" for r in self.runs}

    # ---- outputs ------------------------------------------------------------------------------------
    def metric_tables(self) -> list[str]:
        return ["dmkd"]

    def figures(self) -> list[str]:
        return list(self.figure_titles)

    def wildcards(self) -> dict[str, str]:
        return {"dmkd_set": "|".join(self.sets), "dmkd_run": "|".join(self.jobs)}

    # ---- checks -------------------------------------------------------------------------------------
    def names(self):
        synthetic = self.cfg["synthetic"]
        if synthetic["folder"]:
            return []
        return [("dmkd.synthetic.guidance", synthetic["guidance"], guidance_tag),
                ("dmkd.synthetic.fractions", synthetic["fractions"], fraction_tag)]

    def check(self, folders: dict[str, Path | None], grammar: Any) -> None:
        """Real data from the world or an existing folder; labels that the grammar has; a synthetic source."""
        d = self.cfg
        if d["real"] is None:
            if not self.config["world"]["enabled"]:
                raise ConfigError("config key 'dmkd.real' is null, which means the shapes world's images, but "
                                  "'world.enabled' is false; give a folder with train/<class>/ and test/<class>/")
            unknown = [a for a in d["labels"] if a not in grammar.attributes]
            if unknown:
                raise ConfigError(f"config key 'dmkd.labels' has {unknown}, not attributes of grammar "
                                  f"{grammar.name!r}; choose among {grammar.attributes}")
        else:
            root = Path(d["real"]).expanduser()
            missing = [s for s in ("train", "test") if not (root / s).is_dir()]
            if missing:
                raise ConfigError(f"config key 'dmkd.real': {d['real']!r} lacks the sub-folder(s) {missing}; "
                                  "expected <folder>/train/<class>/ and <folder>/test/<class>/ images")
            for split in ("train", "test"):
                config_checks.image_folder(str(root / split), "dmkd.real", d["classes"])
        if d["synthetic"]["folder"] is not None:
            config_checks.image_folder(d["synthetic"]["folder"], "dmkd.synthetic.folder")

    def image_sizes(self) -> list[tuple[str, str, int | None]]:
        if self.cfg["synthetic"]["folder"] is not None:
            return []
        return [("teacher", "dmkd.synthetic.generation.resolution", self.cfg["synthetic"]["generation"]["resolution"])]
