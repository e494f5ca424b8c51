"""Percentile bootstrap confidence intervals over users.

Users are the independent unit in cold-start evaluation, so we resample users (with replacement) and
report the percentile interval of the resampled means. Resampling is vectorised through an index
matrix ``[n_boot, U]``, built in row chunks so memory stays bounded for large test sets; the result
is deterministic for a given ``seed``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bootstrap_ci", "paired_bootstrap_diff"]

# Upper bound on index-matrix elements held at once (~64 MiB of int32). Depends only on U, so the
# chunking, and hence the random stream consumed, is identical for identical inputs and seed.
_CHUNK_ELEMS = 1 << 24


def _as_values(values: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per user), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    # NaN (e.g. a user with no relevant items) would poison every resampled mean; make the caller drop it.
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; drop undefined users before bootstrapping")
    return arr


def _check_params(n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _boot_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of ``values``."""
    n = values.shape[0]
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMS // n)
    out = np.empty(n_boot, dtype=np.float64)
    idx_dtype = np.int32 if n < np.iinfo(np.int32).max else np.int64
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=idx_dtype)
        out[start:stop] = values[idx].mean(axis=1)
    return out


def _percentile_ci(values: np.ndarray, n_boot: int, alpha: float, seed: int) -> tuple[float, float, float]:
    means = _boot_means(values, n_boot, seed)
    lo, hi = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    # The point estimate is the sample mean, not the mean of the bootstrap means.
    return float(values.mean()), float(lo), float(hi)


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: sample mean of per-user ``values`` and its ``1 - alpha`` percentile CI.

    Raises ``ValueError`` on empty, non-1-D or non-finite input, ``n_boot < 1`` or ``alpha`` not in (0, 1).
    """
    _check_params(n_boot, alpha)
    return _percentile_ci(_as_values(values, "values"), n_boot, alpha, seed)


def paired_bootstrap_diff(
    a: np.ndarray, b: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean_diff, lo, hi)`` for ``mean(a) - mean(b)`` with the *same* resampled users for both.

    ``a[i]`` and ``b[i]`` must be the same user under two systems. Pairing removes between-user
    variance, so the CI is far tighter than comparing two independent CIs. Resampling user indices
    for both arrays and differencing the means equals resampling ``a - b`` (the mean is linear), which
    is what is done; identical inputs therefore give exactly ``(0.0, 0.0, 0.0)``.
    """
    _check_params(n_boot, alpha)
    a_arr, b_arr = _as_values(a, "a"), _as_values(b, "b")
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"a and b must have the same length (same users), got {a_arr.size} and {b_arr.size}")
    return _percentile_ci(a_arr - b_arr, n_boot, alpha, seed)
