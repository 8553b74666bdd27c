import numpy as np
import pandas as pd
import pytest

from kd_core.errors import KDError
from kd_core.figures.classifier_kd import accuracy_figure, curves_figure
from kd_core.io import write_parquet
from kd_core.metrics.classifier import CLASSIFIER_SCHEMA
from kd_core.train.loop import LOSS_SCHEMA


def table():
    rows = [("teacher", "real", "ce", np.nan, 1000, 0.99), ("real_ce", "real", "ce", np.nan, 1000, 0.97)]
    for g in (1.0, 2.0):
        rows += [(f"g{g:g}_kd", "synthetic", "kd", g, 400, 0.9), (f"g{g:g}_ce", "synthetic", "ce", g, 400, 0.8)]
    rows += [("g1_f10_kd", "synthetic", "kd", 1.0, 40, 0.6), ("g1_f10_ce", "synthetic", "ce", 1.0, 40, 0.5)]
    df = pd.DataFrame(rows, columns=["run", "data", "objective", "guidance", "n_train", "accuracy"])
    seeds = [[a, a - 0.01, a + 0.01] for a in df["accuracy"]]
    return df.assign(n_seeds=3, seed_sd=0.01, seed_accuracies=seeds,
                     ci_low=df["accuracy"] - 0.02, ci_high=df["accuracy"] + 0.02, n_test=500, relative_to_real=0.9,
                     baseline="", difference=np.nan, diff_ci_low=np.nan, diff_ci_high=np.nan, p_value=np.nan, best_step=1)


def test_accuracy_and_curve_figures_are_written(tmp_path):
    write_parquet(table(), tmp_path / "t.parquet", CLASSIFIER_SCHEMA, "t")
    accuracy_figure(tmp_path / "t.parquet", tmp_path / "acc.png")
    assert (tmp_path / "acc.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "acc.pdf").read_bytes()[:4] == b"%PDF"
    rows = [{"step": s, "epoch": s // 2, "split": split, "term": term, "value": v}
            for s in range(1, 7) for split, term, v in (("train", "loss", 1 / s), ("val", "accuracy", 0.5), ("test", "accuracy", 0.6))]
    write_parquet(pd.DataFrame(rows), tmp_path / "loss.parquet", LOSS_SCHEMA, "l")
    curves_figure({"g1_kd": tmp_path / "loss.parquet", "teacher": tmp_path / "loss.parquet"}, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    with pytest.raises(KDError):
        curves_figure({}, tmp_path / "none.png")
