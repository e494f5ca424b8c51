"""The meta-step against hand-built per-task references (learn2learn-style tests)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from metarec_dist import checkpoint as ckpt
from metarec_dist.config import MetaConfig, load_config
from metarec_dist.meta import ALGORITHMS, MetaLearner, algorithm_class, build_algorithm
from metarec_dist.meta.algorithms import ALGORITHM_OPTIONS, DenseTerm, dense_targets, encode
from metarec_dist.meta.reference import adapt_one, loop_meta_loss
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.tasks.sampler import SequenceStore, TaskSampler, collate_windows
from metarec_dist.tasks.types import MetaBatch


def _algo(model, name, inner_lr, adaptation_steps, init_query_weight=0.0, dense_weight=0.0, **dense):
    meta = MetaConfig(
        algorithm=name,
        inner_lr=inner_lr,
        adaptation_steps=adaptation_steps,
        init_query_weight=init_query_weight,
        dense_weight=dense_weight,
        **dense,
    )
    return build_algorithm(meta, model).to(model.fast_init.dtype)


def _setup(tiny_cfg, synth_data, adapters=("lowrank", "bias", "itemlr"), arch="gpt2", loss="full"):
    tiny_cfg.model.adapters = list(adapters)
    tiny_cfg.model.arch = arch
    tiny_cfg.model.loss = loss
    torch.manual_seed(0)
    model = SeqRecommender(tiny_cfg.model, synth_data.num_items).double()
    # A non-trivial fast-weight init so every adapter has a gradient in the first inner step.
    with torch.no_grad():
        model.fast_init.add_(0.05 * torch.randn_like(model.fast_init))
    negatives = 16 if loss == "sampled" else 0
    sampler = TaskSampler(
        synth_data.train, tiny_cfg.tasks, synth_data.num_items, seed=3, num_negatives=negatives
    )
    return model, sampler.sample(6)


def _batch(arrays):
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    return MetaBatch(task_ids=torch.arange(len(t["item_ids"])), **t)


def _grads(model, algo=None):
    named = [*model.named_parameters(), *(algo.named_parameters(prefix="algorithm") if algo else [])]
    return {n: p.grad.clone() for n, p in named if p.grad is not None}


def _batched_and_reference_grads(model, algo, batch, algorithm, steps, **options):
    """The batched meta-step's output and gradients, then those of the per-task reference
    (``loop_meta_loss`` with ``options``, the algorithm's current inner lrs and its context encoder, if
    any) from the same weights."""
    out = algo.meta_loss(model, batch)
    out.loss.backward()
    batched = _grads(model, algo)
    model.zero_grad()
    algo.zero_grad()
    lr, context = algo.inner_lrs(), _context(algo)
    loop_meta_loss(model, batch, algorithm, steps, lr, context=context, **options).backward()
    return out, batched, _grads(model, algo)


def _assert_same_grads(batched, reference):
    assert batched.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(batched[name], reference[name], atol=1e-5, rtol=1e-5, msg=name)


def _non_uniform_rates(algo):
    """Meta-SGD's rates made non-uniform, so a wrong broadcast cannot pass, and a context encoder's output
    layer made non-zero, so the generated init differs per task and its first layer has a gradient (no-op
    for other algorithms)."""
    with torch.no_grad():
        if hasattr(algo, "inner_lr_log_scale"):
            algo.inner_lr_log_scale.copy_(0.3 * torch.randn_like(algo.inner_lr_log_scale))
        if hasattr(algo, "context"):
            algo.context.out.weight.normal_(0.0, 0.1)
            algo.context.out.bias.normal_(0.0, 0.05)


def _context(algo):
    return getattr(algo, "context", None)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
@pytest.mark.parametrize("arch,loss", [("gpt2", "full"), ("llama", "sampled")])
def test_batched_gradient_equals_per_task_reference(tiny_cfg, synth_data, algorithm, arch, loss):
    """Every registered algorithm has a per-task reference in meta/reference.py and matches it."""
    model, batch = _setup(tiny_cfg, synth_data, arch=arch, loss=loss)
    algo = _algo(model, algorithm, inner_lr=0.3, adaptation_steps=2)
    _non_uniform_rates(algo)
    _, batched, reference = _batched_and_reference_grads(model, algo, batch, algorithm, 2)
    _assert_same_grads(batched, reference)
    assert "fast_init" in batched and any(k.startswith("backbone.") for k in batched)
    assert batched["item_factors.weight"].abs().max() > 0  # the item-side adapter's slow factor learns


@pytest.mark.parametrize("algorithm,init_query_weight", [("metasgd", 0.0), ("fomaml", 0.7), ("metasgd", 0.7)])
def test_meta_sgd_and_init_query_gradients_equal_per_task_reference(
    tiny_cfg, synth_data, algorithm, init_query_weight
):
    """Meta-SGD's learned per-weight inner lr and the extra query loss at the un-adapted weights get the
    same gradients from the batched straight-through step as from the written-out per-task reference."""
    model, batch = _setup(tiny_cfg, synth_data)
    algo = _algo(model, algorithm, inner_lr=0.3, adaptation_steps=2, init_query_weight=init_query_weight)
    _non_uniform_rates(algo)
    options = {"init_query_weight": init_query_weight}
    out, batched, reference = _batched_and_reference_grads(model, algo, batch, algorithm, 2, **options)
    _assert_same_grads(batched, reference)
    learned = algorithm == "metasgd"
    assert ("algorithm.inner_lr_log_scale" in batched) == learned
    if learned:
        assert batched["algorithm.inner_lr_log_scale"].abs().max() > 0
    assert ("query_loss_at_init" in out.metrics) == (init_query_weight > 0)


@pytest.mark.parametrize(
    "algorithm,init_query_weight,dense_weight", [("fomaml", 0.0, 0.6), ("metasgd", 0.4, 1.3)]
)
def test_dense_next_item_term_gradients_equal_per_task_reference(
    tiny_cfg, synth_data, algorithm, init_query_weight, dense_weight
):
    """The combined recipe (query loss after adaptation + SASRec's loss at every window position) against
    the written-out per-task reference, on tasks that include short users with masked query positions."""
    model, batch = _setup(tiny_cfg, synth_data)
    batch.query_targets[0, 1:] = 0  # a short user's task: one query item, the rest masked
    algo = _algo(model, algorithm, 0.3, 2, init_query_weight=init_query_weight, dense_weight=dense_weight)
    _non_uniform_rates(algo)
    options = {"init_query_weight": init_query_weight, "dense_weight": dense_weight}
    out, batched, reference = _batched_and_reference_grads(model, algo, batch, algorithm, 2, **options)
    _assert_same_grads(batched, reference)
    assert "next_item_loss" in out.metrics
    # and the dense term is what it says: the sasrec loss of the same batch, weighted
    sasrec = _algo(model, "sasrec", 0.3, 2).meta_loss(model, batch).loss
    torch.testing.assert_close(out.metrics["next_item_loss"], sasrec.detach())


@pytest.mark.parametrize("algorithm", ["hyperfomaml", "hypermetasgd"])
def test_context_init_gradient_reaches_the_encoder(tiny_cfg, synth_data, algorithm):
    """The generated init is part of the initialisation: its output bias gets exactly ``fast_init``'s
    first-order gradient (both add to every task's init), and the whole encoder gets one."""
    model, batch = _setup(tiny_cfg, synth_data)
    algo = _algo(model, algorithm, inner_lr=0.3, adaptation_steps=2)
    _non_uniform_rates(algo)
    out = algo.meta_loss(model, batch)
    out.loss.backward()
    torch.testing.assert_close(algo.context.out.bias.grad, model.fast_init.grad, atol=1e-12, rtol=1e-10)
    for name, p in algo.context.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
    assert out.metrics["context_offset_norm"] > 0
    # and the init really is per task: the tasks' generated inits differ
    feats = encode(model, batch)
    w0 = algo.task_init(model, feats.support, batch.support_targets)
    assert w0.shape == (batch.num_tasks, model.head.size)
    assert (w0 - w0[:1]).abs().amax(1)[1:].min() > 0


def test_context_init_starts_exactly_where_fomaml_does(tiny_cfg, synth_data):
    """A fresh encoder's output layer is zero: the same loss and backbone/table/init gradients as FOMAML."""
    model, batch = _setup(tiny_cfg, synth_data)
    losses, grads = [], []
    for name in ("fomaml", "hyperfomaml"):
        model.zero_grad()
        out = _algo(model, name, inner_lr=0.3, adaptation_steps=2).meta_loss(model, batch)
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append(_grads(model))
    torch.testing.assert_close(losses[1], losses[0], atol=1e-12, rtol=1e-12)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-12, rtol=1e-10, msg=name)


@pytest.mark.parametrize("algorithm", ["hyperfomaml", "hypermetasgd"])
def test_context_init_is_what_evaluation_scores_from(tiny_cfg, synth_data, algorithm):
    """At test time the learner starts from the generated init too: with 0 steps the scores are those of
    ``fast_init + g(support)`` (per task, from the written-out reference), not of ``fast_init``."""
    from metarec_dist.meta.reference import context_init_one

    model, batch = _setup(tiny_cfg, synth_data)
    model.eval()
    algo = _algo(model, algorithm, inner_lr=0.3, adaptation_steps=2)
    _non_uniform_rates(algo)
    learner = MetaLearner(model, algo).eval()
    k = batch.support_len
    with torch.no_grad():
        got = learner.score(batch, 0)
        h = model.encode(batch.item_ids, batch.attention_mask)
        w0 = torch.cat(
            [
                context_init_one(model, algo.context, h[t : t + 1, :k], batch.support_targets[t : t + 1])
                for t in range(batch.num_tasks)
            ]
        )
        plain = model.score_all(h[:, k], model.fast_init.expand(batch.num_tasks, -1))
    torch.testing.assert_close(got, model.score_all(h[:, k], w0), atol=1e-10, rtol=1e-8)
    assert not torch.allclose(got, plain)


def _with_repeats(batch: MetaBatch) -> MetaBatch:
    """Plant repeats so that ``dense_exclude_seen`` has something to drop: task 1's first query item repeats
    its last support item, task 2's second query item repeats its first query item (input and target
    kept consistent: the item at position p + 1 is position p's target)."""
    k = batch.support_len  # item_ids[:, k] is the last support item, item_ids[:, k + 1 + j] query item j
    for t, src, dst in ((1, k, k + 1), (2, k + 1, k + 2)):
        item = batch.item_ids[t, src]
        batch.item_ids[t, dst] = item
        batch.query_targets[t, dst - k - 1] = item
    return batch


@pytest.mark.parametrize(
    "algorithm,weight,horizon,exclude,loss",
    [
        ("fomaml", 0.6, 3, False, "full"),
        ("metasgd", 1.3, 4, True, "full"),
        ("none", 0.8, 3, True, "full"),
        ("sasrec", 0.0, 3, True, "full"),
        ("sasrec", 0.0, 2, False, "sampled"),
        ("fomaml", 0.5, 2, True, "sampled"),
    ],
)
def test_dense_horizon_gradients_equal_per_task_reference(
    tiny_cfg, synth_data, algorithm, weight, horizon, exclude, loss
):
    """The dense all-action term (every window position predicts its next h items from its one state)
    against the reference written position by position and target by target, on tasks with a short user
    (masked query) and planted repeats."""
    model, batch = _setup(tiny_cfg, synth_data, loss=loss)
    batch = _with_repeats(batch)
    batch.query_targets[0, 1:] = 0  # a short user's task: one query item, the rest masked
    batch.item_ids[0, batch.support_len + 2 :] = 0
    batch.attention_mask[0, batch.support_len + 2 :] = 0
    opts = {"dense_horizon": horizon, "dense_exclude_seen": exclude}
    algo = _algo(model, algorithm, 0.3, 2, dense_weight=weight, **opts)
    _non_uniform_rates(algo)
    out, batched, reference = _batched_and_reference_grads(
        model, algo, batch, algorithm, 2, dense_weight=weight, **opts
    )
    _assert_same_grads(batched, reference)
    assert "next_item_loss" in out.metrics


def test_dense_targets_by_hand():
    """One task written out: [pad, BOS, a, b, a | c, d] with Kmax = 4, Q = 2."""
    bos, a, b, c, d = 9, 1, 2, 3, 4
    batch = MetaBatch(
        item_ids=torch.tensor([[0, bos, a, b, a, c, d]]),
        attention_mask=torch.tensor([[0, 1, 1, 1, 1, 1, 1]]),
        support_targets=torch.tensor([[0, a, b, a]]),
        query_targets=torch.tensor([[c, d]]),
        task_ids=torch.zeros(1, dtype=torch.long),
    )
    assert dense_targets(batch).tolist() == [[0, a, b, a, c, d]]
    sets = dense_targets(batch, horizon=3).tolist()[0]
    assert sets == [[0, 0, 0], [a, b, a], [b, a, c], [a, c, d], [c, d, 0], [d, 0, 0]]
    sets = dense_targets(batch, horizon=3, exclude_seen=True).tolist()[0]
    # at BOS the second a repeats the first; at a (read: BOS, a) the coming a is seen; at b (read a, b) too
    assert sets == [[0, 0, 0], [a, b, 0], [b, 0, c], [0, c, d], [c, d, 0], [d, 0, 0]]


def test_meta_sgd_adapts_with_the_per_weight_lr(tiny_cfg, synth_data):
    """A zero multiplier on a coordinate freezes it in the inner loop; the others move."""
    model, batch = _setup(tiny_cfg, synth_data)
    algo = _algo(model, "metasgd", inner_lr=0.3, adaptation_steps=2)
    frozen = torch.zeros(model.head.size, dtype=torch.bool)
    frozen[::2] = True
    with torch.no_grad():
        algo.inner_lr_log_scale.masked_fill_(frozen, -1e4)  # exp(-1e4) = 0: lr 0 on those weights
    feats = encode(model, batch)
    adapted, _ = algo.adapt(model, feats.support, batch.support_targets)
    moved = (adapted - model.fast_init.detach()).abs() > 0
    assert not moved[:, frozen].any()
    assert moved[:, ~frozen].any()


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_each_algorithm_rejects_the_options_it_does_not_use(algorithm):
    """An option the algorithm would silently ignore is an error naming the key; the ones it uses pass."""
    cls = ALGORITHMS[algorithm]
    values = {"dense_horizon": 3, "dense_exclude_seen": True}
    for key in ALGORITHM_OPTIONS:
        # the dense term's shape comes with its weight where the algorithm weights it
        weight = {"dense_weight": 1.0} if key in values and "dense_weight" in cls.options else {}
        meta = dataclasses.replace(MetaConfig(algorithm=algorithm), **{key: values.get(key, 0.5)}, **weight)
        if key in cls.options:
            assert algorithm_class(meta) is cls
            continue
        with pytest.raises(ValueError, match=rf"meta\.{key}: meta\.algorithm={algorithm} does not use"):
            algorithm_class(meta)
        with pytest.raises(ValueError, match=rf"meta\.{key}"):
            build_algorithm(meta, model=None)  # checked before the model is read
    assert algorithm_class(MetaConfig(algorithm=algorithm)) is cls  # defaults are always accepted


def test_options_and_capabilities_are_stated_by_the_classes():
    fomamls = {"fomaml", "metasgd", "hyperfomaml", "hypermetasgd"}
    assert {n for n, c in ALGORITHMS.items() if "init_query_weight" in c.options} == fomamls
    assert {n for n, c in ALGORITHMS.items() if "dense_weight" in c.options} == fomamls | {"none"}
    for option in ("dense_horizon", "dense_exclude_seen"):
        assert {n for n, c in ALGORITHMS.items() if option in c.options} == fomamls | {"none", "sasrec"}
    with pytest.raises(ValueError, match=r"meta\.dense_weight > 0"):
        DenseTerm(MetaConfig(algorithm="fomaml", dense_horizon=3))
    with pytest.raises(ValueError, match=r"meta\.dense_weight > 0"):  # at config time, as the CLI checks it
        algorithm_class(MetaConfig(algorithm="fomaml", dense_exclude_seen=True))
    assert algorithm_class(MetaConfig(algorithm="sasrec", dense_horizon=3)) is ALGORITHMS["sasrec"]
    with pytest.raises(ValueError, match=r"meta\.dense_horizon must be an integer >= 1"):
        MetaConfig(dense_horizon=0)
    assert {n for n, c in ALGORITHMS.items() if not c.adapts} == {"none", "sasrec"}
    with pytest.raises(ValueError, match=r"meta\.algorithm: unknown 'maml2'"):
        algorithm_class(MetaConfig(algorithm="maml2"))


def test_fomaml_gradient_matches_hand_built_autograd_reference(tiny_cfg, synth_data):
    """FOMAML's fast_init gradient = mean over tasks of d query_loss / d w at the adapted w."""
    model, batch = _setup(tiny_cfg, synth_data)
    algo = _algo(model, "fomaml", inner_lr=0.3, adaptation_steps=3)
    algo.meta_loss(model, batch).loss.backward()
    expected = torch.zeros_like(model.fast_init)
    k, q = batch.support_len, batch.query_targets.shape[1]
    for t in range(batch.num_tasks):
        one = batch.slice(t, t + 1)
        with torch.no_grad():
            h = model.encode(one.item_ids, one.attention_mask)
        w = model.fast_init.detach()[None].clone()
        for _ in range(3):  # explicit inner loop, one task
            w.requires_grad_(True)
            (g,) = torch.autograd.grad(model.task_loss(h[:, :k], w, one.support_targets).sum(), w)
            w = (w - 0.3 * g).detach()
        w.requires_grad_(True)
        (gq,) = torch.autograd.grad(model.task_loss(h[:, k : k + q], w, one.query_targets).sum(), w)
        expected += gq[0] / batch.num_tasks
    torch.testing.assert_close(model.fast_init.grad, expected, atol=1e-5, rtol=1e-5)


def test_batched_inner_loop_equals_per_task_loop(tiny_cfg, synth_data):
    model, batch = _setup(tiny_cfg, synth_data)
    algo = _algo(model, "fomaml", inner_lr=0.5, adaptation_steps=4)
    feats = encode(model, batch)
    adapted, _ = algo.adapt(model, feats.support, batch.support_targets)
    for t in range(batch.num_tasks):
        one, _ = adapt_one(model, feats.support[t : t + 1], batch.support_targets[t : t + 1], 4, 0.5)
        torch.testing.assert_close(adapted[t : t + 1], one, atol=1e-10, rtol=1e-8)


def test_reptile_update_moves_init_toward_mean_adapted_weights(tiny_cfg, synth_data):
    model, batch = _setup(tiny_cfg, synth_data)
    algo = _algo(model, "reptile", inner_lr=0.5, adaptation_steps=2)
    feats = encode(model, batch)
    adapted, _ = algo.adapt(model, feats.support, batch.support_targets)
    before = model.fast_init.detach().clone()
    eps = 0.25
    opt = torch.optim.SGD([model.fast_init], lr=eps)
    algo.meta_loss(model, batch).loss.backward()
    opt.step()
    # Reptile: phi <- phi + eps * (mean_t adapted_t - phi)
    expected = before + eps * (adapted.mean(0) - before)
    torch.testing.assert_close(model.fast_init.detach(), expected, atol=1e-10, rtol=1e-8)


def test_adaptation_lowers_support_loss(tiny_cfg, synth_data):
    model, batch = _setup(tiny_cfg, synth_data)
    out = _algo(model, "fomaml", inner_lr=0.5, adaptation_steps=5).meta_loss(model, batch)
    assert out.metrics["support_loss_after"] < out.metrics["support_loss_before"] - 1e-3


def test_no_information_leaks_from_the_future(tiny_cfg, synth_data):
    model, batch = _setup(tiny_cfg, synth_data, arch="llama")
    model.eval()
    h = model.encode(batch.item_ids, batch.attention_mask)
    changed = batch.item_ids.clone()
    cut = batch.support_len + 1  # replace every query item after q_1
    changed[:, cut:] = (changed[:, cut:] % synth_data.num_items) + 1
    h2 = model.encode(changed, batch.attention_mask)
    torch.testing.assert_close(h[:, :cut], h2[:, :cut], atol=1e-12, rtol=0)
    assert not torch.allclose(h[:, cut:], h2[:, cut:])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_padding_is_ignored(tiny_cfg, synth_data, arch):
    """The same tasks with more left padding give the same hidden states and losses."""
    tiny_cfg.model.arch = arch
    torch.manual_seed(0)
    model = SeqRecommender(tiny_cfg.model, synth_data.num_items).double().eval()
    algo = _algo(model, "fomaml", inner_lr=0.3, adaptation_steps=2)
    store = SequenceStore(synth_data.train)
    users, offsets, k = np.arange(6), np.array([0, 2, 1, 0, 3, 1]), np.array([1, 2, 3, 4, 5, 5])
    b1, b2 = (_batch(collate_windows(store, users, offsets, k, kmax, 3, model.bos_id)) for kmax in (5, 9))
    assert b2.item_ids.shape[1] == b1.item_ids.shape[1] + 4  # only the amount of left padding differs
    out1, out2 = algo.meta_loss(model, b1), algo.meta_loss(model, b2)
    torch.testing.assert_close(out1.loss, out2.loss, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(out1.metrics["support_loss_after"], out2.metrics["support_loss_after"])
    # And the pad embedding itself cannot matter.
    with torch.no_grad():
        model.item_emb.weight[0].normal_()
    torch.testing.assert_close(algo.meta_loss(model, b2).loss, out2.loss, atol=1e-10, rtol=1e-8)


def test_sampled_softmax_matches_brute_force(tiny_cfg, synth_data):
    from metarec_dist.models.losses import sampled_softmax_loss

    torch.manual_seed(0)
    h = torch.randn(2, 3, 4, dtype=torch.double)
    table = torch.randn(10, 4, dtype=torch.double)
    targets = torch.tensor([[1, 5, 0], [2, 2, 7]])
    negatives = torch.tensor([3, 5, 9])
    got = sampled_softmax_loss(h, targets, table, None, negatives)
    per_task = []
    for t in range(2):
        losses = []
        for n in range(3):
            if targets[t, n] == 0:
                continue
            cands = [int(targets[t, n])] + [int(x) for x in negatives if x != targets[t, n]]
            logits = torch.stack([h[t, n] @ table[c - 1] for c in cands])
            losses.append(-torch.log_softmax(logits, 0)[0])
        per_task.append(torch.stack(losses).mean())
    torch.testing.assert_close(got, torch.stack(per_task))


def test_meta_training_beats_no_adaptation_on_planted_structure(synth_data):
    """On users with a planted taste group, the meta-trained model's query loss after adaptation beats the
    same model without adaptation (fast weights left at their meta-learned init)."""
    from metarec_dist.data.synthetic import make_synthetic_sequences

    seqs = make_synthetic_sequences(num_users=300, num_items=60, num_groups=6, min_len=16, max_len=24, seed=0)
    cfg = load_config(
        None,
        [
            "model.hidden_size=32",
            "model.num_heads=2",
            "model.adapters=[lowrank]",
            "model.max_seq_len=24",
            "tasks.support_min=5",
            "tasks.support_max=10",
            "tasks.query_size=5",
            "meta.inner_lr=0.5",
            "meta.adaptation_steps=3",
            "meta.meta_batch_size=32",
            "optim.lr=3e-3",
        ],
    )
    torch.manual_seed(0)
    model = SeqRecommender(cfg.model, 60)
    algo = build_algorithm(cfg.meta, model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    train = TaskSampler(seqs[:250], cfg.tasks, 60, seed=0)
    for _ in range(60):  # the gap is about 0.5 from step 50 on (0.05 at step 10)
        opt.zero_grad()
        algo.meta_loss(model, train.sample(32)).loss.backward()
        opt.step()
    test = TaskSampler(seqs[250:], cfg.tasks, 60, seed=1).sample(200)
    with torch.no_grad():
        feats = encode(model, test)
        adapted, _ = algo.adapt(model, feats.support, test.support_targets)
        q_adapted = model.task_loss(feats.query, adapted, test.query_targets).mean()
        q_init = model.task_loss(feats.query, model.fast_init.expand(200, -1), test.query_targets).mean()
    assert q_adapted < q_init - 0.1, (float(q_adapted), float(q_init))
    assert np.isfinite(float(q_adapted))


@pytest.fixture(scope="module")
def metasgd_run(trained):
    return trained("meta.algorithm=metasgd")


def test_meta_sgd_rates_are_trained_checkpointed_exported_and_loaded(metasgd_run, tmp_path):
    """The rates Meta-SGD owns are optimised by the engine, saved with the checkpoint, exported beside the
    model, and loaded back: the exported learner scores exactly like the trained one."""
    from metarec_dist.eval.protocol import AdaptingScorer
    from metarec_dist.tasks.sampler import prefix_batch

    trainer, cfg = metasgd_run.trainer, metasgd_run.cfg
    trained = trainer.algorithm.inner_lr_log_scale.detach().clone()
    assert trained.abs().max() > 0  # the optimizer moved them
    assert "algorithm.inner_lr_log_scale" in trainer.engine.module.state_dict()
    exported = ckpt.load_exported(ckpt.export(metasgd_run.checkpoint, tmp_path / "export"))
    assert (tmp_path / "export" / ckpt.EXPORT_ALGORITHM).is_file()
    torch.testing.assert_close(exported.algorithm_state["inner_lr_log_scale"], trained)
    batch = prefix_batch(metasgd_run.data.valid[:4], 3, cfg.tasks.support_max, trainer.model.bos_id)
    trainer.engine.eval()
    with torch.no_grad():
        expected = trainer.engine.score(batch, None)
        scorer = AdaptingScorer(exported.model, "metasgd", cfg.meta.inner_lr, exported.algorithm_state)
        got = scorer.score(batch, cfg.meta.adaptation_steps)
        plain = MetaLearner(exported.model, build_algorithm(cfg.meta, exported.model)).eval()
        without_rates = plain.score(batch, cfg.meta.adaptation_steps)  # rates at their init: exp(0) = 1
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(without_rates, expected)  # so the loaded rates are what made them equal


def test_exported_rates_for_the_wrong_algorithm_are_an_error(metasgd_run, tmp_path):
    folder = ckpt.export(metasgd_run.checkpoint, tmp_path / "export")
    (folder / ckpt.EXPORT_ALGORITHM).unlink()
    with pytest.raises(ValueError, match=r"meta\.algorithm=metasgd.*inner_lr_log_scale"):
        ckpt.load_exported(folder)
