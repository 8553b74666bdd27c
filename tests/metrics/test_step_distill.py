"""The step-distillation table from per-image tables whose answer is known, and the interleaved latency."""

import numpy as np
import pandas as pd
import pytest

from kd_core.generate import GenerationConfig
from kd_core.metrics.step_distill import step_distill_summary
from kd_core.metrics.step_latency import step_latency

N = 40


def _tables(tmp_path):
    """Attribute accuracy per image: the student at 4 steps right on images 0..29, the teacher at 4 steps
    on 0..19 (so the paired difference is exactly +10/40), the full teacher on 0..35; an SSIM to the
    full teacher of 0.5 (student) and 0.8 (teacher at 4 steps) on every image."""
    right = {"lcm_lora_s4": 30, "teacher_s4": 20, "teacher": 36}
    attributes, pairwise = [], []
    for model, k in right.items():
        a = pd.DataFrame({"model": model, "split": "eval", "prompt_id": np.arange(N), "seed": 0, "attribute": "shape",
                          "predicted": "x", "expected": "x", "correct": np.arange(N) < k})
        attributes.append(tmp_path / f"attr_{model}.parquet")
        a.to_parquet(attributes[-1])
    for model, v in (("lcm_lora_s4", 0.5), ("teacher_s4", 0.8)):
        p = pd.DataFrame({"model": model, "split": "eval", "prompt_id": np.arange(N), "seed": 0, "metric": "ssim",
                          "value": v, "reference": "teacher"})
        pairwise.append(tmp_path / f"pair_{model}.parquet")
        p.to_parquet(pairwise[-1])
    latency = tmp_path / "latency.parquet"
    pd.DataFrame({"model": ["teacher", "teacher_s4", "lcm_lora_s4"], "steps": [25, 4, 4], "latency_ms": [100.0, 20.0, 10.0],
                  "ci_low": [90.0, 18.0, 9.0], "ci_high": [110.0, 22.0, 11.0], "ratio_teacher": [1.0, 0.2, 0.1],
                  "ratio_ci_low": [1.0, 0.18, 0.09], "ratio_ci_high": [1.0, 0.22, 0.11], "rounds": 5, "device": "cpu",
                  "dtype": "float32"}).to_parquet(latency)
    return attributes, pairwise, latency


def test_the_table_pairs_the_student_with_the_teacher_at_its_steps(tmp_path):
    attributes, pairwise, latency = _tables(tmp_path)
    t = step_distill_summary({"lcm_lora_s4": 4}, {"teacher_s4": 4}, "teacher", 25, pairwise, attributes, [], latency,
                             out_path=tmp_path / "out.parquet", n_boot=500)
    row = t[(t["model"] == "lcm_lora_s4") & (t["metric"] == "accuracy_all")].iloc[0]
    assert row["role"] == "student" and row["steps"] == 4 and row["mean"] == pytest.approx(0.75)
    assert row["baseline"] == "teacher_s4" and row["difference"] == pytest.approx(0.25)
    assert row["diff_ci_low"] > 0 and row["p_value"] < 0.01  # ten images better, none worse
    assert row["of_full_teacher"] == pytest.approx(0.75 / 0.9)
    ssim = t[(t["model"] == "lcm_lora_s4") & (t["metric"] == "ssim")].iloc[0]
    assert ssim["difference"] == pytest.approx(-0.3)
    full = t[(t["model"] == "teacher") & (t["metric"] == "accuracy_all")].iloc[0]
    assert full["role"] == "teacher" and full["steps"] == 25 and full["baseline"] == "" and np.isnan(full["difference"])
    lat = t[(t["model"] == "lcm_lora_s4") & (t["metric"] == "latency_ms")].iloc[0]
    assert lat["mean"] == 10.0 and lat["of_full_teacher"] == pytest.approx(0.1) and not lat["higher_is_better"]
    assert pd.read_parquet(tmp_path / "out.parquet").equals(t)


def test_latency_of_every_pair_interleaved(tiny_sd, tmp_path):
    g = {"steps": 2, "resolution": 64, "device": "cpu", "guidance_scale": 1.0}
    models = {"teacher": (str(tiny_sd), GenerationConfig(**{**g, "steps": 4})),
              "teacher_s2": (str(tiny_sd), GenerationConfig(**g)),
              "lcm_s2": (str(tiny_sd), GenerationConfig(**g, scheduler="lcm"))}
    t = step_latency(models, "teacher", rounds=4, warmup=1, out_path=tmp_path / "lat.parquet").set_index("model")
    assert list(t.index) == ["teacher", "teacher_s2", "lcm_s2"] and (t["rounds"] == 4).all()
    assert t.loc["teacher", "ratio_teacher"] == 1.0 and (t["ci_low"] <= t["latency_ms"]).all()
    assert t.loc["teacher_s2", "steps"] == 2 and t.loc["teacher", "steps"] == 4  # each pair at its own step count
    with pytest.raises(ValueError, match="reference model 'nope'"):
        step_latency(models, "nope")
