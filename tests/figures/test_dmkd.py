import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

from kd_core.errors import KDError
from kd_core.figures.dmkd import accuracy_figure, curves_figure
from kd_core.io import write_parquet
from kd_core.metrics.dmkd import DMKD_SCHEMA
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
    write_parquet(table(), tmp_path / "t.parquet", DMKD_SCHEMA, "t")
    fig = accuracy_figure(tmp_path / "t.parquet", tmp_path / "acc.png")
    assert (tmp_path / "acc.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "acc.pdf").read_bytes()[:4] == b"%PDF"
    bars, guidance, size = fig.axes
    full = table()[~table()["run"].str.contains("_f")]
    assert [t.get_text() for t in bars.get_yticklabels()] == list(full["run"])  # a bar per run at its seed mean
    assert [p.get_width() for p in bars.patches] == pytest.approx(list(full["accuracy"]))
    dots = [c for c in bars.collections if isinstance(c, PathCollection)]  # one dot per seed on every bar
    assert len(dots) == len(full) and all(len(c.get_offsets()) == 3 for c in dots)
    assert guidance.get_title() == "Accuracy against guidance" and size.get_title() == "Accuracy against synthetic-set size"
    kd = [c for c in guidance.containers if c.get_label() == "KD (teacher soft labels)"]
    assert len(kd) == 1 and list(kd[0].lines[0].get_xdata()) == [1.0, 2.0] and list(kd[0].lines[0].get_ydata()) == [0.9, 0.9]
    assert [line.get_ydata()[0] for line in guidance.get_lines() if line.get_label() == "student on real images"] == [0.97]
    rows = [{"step": s, "epoch": s // 2, "split": split, "term": term, "value": v}
            for s in range(1, 7) for split, term, v in (("train", "loss", 1 / s), ("val", "accuracy", 0.5), ("test", "accuracy", 0.6))]
    write_parquet(pd.DataFrame(rows), tmp_path / "loss.parquet", LOSS_SCHEMA, "l")
    curves = curves_figure({"g1_kd": tmp_path / "loss.parquet", "teacher": tmp_path / "loss.parquet"}, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    loss_ax, acc_ax = curves.axes
    assert [line.get_label() for line in loss_ax.get_lines()] == ["g1_kd", "teacher"]
    # the training loss as epoch means (epoch = step // 2 here), plotted at epochs 1..4
    assert list(loss_ax.get_lines()[0].get_xdata()) == [1, 2, 3, 4]
    assert list(loss_ax.get_lines()[0].get_ydata()) == pytest.approx([1.0, (1 / 2 + 1 / 3) / 2, (1 / 4 + 1 / 5) / 2, 1 / 6])
    assert [line.get_label() for line in acc_ax.get_lines()][:2] == ["g1_kd (validation)", "g1_kd (real test)"]
    with pytest.raises(KDError):
        curves_figure({}, tmp_path / "none.png")
