import numpy as np
import pandas as pd
import pytest

from kd_core.io import write_parquet
from kd_core.metrics.classifier import CLASSIFIER_SCHEMA, paired_difference, summarize_classifiers
from kd_core.train.classifier_kd import PREDICTION_SCHEMA


def predictions(path, correct, n_train=100):
    correct = np.asarray(correct, bool)
    df = pd.DataFrame({"index": range(len(correct)), "label": "a", "predicted": np.where(correct, "a", "b"),
                       "correct": correct, "confidence": 0.9})
    write_parquet(df, path, PREDICTION_SCHEMA, "p", {"n_train": n_train - 10, "n_val": 10, "best_step": 7})
    return str(path)


def test_paired_difference_and_mcnemar():
    rng = np.random.default_rng(0)
    a = np.array([1] * 60 + [0] * 40)
    b = np.array([1] * 40 + [0] * 60)  # a is right on 20 items b misses, never the reverse
    d, lo, hi, p = paired_difference(a, b, rng, 2000)
    assert d == pytest.approx(0.2) and 0.1 < lo < 0.2 < hi < 0.3
    assert p == pytest.approx(2 * 0.5**20)  # exact two-sided binomial test on 20 discordant pairs
    assert paired_difference(a, a, rng, 100)[3] == 1.0


def test_summary_accuracy_ci_relative_and_baseline(tmp_path):
    runs = {
        "teacher": {"predictions": predictions(tmp_path / "t.parquet", [1] * 98 + [0] * 2), "data": "real", "objective": "ce"},
        "real_ce": {"predictions": predictions(tmp_path / "r.parquet", [1] * 90 + [0] * 10), "data": "real", "objective": "ce"},
        "g2_kd": {"predictions": predictions(tmp_path / "k.parquet", [1] * 81 + [0] * 19), "data": "synthetic",
                  "objective": "kd", "guidance": 2.0, "baseline": "g2_ce"},
        "g2_ce": {"predictions": predictions(tmp_path / "c.parquet", [1] * 70 + [0] * 30), "data": "synthetic",
                  "objective": "ce", "guidance": 2.0},
    }
    out = summarize_classifiers(runs, tmp_path / "s.parquet", n_boot=500).set_index("run")
    assert list(pd.read_parquet(tmp_path / "s.parquet").columns) == CLASSIFIER_SCHEMA.names
    assert out.loc["g2_kd", "accuracy"] == pytest.approx(0.81) and out.loc["g2_kd", "relative_to_real"] == pytest.approx(0.9)
    assert out.loc["g2_kd", "ci_low"] < 0.81 < out.loc["g2_kd", "ci_high"]
    assert out.loc["g2_kd", "difference"] == pytest.approx(0.11) and out.loc["g2_kd", "diff_ci_low"] > 0
    assert out.loc["g2_kd", "n_train"] == 100 and out.loc["g2_kd", "best_step"] == 7
    assert out.loc["g2_ce", "baseline"] == "" and np.isnan(out.loc["g2_ce", "difference"])
    assert np.isnan(out.loc["teacher", "guidance"])


def test_runs_on_different_test_sets_are_refused(tmp_path):
    runs = {"a": {"predictions": predictions(tmp_path / "a.parquet", [1, 0]), "data": "real", "objective": "ce"},
            "b": {"predictions": predictions(tmp_path / "b.parquet", [1, 0, 1]), "data": "real", "objective": "ce"}}
    with pytest.raises(ValueError, match="different test sets"):
        summarize_classifiers(runs)
