"""Percentile bootstrap confidence interval of a mean (Efron & Tibshirani 1993). Kept free of
other kd_core imports so that modules using it do not rerun when the metric code changes."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(x: np.ndarray, rng: np.random.Generator, n_boot: int = 5000, level: float = 0.95,
                 stat=np.mean) -> tuple[float, float]:
    """Percentile interval of ``stat`` (the mean; e.g. ``np.median``) of ``x`` over ``n_boot`` resamples with replacement."""
    means = stat(x[rng.integers(0, len(x), size=(n_boot, len(x)))], axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def two_level_means(x: np.ndarray, rng: np.random.Generator, n_boot: int = 5000, chunk: int = 500) -> np.ndarray:
    """Bootstrap means of a (runs x items) matrix, resampling runs and items independently.

    The two-stage (hierarchical) bootstrap for a score that varies both with the training seed
    (rows) and with the test item (columns), e.g. Field & Welsh (2007), "Bootstrapping clustered
    data": each resample draws the seeds with replacement and the items with replacement and
    takes the mean of the selected cells. With one row it is the ordinary bootstrap over items.
    """
    x = np.atleast_2d(np.asarray(x, dtype=float))
    s, n = x.shape
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        w_rows = rng.multinomial(s, np.full(s, 1 / s), size=b) / s
        w_items = rng.multinomial(n, np.full(n, 1 / n), size=b) / n
        out[start:start + b] = ((w_rows @ x) * w_items).sum(axis=1)
    return out


def percentile_interval(means: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))
