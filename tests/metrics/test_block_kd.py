"""kd_core.metrics.block_kd: the study's table from per-image tables and the latency table."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from kd_core.metrics.block_kd import TABLE_SCHEMA, block_kd_summary
from kd_core.studies.block_kd import block_kd_headline, format_block_kd

STUDENTS = {"ssd_1b": {"level": "ssd_1b", "feature_kd": True}, "ssd_1b_nofeat": {"level": "ssd_1b", "feature_kd": False}}


def _attributes(path, model, correct):
    n = len(correct)
    pd.DataFrame({"model": model, "split": "eval", "prompt_id": np.arange(n), "seed": 0, "attribute": "shape",
                  "target": "circle", "predicted": "circle", "correct": correct}).to_parquet(path)
    return path


def _pairwise(path, model, ssim):
    n = len(ssim)
    pd.DataFrame({"model": model, "split": "eval", "prompt_id": np.arange(n), "seed": 0, "metric": "ssim",
                  "value": ssim}).to_parquet(path)
    return path


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    teacher = rng.random(n) < 0.9
    correct = {"teacher": teacher, "base_student": rng.random(n) < 0.4, "ssd_1b": teacher.copy(),
               "ssd_1b_nofeat": teacher & (np.arange(n) % 4 != 0)}  # the ablation misses a quarter of the teacher's
    attrs = [_attributes(tmp_path / f"a_{m}.parquet", m, c) for m, c in correct.items()]
    pair = [_pairwise(tmp_path / f"p_{m}.parquet", m, rng.random(n)) for m in ("base_student", "ssd_1b", "ssd_1b_nofeat")]
    lat = pd.DataFrame({"model": ["teacher", "ssd_1b", "teacher", "ssd_1b"], "factor": np.nan, "batch_size": [1, 1, 8, 8],
                        "step_ms": [20.0, 15.0, 90.0, 70.0], "ci_low": [19.0, 14.0, 85.0, 65.0], "ci_high": [21.0, 16.0, 95.0, 75.0],
                        "ratio_teacher": [1.0, 0.75, 1.0, 0.78], "ratio_ci_low": [1.0, 0.7, 1.0, 0.7],
                        "ratio_ci_high": [1.0, 0.8, 1.0, 0.8], "gflops": [0.2, 0.15, 1.6, 1.2], "params": [100, 70, 100, 70],
                        "rounds": 20, "device": "cpu", "dtype": "float32"})
    lat.to_parquet(tmp_path / "lat.parquet")
    out = tmp_path / "block_kd.parquet"
    return block_kd_summary(STUDENTS, "teacher", "base_student", pair, attrs, [], tmp_path / "lat.parquet", out,
                            n_boot=200), correct, out


def test_each_student_against_the_teacher_the_base_student_and_its_ablation(table):
    df, correct, out = table
    assert pq.read_schema(out).names == TABLE_SCHEMA.names
    acc = df[df["metric"] == "accuracy_all"].set_index(["model", "baseline"])
    assert acc.loc[("teacher", ""), "mean"] == pytest.approx(correct["teacher"].mean())
    # paired differences: to the teacher, the base student, and (with feature KD only) the ablation
    assert set(acc.loc["ssd_1b"].index) == {"", "teacher", "base_student", "ssd_1b_nofeat"}
    assert set(acc.loc["ssd_1b_nofeat"].index) == {"", "teacher", "base_student"}
    assert acc.loc[("ssd_1b", "teacher"), "difference"] == 0.0
    d = acc.loc[("ssd_1b", "ssd_1b_nofeat")]
    assert d["difference"] == pytest.approx((correct["ssd_1b"].astype(float) - correct["ssd_1b_nofeat"]).mean())
    assert 0 < d["diff_ci_low"] <= d["difference"] <= d["diff_ci_high"]
    assert acc.loc[("ssd_1b", "base_student"), "difference"] == pytest.approx(
        correct["ssd_1b"].mean() - correct["base_student"].mean())
    # cost: the smallest batch timed; the ablation has its level's architecture; no latency for the base student
    cost = df[df["metric"].isin(["params", "step_ms", "step_ms_ratio_teacher"])].set_index(["model", "metric"])
    assert cost.loc[("ssd_1b_nofeat", "step_ms"), "mean"] == cost.loc[("ssd_1b", "step_ms"), "mean"] == 15.0
    assert cost.loc[("ssd_1b", "step_ms_ratio_teacher"), ["mean", "ci_low", "ci_high"]].tolist() == [0.75, 0.7, 0.8]
    assert cost.loc[("ssd_1b", "step_ms_ratio_teacher"), "baseline"] == "teacher"
    assert ("teacher", "step_ms_ratio_teacher") not in cost.index and "base_student" not in cost.index.get_level_values(0)
    assert df.set_index("model")["level"].to_dict()["ssd_1b_nofeat"] == "ssd_1b"


def test_the_paper_prints_one_row_per_model_and_a_sentence_per_student(table):
    df, _, _ = table
    printed = format_block_kd(df).set_index("model")
    assert list(printed.index) == ["teacher", "base_student", "ssd_1b", "ssd_1b_nofeat"]
    assert printed.loc["ssd_1b", "vs teacher [95% CI]"].startswith("+0 [+0, +0]")
    assert printed.loc["ssd_1b_nofeat", "vs without feature KD [95% CI]"] == ""
    assert printed.loc["ssd_1b", "x teacher's latency [95% CI]"] == "0.75 [0.7, 0.8]"
    lines = block_kd_headline(df, {"teacher": "teacher", "base": "base_student"})
    assert len(lines) == 2 and lines[0].startswith("**ssd_1b** (block distillation): accuracy_all")
    assert lines[0].index("against teacher") < lines[0].index("against base_student") < lines[0].index("against ssd_1b_nofeat")
    assert "70% of the teacher's U-Net parameters" in lines[0] and "(x0.75 [0.70, 0.80])" in lines[0]
    assert "(block distillation, ssd_1b without feature KD)" in lines[1]
