from __future__ import annotations

import numpy as np
import torch

from metarec_dist.config import TasksConfig
from metarec_dist.tasks.sampler import TaskSampler, prefix_batch


def _seqs():
    rng = np.random.default_rng(0)
    return [rng.integers(1, 50, size=rng.integers(4, 30)) for _ in range(40)]


def test_tasks_are_deterministic_under_a_seed_and_resume_exactly():
    cfg = TasksConfig(support_min=1, support_max=6, query_size=3)
    a = TaskSampler(_seqs(), cfg, 50, seed=7, num_negatives=5)
    b = TaskSampler(_seqs(), cfg, 50, seed=7, num_negatives=5)
    assert torch.equal(a.sample(16).item_ids, b.sample(16).item_ids)
    state = a.state_dict()
    expected = [a.sample(16) for _ in range(3)]
    c = TaskSampler(_seqs(), cfg, 50, seed=123, num_negatives=5)
    c.load_state_dict(state)
    for e in expected:
        got = c.sample(16)
        assert torch.equal(got.item_ids, e.item_ids) and torch.equal(got.negatives, e.negatives)
        assert torch.equal(got.task_ids, e.task_ids)


def test_support_and_query_are_consecutive_windows_of_one_user():
    seqs = _seqs()
    cfg = TasksConfig(support_min=2, support_max=6, query_size=3)
    s = TaskSampler(seqs, cfg, 50, seed=1)
    a = s.sample_arrays(64)
    bos = 51
    for row, user, sup, qry in zip(
        a["item_ids"], a["users"], a["support_targets"], a["query_targets"], strict=True
    ):
        seq = seqs[user]
        k, q = int((sup > 0).sum()), int((qry > 0).sum())
        assert 2 <= k <= 6 and 1 <= q <= 3
        assert q == 3 or k + q == len(seq), "only a user too short for a whole query gets a shorter one"
        window = row[np.flatnonzero(row == bos)[0] + 1 :][: k + q]
        assert not row[np.flatnonzero(row == bos)[0] + 1 + k + q :].any(), "padding after the query is 0"
        starts = [
            i for i in range(len(seq) - len(window) + 1) if np.array_equal(seq[i : i + len(window)], window)
        ]
        assert starts, "the task is not a contiguous window of its user's sequence"
    # query targets are the items after the support; support targets never include the query
    assert np.array_equal(a["query_targets"], a["item_ids"][:, -3:])
    k_pos = cfg.support_max
    assert np.array_equal(a["support_targets"][:, -1], a["item_ids"][:, k_pos])


def test_a_two_item_user_gives_a_task_with_a_masked_short_query():
    seqs = [np.array([3, 4]), np.arange(1, 11)]
    s = TaskSampler(seqs, TasksConfig(support_min=1, support_max=4, query_size=3), 10, seed=0)
    a = s.sample_arrays(200)
    short = a["users"] == 0
    assert short.any() and (~short).any(), "both users are sampled, the 2-item one included"
    # pad pad pad BOS | s1=3 | q1=4, then no target: nothing of the neighbouring user leaks in
    assert (a["item_ids"][short] == [0, 0, 0, 11, 3, 4, 0, 0]).all()
    assert (a["attention_mask"][short] == [0, 0, 0, 1, 1, 1, 1, 1]).all()
    assert (a["support_targets"][short] == [0, 0, 0, 3]).all()
    assert (a["query_targets"][short] == [4, 0, 0]).all()
    assert (a["query_targets"][~short] > 0).all(), "a long user still gets a whole query"


def test_users_below_support_min_plus_one_give_no_task():
    seqs = [np.array([3]), np.array([3, 4])]
    s = TaskSampler(seqs, TasksConfig(support_min=1, support_max=4, query_size=3), 10, seed=0)
    assert s.eligible.tolist() == [1]


def test_masked_query_positions_add_nothing_to_the_loss(tiny_cfg):
    from metarec_dist.models.recommender import SeqRecommender

    torch.manual_seed(0)
    model = SeqRecommender(tiny_cfg.model, 20)
    h = torch.randn(2, 3, tiny_cfg.model.hidden_size)
    fast = model.fast_init.expand(2, -1)
    padded = model.task_loss(h, fast, torch.tensor([[4, 0, 0], [5, 6, 7]]))
    cut = model.task_loss(h[:1, :1], fast[:1], torch.tensor([[4]]))
    torch.testing.assert_close(padded[0], cut[0])


def test_prefix_window_takes_each_users_first_items():
    seqs = _seqs()
    s = TaskSampler(
        seqs, TasksConfig(support_min=3, support_max=3, query_size=2, window="prefix"), 50, seed=0
    )
    a = s.sample_arrays(10)
    for row, user in zip(a["item_ids"], a["users"], strict=True):
        n = min(5, len(seqs[user]))  # a 4-item user: its 3-item support and a 1-item query
        assert np.array_equal(row[1 : 1 + n], seqs[user][:n]) and not row[1 + n :].any()


def test_prefix_batch_layout_for_evaluation():
    seqs = [np.array([5, 6, 7, 8]), np.array([9])]
    b = prefix_batch(seqs, shots=3, support_max=4, bos_id=99)
    assert b.item_ids.tolist() == [[0, 99, 5, 6, 7], [0, 0, 0, 99, 9]]
    assert b.support_targets.tolist() == [[0, 5, 6, 7], [0, 0, 0, 9]]
