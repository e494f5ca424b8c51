"""The item co-occurrence baseline: counts against a by-hand reference, scores, training users only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metarec_dist.config import EvalConfig
from metarec_dist.data.split import UserSplits
from metarec_dist.eval.loo import LOO
from metarec_dist.eval.protocol import (
    COOC_RECENCY,
    COOCCURRENCE,
    ColdStartProtocol,
    LeaveOneOutProtocol,
)
from metarec_dist.metrics.cooccurrence import ItemCooccurrence, first_occurrences

V = 25


def reference_counts(sequences: list[np.ndarray], horizon: int) -> np.ndarray:
    """Written out position by position: item at p -> each of its next ``horizon`` items the user had not
    had before (neither up to p nor earlier in the same horizon), row-normalised."""
    c = np.zeros((V, V))
    for seq in sequences:
        for p in range(len(seq)):
            chosen: list[int] = []
            for item in seq[p + 1 : p + 1 + horizon]:
                if item in seq[: p + 1] or item in chosen:
                    continue
                chosen.append(int(item))
                c[seq[p] - 1, item - 1] += 1
    totals = c.sum(1, keepdims=True)
    return np.divide(c, totals, out=np.zeros_like(c), where=totals > 0)


def dense(model: ItemCooccurrence) -> np.ndarray:
    out = np.zeros((V, V))
    for row in range(V):
        lo, hi = model.indptr[row], model.indptr[row + 1]
        out[row, model.indices[lo:hi]] = model.data[lo:hi]
    return out


SEQS = [
    np.array([1, 2, 3, 2, 4, 5]),  # 2 repeats: its second time counts for nobody
    np.array([3, 1, 6, 1, 7]),
    np.array([2, 4]),
    np.array([8]),
    np.array([5, 5, 9, 3, 10, 11, 12, 1]),
]


@pytest.mark.parametrize("horizon", [1, 2, 3, 10])
def test_counts_match_the_reference_written_out(horizon):
    model = ItemCooccurrence(SEQS, V, horizon)
    np.testing.assert_allclose(dense(model), reference_counts(SEQS, horizon), rtol=1e-6)


def test_first_occurrences_are_per_user():
    users = np.array([0, 0, 0, 1, 1])
    items = np.array([3, 4, 3, 3, 3])
    assert first_occurrences(users, items).tolist() == [True, True, False, True, False]


def test_scores_weight_the_support_by_recency_and_ignore_padding():
    model = ItemCooccurrence(SEQS, V, horizon=2, recency=0.5)
    ref = reference_counts(SEQS, 2)
    support = torch.tensor([[0, 0, 1, 3], [0, 0, 0, 2]])  # left padding, the last column most recent
    weighted = model.weighted(support).numpy()
    np.testing.assert_allclose(weighted[0], 0.5 * ref[0] + 1.0 * ref[2], atol=1e-7)
    np.testing.assert_allclose(weighted[1], ref[1], atol=1e-7)
    # The ranking scores order the items as the weights do (ties by popularity): ranks 0 .. V-1.
    scores = model.scores(support)
    assert sorted(scores[0].tolist()) == list(range(V))
    order = scores[0].argsort(descending=True)[:3].numpy()
    assert np.all(np.diff(weighted[0][order]) <= 0) and weighted[0][order[-1]] > 0


def test_an_item_that_never_led_anywhere_falls_back_to_popularity():
    """Item 12 is never followed by anything: its user gets the popularity order, not an all-tie."""
    model = ItemCooccurrence(SEQS, V, horizon=3)
    scores = model.scores(torch.tensor([[12]]))[0]
    counts = np.bincount(np.concatenate(SEQS), minlength=V + 1)[1:]
    assert int(scores.argmax()) == int(counts.argmax())
    assert bool((scores[torch.from_numpy(counts > 0)] > 0).all())


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="horizon"):
        ItemCooccurrence(SEQS, V, horizon=0)
    with pytest.raises(ValueError, match="recency"):
        ItemCooccurrence(SEQS, V, horizon=1, recency=0.0)


def test_cold_start_baseline_counts_training_users_only_up_to_the_relevant_horizon():
    """Training users go 1 -> 2 -> 3; every test user goes 1 -> 4 -> 5. Had the test users been counted,
    4 would top the list after 1; counted on training users, 2 and 3 (within num_relevant=2) lead."""
    train = [np.array([1, 2, 3])] * 3 + [np.array([4, 5])]
    test = [np.array([1, 4, 5])] * 4
    splits = UserSplits(train=train, valid=[], test=test, num_items=V)
    protocol = ColdStartProtocol(splits, [1], 1, EvalConfig(num_relevant=2, ks=[2]))
    names = [r.name for r in protocol.baselines("test")]
    assert names == ["popularity", COOCCURRENCE]
    res = protocol.cooccurrence("test")
    assert res.info["horizon"] == 2 and res.info["recency"] == COOC_RECENCY
    assert res.per_user[1]["recall@2"].tolist() == [0.0] * 4  # relevant {4, 5}; top two are 2 and 3
    # Training users 1 -> 2 -> 3 and 4 -> 5: a test user with support 4 finds 5 first.
    hit = ColdStartProtocol(
        UserSplits(train=train, valid=[], test=[np.array([4, 5])], num_items=V),
        [1],
        1,
        EvalConfig(num_relevant=2, ks=[2]),
    ).cooccurrence("test")
    assert hit.per_user[1]["ndcg@2"].tolist() == [1.0]


def test_loo_baseline_is_the_next_item_chain():
    """Leave-one-out: the target is the single next item, so the baseline counts horizon 1."""
    train = [np.array([1, 2, 3]), np.array([1, 2, 3]), np.array([1, 3])]
    user = np.array([6, 1])  # the test target is the item after 1
    splits = UserSplits(train=train, valid=[], test=[np.append(user, 2)], num_items=V)
    protocol = LeaveOneOutProtocol.build(splits, 3, EvalConfig(), mask_seen=True)
    res = protocol.cooccurrence("test")
    assert res.info["horizon"] == 1
    # 1 -> 2 twice, 1 -> 3 once: item 2 ranks first.
    assert res.per_user[LOO]["ndcg@5"].tolist() == pytest.approx([1.0 / math.log2(2)])


def test_ties_in_the_counts_go_to_the_more_popular_item_in_the_evaluation():
    """1 is followed once each by 2, 3, 4, 5 (equal weights); 5 is the most popular item. The evaluation
    puts a relevant item after every item it ties with, so without a tie-break that survives float32 the
    test user's next item 5 would rank 4th: here it ranks first."""
    train = [np.array([1, 2]), np.array([1, 3]), np.array([1, 4]), np.array([1, 5])] + [np.array([5])] * 3
    splits = UserSplits(train=train, valid=[], test=[np.array([1, 5])], num_items=V)
    protocol = ColdStartProtocol(splits, [1], 1, EvalConfig(num_relevant=2, ks=[2]))
    assert protocol.cooccurrence("test").per_user[1]["ndcg@2"].tolist() == [1.0]


