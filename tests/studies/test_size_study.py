"""The model-size study's paper headline."""

import numpy as np
import pandas as pd

from kd_core.studies.size_study import size_headline


def test_size_headline_says_how_the_students_began_and_their_accuracy():
    df = pd.DataFrame({"model": ["teacher", "w0p5", "w1"], "factor": [1.0, 0.5, 1.0], "mse_teacher": [0, 0.2, 0.01],
                       "latency_per_image_ms": [9.0, 5.0, 9.0], "accuracy": [0.9, 0.4, 0.85],
                       "accuracy_ci_low": [0.8, 0.3, 0.75], "accuracy_ci_high": [0.95, 0.5, 0.9]})
    meta = {"init": "teacher", "spearman_width_vs_accuracy": 1.0, "spearman_width_vs_accuracy_p": 1.0,
            "spearman_width_vs_mse_teacher": -1.0, "spearman_width_vs_mse_teacher_p": 1.0}
    (line,) = size_headline(df, meta)
    assert line.startswith("**Model size** (2 width students, each started from the teacher's most important channels): "
                           "attribute accuracy x0.5 0.4 [0.3, 0.5], x1 0.85 [0.75, 0.9] (teacher 0.9) "
                           "(Spearman width vs accuracy +1.00, p = 1); noise-prediction MSE")
    (random_line,) = size_headline(df.assign(accuracy=np.nan), {**meta, "init": "random"})
    assert "each started from random weights): noise-prediction MSE" in random_line
