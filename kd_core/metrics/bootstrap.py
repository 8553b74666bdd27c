"""Percentile bootstrap confidence interval of a mean (Efron & Tibshirani 1993). Kept free of
other kd_core imports so that modules using it do not rerun when the metric code changes."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(x: np.ndarray, rng: np.random.Generator, n_boot: int = 5000, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of ``x`` over ``n_boot`` resamples with replacement."""
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))