def test_fused_scores_are_the_model_log_probabilities_plus_the_weighted_log_counts():
    from scorers import TableScorer

    from metarec_dist.eval.protocol import FUSION_EPS, FusedScorer
    from metarec_dist.tasks.sampler import prefix_batch
    from metarec_dist.tasks.types import bos_id

    cooc = ItemCooccurrence(SEQS, V, horizon=2, recency=0.3)
    base = TableScorer({(1, 3): {4: 2.0, 5: 1.0}}, V)
    batch = prefix_batch([np.array([1, 3])], 2, 2, bos_id(V))
    model_scores = base.score(batch)
    # Explicit steps (0: the table does not adapt); FusedScorer has no "own" adaptation to default to.
    assert torch.equal(FusedScorer(base, cooc, 0.0).score(batch, 0), model_scores)  # weight 0: the model
    fused = FusedScorer(base, cooc, 0.5).score(batch, 0)
    ref = reference_counts(SEQS, 2)
    prior = torch.from_numpy(0.3 * ref[0] + ref[2]).float()
    expected = torch.log_softmax(model_scores, -1) + 0.5 * torch.log(prior + FUSION_EPS)
    torch.testing.assert_close(fused, expected)


def test_evaluate_fuse_chooses_the_weight_on_validation_users(trained, tmp_path):
    """``metarec evaluate --fuse``: a METHOD+cooc row whose weight is the best of the grid on validation
    users, weight 0 scoring exactly the unfused method (the same validation number)."""
    import json

    from metarec_dist.cli import main
    from metarec_dist.eval.protocol import FUSION_WEIGHTS

    run = trained("meta.algorithm=sasrec").folder
    plain, fused = tmp_path / "plain.json", tmp_path / "fused.json"
    assert main(["evaluate", "--checkpoint", str(run), "--finetune", "--json", str(plain)]) == 0
    assert main(["evaluate", "--checkpoint", str(run), "--finetune", "--fuse", "--json", str(fused)]) == 0
    a, b = json.loads(plain.read_text()), json.loads(fused.read_text())
    assert "sasrec+finetune+cooc" in b["methods"] and "cooccurrence" in b["methods"]
    adaptation = b["methods"]["sasrec+finetune+cooc"]["info"]["adaptation"]
    grid = {float(w): v for w, v in adaptation["fusion"]["val_ndcg@10"].items()}
    assert sorted(grid) == sorted(FUSION_WEIGHTS)
    assert grid[adaptation["fusion"]["weight"]] == max(grid.values()) == adaptation["val_ndcg@10"]
    unfused = a["methods"]["sasrec+finetune"]["info"]["adaptation"]
    assert grid[0.0] == pytest.approx(unfused["val_ndcg@10"], abs=1e-12)
    assert (adaptation["steps"], adaptation["inner_lr"]) == (unfused["steps"], unfused["inner_lr"])


