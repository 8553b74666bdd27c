import numpy as np
import pandas as pd
import pytest

from kd_core.io import write_parquet
from kd_core.metrics.bootstrap import percentile_interval, two_level_means
from kd_core.metrics.dmkd import (
    DMKD_SCHEMA,
    paired_difference,
    paired_seed_difference,
    summarize_dmkd,
)
from kd_core.train.classifier import PREDICTION_SCHEMA


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
    out = summarize_dmkd(runs, tmp_path / "s.parquet", n_boot=500).set_index("run")
    assert list(pd.read_parquet(tmp_path / "s.parquet").columns) == DMKD_SCHEMA.names
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
        summarize_dmkd(runs)


def test_two_level_bootstrap_widens_with_seed_spread():
    rng = np.random.default_rng(0)
    items = (rng.random(400) < 0.8).astype(float)
    same = np.stack([items] * 3)  # three seeds that agree on every item: only the items vary
    spread = np.stack([items, items * (rng.random(400) < 0.8), np.maximum(items, rng.random(400) < 0.5)])
    lo1, hi1 = percentile_interval(two_level_means(same, rng, 2000))
    lo2, hi2 = percentile_interval(two_level_means(spread, rng, 2000))
    assert lo1 < items.mean() < hi1 and hi1 - lo1 < 0.1
    assert hi2 - lo2 > 1.5 * (hi1 - lo1)  # the seeds' disagreement widens the interval
    one = two_level_means(items[None], rng, 2000)
    assert one.std() == pytest.approx(items.std() / np.sqrt(400), rel=0.15)  # one row: the plain bootstrap


def test_seed_paired_difference():
    rng = np.random.default_rng(0)
    a = np.array([[1] * 60 + [0] * 40, [1] * 62 + [0] * 38, [1] * 58 + [0] * 42])
    b = np.array([[1] * 40 + [0] * 60] * 3)
    d, lo, hi, p = paired_seed_difference(a, b, rng, 2000)
    assert d == pytest.approx(0.2) and 0.1 < lo < 0.2 < hi < 0.3 and p < 0.001
    d, lo, hi, p = paired_seed_difference(b, b, rng, 500)
    assert d == 0 and p == 1.0
    assert paired_seed_difference(a[:1], b[:1], rng, 500)[3] == pytest.approx(2 * 0.5**20)  # one seed: McNemar
    with pytest.raises(ValueError, match="different seeds"):
        paired_seed_difference(a[:2], b, rng, 100)


def test_summary_pools_seeds(tmp_path):
    def run(name, accs, **kw):
        paths = [predictions(tmp_path / f"{name}{i}.parquet", [1] * a + [0] * (100 - a)) for i, a in enumerate(accs)]
        return {"predictions": paths, "data": "synthetic", "objective": "kd", **kw}

    runs = {"real_ce": run("r", [90, 92, 94], objective="ce", data="real"),
            "g2_kd": run("k", [80, 90, 85], baseline="g2_ce"), "g2_ce": run("c", [70, 80, 75], objective="ce")}
    out = summarize_dmkd(runs, tmp_path / "s.parquet", n_boot=1000).set_index("run")
    k = out.loc["g2_kd"]
    assert k["n_seeds"] == 3 and k["accuracy"] == pytest.approx(0.85) and k["seed_sd"] == pytest.approx(0.05)
    assert list(k["seed_accuracies"]) == pytest.approx([0.8, 0.9, 0.85])
    assert k["relative_to_real"] == pytest.approx(0.85 / 0.92) and k["difference"] == pytest.approx(0.1)
    assert k["ci_low"] < 0.85 < k["ci_high"] and k["diff_ci_low"] > 0
    assert list(pd.read_parquet(tmp_path / "s.parquet")["seed_accuracies"].iloc[1]) == pytest.approx([0.8, 0.9, 0.85])
