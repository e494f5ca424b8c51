"""``steps=None`` meant two things: ``MetaLearner.score`` reads it as the algorithm's own adaptation_steps,
while ``AdaptingScorer`` (built with adaptation_steps=0) silently read it as 0 steps. The evaluation's scorer
now takes an explicit step count and refuses None; the numbers for an explicit count are unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarec_dist.eval.protocol import AdaptingScorer, FusedScorer
from metarec_dist.metrics.cooccurrence import ItemCooccurrence
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.tasks.sampler import prefix_batch
from metarec_dist.tasks.types import bos_id


@pytest.fixture
def scorer_and_batch(tiny_cfg, synth_data):
    torch.manual_seed(0)
    model = SeqRecommender(tiny_cfg.model, synth_data.num_items).eval()
    batch = prefix_batch(synth_data.valid[:4], 3, tiny_cfg.tasks.support_max, bos_id(synth_data.num_items))
    return AdaptingScorer(model, "fomaml", 0.3), batch


def test_adapting_scorer_refuses_steps_none(scorer_and_batch):
    scorer, batch = scorer_and_batch
    with pytest.raises(TypeError, match="adaptation steps as an int"):
        scorer.score(batch, None)
    with pytest.raises(TypeError, match="adaptation steps as an int"):
        scorer.score_chunks(batch, None, lambda score_range: None)
    with pytest.raises(TypeError):
        scorer.score(batch)  # no default: every caller says how many steps


def test_explicit_steps_score_as_before(scorer_and_batch, synth_data):
    scorer, batch = scorer_and_batch
    with torch.no_grad():
        zero, two = scorer.score(batch, 0), scorer.score(batch, np.int64(2))  # numpy counts are counts
        torch.testing.assert_close(zero, scorer.learner.score(batch, 0), atol=0, rtol=0)
        torch.testing.assert_close(two, scorer.learner.score(batch, 2), atol=0, rtol=0)
        assert not torch.allclose(zero, two)
        chunks: list[torch.Tensor] = []
        scorer.score_chunks(batch, 2, lambda score_range: chunks.append(score_range(0, zero.shape[1])))
        torch.testing.assert_close(chunks[0], two)
        cooc = ItemCooccurrence(synth_data.train, synth_data.num_items, horizon=5)
        with pytest.raises(TypeError):
            FusedScorer(scorer, cooc, 0.5).score(batch, None)
