"""Re-training on a newer log (session 18): a quantile-bucketed float feature whose buckets moved."""

from __future__ import annotations

import logging

import torch

from metarec_dist.data.features import SPECIALS, bucket_labels
from metarec_dist.models.features import FeatureLayout, FeatureSlot
from metarec_dist.train.init_from import remap_vocabularies


def _layout(boundaries: list[float]) -> FeatureLayout:
    vocab = [*SPECIALS, *bucket_labels(boundaries)]
    return FeatureLayout(item=[FeatureSlot("year", "float", len(vocab), 1, vocab, boundaries)])


def test_moved_float_buckets_are_said_with_the_spec_that_keeps_them(caplog):
    there, here = _layout([1990.0, 2000.0]), _layout([1995.0, 2000.0])  # "< 1990" / "[1990, 2000)" moved
    name = "content.embs.0.weight"
    weights = {name: torch.arange(5.0)[:, None].repeat(1, 4)}  # the old run's rows: row r is all r
    own = {name: torch.full((5, 4), -1.0)}  # this model's fresh rows
    said: list[str] = []
    with caplog.at_level(logging.WARNING, logger="metarec"):
        fresh = remap_vocabularies("runs/old", weights, own, {"features": there.to_dict()}, here, said)
    assert weights[name][:, 0].tolist() == [0, 1, -1, -1, 4]  # PAD, UNK and ">= 2000" carried over
    assert fresh == [f"{name} (2 new values of item feature 'year')"]
    assert said == ["item feature 'year': 2 of 3 values new"]
    assert "item feature 'year' is cut into buckets at other boundaries than that run's" in caplog.text
    assert "{name: year, kind: float, boundaries: [1990, 2000]}" in caplog.text
    caplog.clear()
    weights = {name: torch.arange(5.0)[:, None].repeat(1, 4)}
    with caplog.at_level(logging.WARNING, logger="metarec"):  # the same buckets: nothing to say
        assert remap_vocabularies("runs/old", weights, own, {"features": there.to_dict()}, there, said) == []
    assert caplog.text == ""
