"""The step-distillation figures draw what the table holds."""

import numpy as np
import pandas as pd
import pytest

from kd_core.errors import KDError
from kd_core.figures.step_distill import latency_plot, quality_metric, steps_plot


def _table():
    rows = []
    for role, model, steps, acc, ms in (("student", "lcm_lora_s1", 1, 0.8, 40.0), ("student", "lcm_lora_s4", 4, 0.85, 110.0),
                                        ("teacher", "teacher_s1", 1, 0.3, 55.0), ("teacher", "teacher_s4", 4, 0.9, 160.0),
                                        ("teacher", "teacher", 25, 0.9, 900.0)):
        rows.append({"model": model, "role": role, "steps": steps, "metric": "accuracy_all", "mean": acc,
                     "ci_low": acc - 0.05, "ci_high": acc + 0.05})
        rows.append({"model": model, "role": role, "steps": steps, "metric": "latency_ms", "mean": ms,
                     "ci_low": ms * 0.9, "ci_high": ms * 1.1})
    return pd.DataFrame(rows)


def test_quality_against_steps(tmp_path):
    fig = steps_plot(_table(), tmp_path / "steps.png", full_steps=25)
    assert (tmp_path / "steps.png").stat().st_size > 0 and (tmp_path / "steps.pdf").is_file()
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    student = lines["lcm_lora (LCMScheduler)"]
    assert list(student.get_xdata()) == [1, 4] and list(student.get_ydata()) == [0.8, 0.85]
    assert list(lines["teacher (its own scheduler)"].get_ydata()) == [0.3, 0.9]
    assert list(lines["teacher, 25 steps"].get_ydata()) == [0.9, 0.9]  # the full-step teacher's line


def test_quality_against_latency(tmp_path):
    fig = latency_plot(_table(), tmp_path / "latency.png")
    (ax,) = fig.axes
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["1", "1", "25", "4", "4"]  # every pair, labelled by its steps
    assert ax.get_xscale() == "log"


def test_the_quality_measure_is_the_first_the_table_has():
    t = _table()
    assert quality_metric(t) == "accuracy_all"
    assert quality_metric(t.assign(metric=np.where(t["metric"] == "accuracy_all", "ssim", t["metric"]))) == "ssim"
    with pytest.raises(KDError, match="none of the quality measures"):
        quality_metric(t[t["metric"] == "latency_ms"])
