"""Percentile-bootstrap CI checks."""

from __future__ import annotations

import numpy as np
import pytest

from metarec_dist.metrics import bootstrap
from metarec_dist.metrics.bootstrap import bootstrap_ci, paired_bootstrap_diff


def _normal(n: int, seed: int = 123) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.3, 1.0, size=n)


def test_ci_contains_mean() -> None:
    vals = _normal(200)
    mean, lo, hi = bootstrap_ci(vals)
    assert mean == pytest.approx(vals.mean())
    assert lo < mean < hi


def test_ci_width_matches_normal_theory() -> None:
    # sd = 1, n = 400 -> 95% CI half-width ~ 1.96 / sqrt(400) = 0.098.
    _, lo, hi = bootstrap_ci(_normal(400), n_boot=2000)
    assert (hi - lo) / 2 == pytest.approx(1.96 / 20, rel=0.15)


def test_ci_narrows_with_more_users() -> None:
    _, lo_s, hi_s = bootstrap_ci(_normal(50))
    _, lo_l, hi_l = bootstrap_ci(_normal(5000))
    assert (hi_l - lo_l) < 0.2 * (hi_s - lo_s)  # sqrt(100) = 10x narrower in theory


def test_constant_values_give_degenerate_ci() -> None:
    assert bootstrap_ci(np.full(10, 0.25)) == (0.25, 0.25, 0.25)
    assert bootstrap_ci(np.array([0.7])) == pytest.approx((0.7, 0.7, 0.7))


def test_deterministic_under_seed() -> None:
    vals = _normal(100)
    assert bootstrap_ci(vals, seed=7) == bootstrap_ci(vals, seed=7)
    assert bootstrap_ci(vals, seed=7) != bootstrap_ci(vals, seed=8)
    b = _normal(100, seed=5)
    assert paired_bootstrap_diff(vals, b, seed=3) == paired_bootstrap_diff(vals, b, seed=3)


def test_chunked_resampling_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    # Force many small chunks of the index matrix; the CI must stay sane and deterministic.
    vals = _normal(300)
    monkeypatch.setattr(bootstrap, "_CHUNK_ELEMS", 1000)
    first = bootstrap_ci(vals, n_boot=500)
    assert first == bootstrap_ci(vals, n_boot=500)
    mean, lo, hi = first
    assert lo < mean < hi and (hi - lo) / 2 == pytest.approx(1.96 / np.sqrt(300), rel=0.25)


def test_paired_identical_is_exactly_zero() -> None:
    vals = _normal(100)
    assert paired_bootstrap_diff(vals, vals.copy()) == (0.0, 0.0, 0.0)


def test_paired_constant_shift() -> None:
    b = _normal(100)
    diff, lo, hi = paired_bootstrap_diff(b + 0.5, b)
    assert (diff, lo, hi) == pytest.approx((0.5, 0.5, 0.5))


def test_paired_tighter_than_unpaired() -> None:
    # Large shared per-user effect, small system difference: pairing must cancel the user effect.
    base = _normal(300) * 5
    a = base + 0.1 + np.random.default_rng(1).normal(0, 0.05, 300)
    _, lo, hi = paired_bootstrap_diff(a, base)
    _, lo_a, hi_a = bootstrap_ci(a)
    assert lo > 0.0
    assert (hi - lo) < 0.05 * (hi_a - lo_a)


@pytest.mark.parametrize(
    "values",
    [np.array([]), np.zeros((3, 2)), np.array([0.1, np.nan]), np.array([np.inf, 1.0])],
)
def test_bad_values_rejected(values: np.ndarray) -> None:
    with pytest.raises(ValueError):
        bootstrap_ci(values)


@pytest.mark.parametrize("kwargs", [{"n_boot": 0}, {"alpha": 0.0}, {"alpha": 1.0}])
def test_bad_params_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        bootstrap_ci(np.ones(5), **kwargs)  # type: ignore[arg-type]


def test_paired_rejects_mismatch_and_empty() -> None:
    with pytest.raises(ValueError):
        paired_bootstrap_diff(np.ones(5), np.ones(4))
    with pytest.raises(ValueError):
        paired_bootstrap_diff(np.array([]), np.array([]))
