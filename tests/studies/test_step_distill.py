"""The step-distillation study's plan, checks and paper table."""

import numpy as np
import pandas as pd
import pytest
import yaml

from kd_core.errors import ConfigError
from kd_core.experiment import validate_experiment
from kd_core.plan import Plan
from kd_core.studies.step_distill import format_step_distill, step_headline

from ..conftest import ROOT

SCHEMA = ROOT / "config" / "schema.yaml"


def _cfg(**step):
    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    return cfg | {"step_distill": {"enabled": True, **step}}


def test_every_step_count_is_a_model_of_the_student_and_of_the_teacher():
    plan = Plan(validate_experiment(_cfg(steps=[4, 1, 3]), SCHEMA))  # the smoke teacher samples with 3 steps
    study = plan.study("step_distill")
    teacher = plan.config["models"]["teacher"]
    assert study.students == {"lcm_lora_s1": 1, "lcm_lora_s3": 3, "lcm_lora_s4": 4}
    assert study.teachers == {"teacher_s1": 1, "teacher_s4": 4}  # 3: the teacher itself, at its full count
    assert plan.models[-5:] == ["lcm_lora_s1", "lcm_lora_s3", "lcm_lora_s4", "teacher_s1", "teacher_s4"]
    student = plan.model_entry("lcm_lora_s4")
    assert student["source"] == teacher["source"] and student["splits"] == ["eval"]
    assert student["generation"] == teacher["generation"] | {"steps": 4, "scheduler": "lcm", "guidance_scale": 1.0,
                                                             "lora": "results/smoke/models/lcm_lora"}
    assert plan.generate_inputs("lcm_lora_s4", "eval")["adapter"] == "results/smoke/models/lcm_lora"
    assert plan.model_entry("teacher_s1")["generation"] == teacher["generation"] | {"steps": 1}
    assert study.inputs() == {"teacher": ["results/smoke/models/toy_teacher"], "data": "results/smoke/images/teacher/train.parquet"}
    assert "results/smoke/metrics/step_distill.parquet" in plan.all_targets()
    assert study.timed()[0] == "teacher" and set(study.summary_inputs()["pairwise"]) == {
        f"results/smoke/metrics/pairwise/{m}.parquet" for m in study.models}
    # a full LCM student is its own pipeline folder, told the teacher's guidance through its embedding
    full = Plan(validate_experiment(_cfg(method="lcm", steps=[2]), SCHEMA))
    entry = full.model_entry("lcm_s2")
    assert entry["source"] == "results/smoke/models/lcm" and "lora" not in entry["generation"]
    assert entry["generation"]["guidance_scale"] == teacher["generation"]["guidance_scale"]
    assert full.generate_inputs("lcm_s2", "eval")["model"] == ["results/smoke/models/lcm"]


def test_the_efficiency_table_times_step_models_only_at_their_own_step_counts():
    """At one fixed step count for every model (metrics.efficiency.steps) the step models would repeat
    their networks' cost at a count they are never sampled at: step_latency times them instead."""
    cfg = _cfg(steps=[1, 2])
    fixed = Plan(validate_experiment(cfg | {"metrics": cfg["metrics"] | {"efficiency": {"steps": 10}}}, SCHEMA))
    step_models = {"lcm_lora_s1", "lcm_lora_s2", "teacher_s1", "teacher_s2"}
    assert step_models <= set(fixed.models)
    assert set(fixed.efficiency_models()) == set(fixed.models) - step_models
    assert set(fixed.efficiency_inputs()) == set(fixed.models) - step_models
    assert set(fixed.study("step_distill").latency_models()) == step_models | {"teacher"}
    own = Plan(validate_experiment(cfg, SCHEMA))  # steps: null, each model at its own count: every model
    assert own.metrics["efficiency"]["steps"] is None
    assert list(own.efficiency_models()) == own.models and own.efficiency_models()["teacher_s1"][1]["steps"] == 1


@pytest.mark.parametrize(("step", "models", "message"), [
    ({"teacher": "nope"}, None, "config key 'step_distill.teacher' is 'nope'"),
    ({"guidance_min": 6.0, "guidance_max": 3.0}, None, "the range is empty"),
    ({"teacher": "base_student"}, None, "'models.base_student.splits' lacks 'train'"),
])
def test_bad_settings_are_refused_naming_the_key(step, models, message):
    cfg = _cfg(steps=[1], **step)
    if models:
        cfg["models"] = cfg["models"] | models
    with pytest.raises(ConfigError, match=message):
        validate_experiment(cfg, SCHEMA)


def _table():
    rows = []
    for model, role, steps, acc, diff in (("lcm_lora_s4", "student", 4, 0.85, -0.05), ("teacher_s4", "teacher", 4, 0.9, np.nan),
                                          ("teacher", "teacher", 25, 0.9, np.nan)):
        student = role == "student"
        rows.append({"model": model, "role": role, "steps": steps, "metric": "accuracy_all", "higher_is_better": True,
                     "mean": acc, "ci_low": acc - 0.04, "ci_high": acc + 0.04, "n": 64,
                     "baseline": "teacher_s4" if student else "", "difference": diff, "diff_ci_low": diff - 0.03,
                     "diff_ci_high": diff + 0.03, "p_value": 0.01 if student else np.nan, "of_full_teacher": acc / 0.9})
        rows.append({"model": model, "role": role, "steps": steps, "metric": "latency_ms", "higher_is_better": False,
                     "mean": 10.0 * steps, "ci_low": 9.0 * steps, "ci_high": 11.0 * steps, "n": 5, "baseline": "",
                     "difference": np.nan, "diff_ci_low": np.nan, "diff_ci_high": np.nan, "p_value": np.nan,
                     "of_full_teacher": steps / 25})
    return pd.DataFrame(rows)


def test_paper_table_and_headline():
    printed = format_step_distill(_table())
    student = printed[printed["model"] == "lcm_lora_s4"].iloc[0]
    assert student["vs teacher, same steps [95% CI]"] == "-0.05 [-0.08, -0.02]" and student["p"] == "0.01"
    assert student["of full-step teacher"] == "94.4%" and student["ms / image [95% CI]"] == "40 [36, 44]"
    (line,) = step_headline(_table(), {"full_steps": 25})
    assert line == ("**lcm_lora_s4** (step distillation, 4 steps): accuracy_all 0.85 [0.81, 0.89] against the teacher at "
                    "4 steps 0.9 [0.86, 0.94]: -0.05 [-0.08, -0.02] (paired, Wilcoxon p = 0.01), 94.4% of the teacher's "
                    "at 25 steps (0.9 [0.86, 0.94]); 40 ms per image against the teacher's 40 ms.")