def test_reproduce_fuses_at_the_plain_variants_adaptation_without_searching_again(
    trained, tmp_path, monkeypatch
):
    """The reproduction's METHOD+cooc reuses the adaptation its plain variant chose (one search per model,
    not two), and its numbers are those of a fused evaluation that searches by itself."""
    from trained import SMALL, SYNTHETIC, TINY

    from metarec_dist.eval import reproduce
    from metarec_dist.eval.protocol import ColdStartProtocol

    run = trained()  # fomaml: it adapts, so choosing its adaptation is a real grid search
    searched = []
    choose = ColdStartProtocol.choose_adaptation

    def counting(self, *args, **kwargs):
        searched.append(args)
        return choose(self, *args, **kwargs)

    monkeypatch.setattr(ColdStartProtocol, "choose_adaptation", counting)
    monkeypatch.setattr(reproduce, "train_one", lambda cfg, run_dir, keep_first_stage: str(run.checkpoint))
    spec = reproduce.RunSpec("fomaml", TINY, 0, False, tuple([*SMALL, *SYNTHETIC]), fuse=True)
    runs = reproduce.train_and_evaluate(spec, tmp_path, [1, 3])
    assert set(runs) == {"fomaml", "fomaml+cooc"} and len(searched) == 1
    plain, fused = runs["fomaml"][1]["adaptation"], runs["fomaml+cooc"][1]["adaptation"]
    assert (fused["steps"], fused["inner_lr"]) == (plain["steps"], plain["inner_lr"])
    loaded = reproduce_load(run.checkpoint)
    protocol = reproduce.build_protocol("cold_start", loaded[1], [1, 3], loaded[0].cfg)
    alone = protocol.evaluate(loaded[0], "test", fuse=True)  # searches by itself
    assert len(searched) == 2 and alone.info["adaptation"] == fused
    for k in (1, 3):
        np.testing.assert_array_equal(alone.per_user[k]["ndcg@10"], runs["fomaml+cooc"][0][k]["ndcg@10"])


def reproduce_load(checkpoint):
    from metarec_dist.eval.loading import load_model, load_prepared

    loaded = load_model(checkpoint)
    return loaded, load_prepared(loaded.cfg).user_splits()
