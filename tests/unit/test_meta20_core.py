"""Edge cases of the meta-learning core found in a correctness pass (meta20)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarec_dist.config import MetaConfig
from metarec_dist.meta import ALGORITHMS, build_algorithm
from metarec_dist.meta.reference import loop_meta_loss
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.tasks.sampler import TaskSampler, prefix_batch, rank_seed, shared_seed
from metarec_dist.tasks.types import bos_id


def _model_and_batch(tiny_cfg, synth_data, dtype=torch.float64):
    tiny_cfg.model.adapters = ["lowrank", "film", "bias", "itemlr"]
    torch.manual_seed(0)
    model = SeqRecommender(tiny_cfg.model, synth_data.num_items).to(dtype)
    with torch.no_grad():
        model.fast_init.add_(0.05 * torch.randn_like(model.fast_init))
    batch = TaskSampler(synth_data.train, tiny_cfg.tasks, synth_data.num_items, seed=3).sample(6)
    return model, batch


def _grads(model, algo):
    named = [*model.named_parameters(), *algo.named_parameters(prefix="algorithm")]
    return {n: p.grad.clone() for n, p in named if p.grad is not None}


@pytest.mark.parametrize("algorithm", ["metasgd", "hypermetasgd"])
def test_meta_sgd_with_a_zero_rate_is_finite_and_matches_the_reference(tiny_cfg, synth_data, algorithm):
    """A learned rate that underflows to 0 (exp of a very negative log scale; in fp16 from about -17) froze
    its weight in the inner loop; the straight-through step divided by it, so the loss and every gradient
    were NaN. Now: the loss and gradients of the per-task reference, the frozen rates' gradient 0."""
    model, batch = _model_and_batch(tiny_cfg, synth_data)
    algo = build_algorithm(MetaConfig(algorithm=algorithm, inner_lr=0.3, adaptation_steps=2), model).double()
    frozen = torch.zeros(model.head.size, dtype=torch.bool)
    frozen[::3] = True
    with torch.no_grad():
        algo.inner_lr_log_scale.copy_(0.3 * torch.randn_like(algo.inner_lr_log_scale))
        algo.inner_lr_log_scale.masked_fill_(frozen, -1e4)  # exp(-1e4) = 0: rate exactly 0
    assert (algo.inner_lrs()[frozen] == 0).all()
    out = algo.meta_loss(model, batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    batched = _grads(model, algo)
    model.zero_grad()
    algo.zero_grad()
    context = getattr(algo, "context", None)
    ref = loop_meta_loss(model, batch, algorithm, 2, algo.inner_lrs(), context=context)
    ref.backward()
    reference = _grads(model, algo)
    torch.testing.assert_close(out.loss.detach(), ref.detach(), atol=1e-10, rtol=1e-10)
    assert batched.keys() == reference.keys()
    for name in reference:
        assert torch.isfinite(batched[name]).all(), name
        torch.testing.assert_close(batched[name], reference[name], atol=1e-8, rtol=1e-6, msg=name)
    rates = batched["algorithm.inner_lr_log_scale"]
    assert (rates[frozen] == 0).all() and rates[~frozen].abs().max() > 0


def test_meta_sgd_in_fp16_with_a_tiny_inner_lr_is_finite(tiny_cfg, synth_data):
    """In fp16 (runtime.precision=fp16 runs the algorithm's parameters in half) an inner_lr below fp16's
    smallest number (6e-8) is a rate of 0 for every weight: the loss was NaN; now it is the loss at the
    un-adapted weights (no weight moved), as FOMAML's with the same rate."""
    model, batch = _model_and_batch(tiny_cfg, synth_data, torch.float16)
    meta = MetaConfig(algorithm="metasgd", inner_lr=1e-8, adaptation_steps=2)
    algo = build_algorithm(meta, model).half()
    assert (algo.inner_lrs() == 0).all()
    out = algo.meta_loss(model, batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grads = [p.grad for p in [*model.parameters(), *algo.parameters()] if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    fomaml = build_algorithm(MetaConfig(algorithm="fomaml", inner_lr=0.0, adaptation_steps=2), model)
    torch.testing.assert_close(out.loss, fomaml.meta_loss(model, batch).loss)


def test_a_support_longer_than_the_window_is_an_error_not_a_shifted_layout():
    """``prefix_batch`` with more shots than ``support_max`` laid out [s_3 .. s_8] with no BOS and a support
    target for every position (the layout the model never saw); now a clear error."""
    items = np.arange(1, 9)
    with pytest.raises(ValueError, match=r"support of 8 items does not fit the window of support_max=5"):
        prefix_batch([items], 8, 5, bos_id(40))
    fits = prefix_batch([items[:3], items], 5, 5, bos_id(40))  # shots caps each user's support
    assert fits.item_ids.tolist() == [[0, 0, 41, 1, 2, 3], [41, 1, 2, 3, 4, 5]]
    assert fits.support_targets.tolist() == [[0, 0, 1, 2, 3], [1, 2, 3, 4, 5]]


def test_ranks_resuming_from_a_one_stream_state_keep_shared_negatives(tiny_cfg, synth_data):
    """A multi-rank checkpoint written before each rank had its own task stream gives every rank the one
    saved state (checkpoint.py, ``_load_rank_parts``), which has no shared-negatives stream: loading it was a
    KeyError trace. Now each rank resumes its task stream from it and the ranks still share negatives."""
    one = TaskSampler(synth_data.train, tiny_cfg.tasks, synth_data.num_items, seed=4, num_negatives=5)
    one.sample_arrays(8)
    saved = one.state_dict()
    assert "negatives_rng" not in saved

    def rank(r: int) -> TaskSampler:
        mine = synth_data.train[r::2]
        return TaskSampler(
            mine,
            tiny_cfg.tasks,
            synth_data.num_items,
            rank_seed(4, r, 2),
            5,
            rank=r,
            world_size=2,
            negatives_seed=shared_seed(4),
        )

    ranks = [rank(0), rank(1)]
    for s in ranks:
        s.load_state_dict(saved)
        assert s.num_sampled == 8
    drawn = [s.sample_arrays(4) for s in ranks]
    np.testing.assert_array_equal(drawn[0]["negatives"], drawn[1]["negatives"])
    assert drawn[0]["task_ids"].tolist() == [16, 18, 20, 22]


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_matches_the_reference_on_short_users_prefix_windows_and_all_adapters(
    tiny_cfg, synth_data, algorithm
):
    """The less-tested corner at once: users with 2 interactions (support 1, query 1 then masked) beside
    whole ones, ``tasks.window=prefix``, all four adapters, and every option the algorithm takes (dense
    term, query loss at the init), sampled softmax: batched gradients equal the per-task reference's."""
    tiny_cfg.model.loss = "sampled"
    tiny_cfg.tasks.window = "prefix"
    tiny_cfg.model.adapters = ["lowrank", "film", "bias", "itemlr"]
    torch.manual_seed(0)
    model = SeqRecommender(tiny_cfg.model, synth_data.num_items).double()
    with torch.no_grad():
        model.fast_init.add_(0.05 * torch.randn_like(model.fast_init))
    seqs = [s[:2] if i % 2 else s for i, s in enumerate(synth_data.train)]
    batch = TaskSampler(seqs, tiny_cfg.tasks, synth_data.num_items, seed=3, num_negatives=8).sample(8)
    query_lens = (batch.query_targets > 0).sum(1)
    assert (query_lens == 1).any() and (query_lens == tiny_cfg.tasks.query_size).any()
    options = ALGORITHMS[algorithm].options
    opts = {k: v for k, v in (("dense_weight", 0.7), ("init_query_weight", 0.3)) if k in options}
    meta = MetaConfig(algorithm=algorithm, inner_lr=0.3, adaptation_steps=2, **opts)
    algo = build_algorithm(meta, model).double()
    with torch.no_grad():
        if hasattr(algo, "inner_lr_log_scale"):
            algo.inner_lr_log_scale.copy_(0.3 * torch.randn_like(algo.inner_lr_log_scale))
        if hasattr(algo, "context"):
            algo.context.out.weight.normal_(0.0, 0.1)
    algo.meta_loss(model, batch).loss.backward()
    batched = _grads(model, algo)
    model.zero_grad()
    algo.zero_grad()
    context = getattr(algo, "context", None)
    loop_meta_loss(model, batch, algorithm, 2, algo.inner_lrs(), context=context, **opts).backward()
    reference = _grads(model, algo)
    assert batched.keys() == reference.keys() and "backbone.h.0.attn.c_attn.weight" in batched
    for name in reference:
        torch.testing.assert_close(batched[name], reference[name], atol=1e-8, rtol=1e-6, msg=name)


def test_evaluation_adapts_with_dropout_off(tiny_cfg, synth_data):
    """With model.dropout > 0 the scorer the evaluation uses (eval mode) adapts and scores deterministically,
    exactly as the same weights without dropout; in train mode the same call is noisy (so dropout is on)."""
    from metarec_dist.eval.protocol import AdaptingScorer

    def scorer(dropout: float, state=None) -> AdaptingScorer:
        tiny_cfg.model.dropout = dropout
        torch.manual_seed(0)
        model = SeqRecommender(tiny_cfg.model, synth_data.num_items)
        if state is not None:
            model.load_state_dict(state)
        return AdaptingScorer(model, "fomaml", 0.3)

    noisy = scorer(0.3)
    plain = scorer(0.0, noisy.learner.model.state_dict())
    batch = prefix_batch(synth_data.valid[:6], 3, tiny_cfg.tasks.support_max, bos_id(synth_data.num_items))
    with torch.no_grad():
        first, second = noisy.score(batch, 2), noisy.score(batch, 2)
        torch.testing.assert_close(first, second, atol=0, rtol=0)
        torch.testing.assert_close(first, plain.score(batch, 2))
        assert not torch.allclose(first, noisy.score(batch, 0))  # the 2 steps did adapt
        noisy.learner.train()
        assert not torch.allclose(noisy.score(batch, 2), noisy.score(batch, 2))


def test_training_without_an_inner_step_is_an_error_where_it_trains_another_algorithm(tiny_cfg, synth_data):
    """FOMAML with meta.adaptation_steps=0 (or inner_lr=0) trains exactly as ``none`` (same loss and
    gradients: checked here), under the name of a meta-learner; a training run now says so. The algorithms
    that still learn without a step (the generated init; no inner loop at all) and scoring are unaffected."""
    from metarec_dist.meta import check_training

    model, batch = _model_and_batch(tiny_cfg, synth_data)
    losses, grads = [], []
    for name in ("fomaml", "none"):
        model.zero_grad()
        algo = build_algorithm(MetaConfig(algorithm=name, adaptation_steps=0), model).double()
        out = algo.meta_loss(model, batch)
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append(_grads(model, algo))
    torch.testing.assert_close(losses[0], losses[1], atol=0, rtol=0)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=0, rtol=0)

    for algorithm, same in (("fomaml", "none"), ("metasgd", "none"), ("reptile", "none")):
        for key in ("adaptation_steps", "inner_lr"):
            meta = MetaConfig(algorithm=algorithm, **{key: 0})
            with pytest.raises(
                ValueError,
                match=rf"meta\.{key}=0: meta\.algorithm={algorithm} .* train meta\.algorithm={same}$",
            ):
                check_training(meta)
            build_algorithm(meta, model)  # scoring builds such an algorithm: still fine
    with pytest.raises(ValueError, match=r"train meta\.algorithm=hyperfomaml"):
        check_training(MetaConfig(algorithm="hypermetasgd", adaptation_steps=0))
    for algorithm in ("none", "sasrec", "hyperfomaml"):
        assert check_training(MetaConfig(algorithm=algorithm, adaptation_steps=0)) is ALGORITHMS[algorithm]
    assert check_training(MetaConfig(algorithm="fomaml")) is ALGORITHMS["fomaml"]
    with pytest.raises(ValueError, match=r"meta\.init_query_weight"):  # algorithm_class's checks first
        check_training(MetaConfig(algorithm="none", init_query_weight=0.5))


def test_an_evaluation_mode_table_read_ignores_the_last_training_id_dropout(tmp_path):
    """``item_id_dropout`` draws its mask in ``encode`` (training); the score table read it from the model,
    so a read in eval mode after a training forward (before any eval ``encode``) still dropped the ids."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from feature_data import feature_config
    from trained import SMALL

    from metarec_dist.data import prepare_data

    cfg = feature_config(tmp_path, SMALL)
    data = prepare_data(cfg.data).user_splits()
    cfg.model.item_id_dropout = 0.5
    torch.manual_seed(0)
    model = SeqRecommender.for_data(cfg.model, data.num_items, data.features, data.train).double()
    batch = prefix_batch(
        data.valid[:4], 3, cfg.tasks.support_max, model.bos_id, data.user_features("valid")[:4]
    )
    model.eval()
    full = model.item_table().detach().clone()
    model.train()
    model.encode(batch.item_ids, batch.attention_mask, batch.user_features)
    assert not torch.allclose(model.item_table(), full)  # in training the forward's mask drops ids
    model.eval()
    torch.testing.assert_close(model.item_table(), full, atol=0, rtol=0)
