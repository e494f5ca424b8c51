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
    for row, user in zip(a["item_ids"], a["users"], strict=True):
        seq = seqs[user]
        window = row[np.flatnonzero(row == bos)[0] + 1 :]
        k = len(window) - 3
        assert 2 <= k <= 6
        starts = [
            i for i in range(len(seq) - len(window) + 1) if np.array_equal(seq[i : i + len(window)], window)
        ]
        assert starts, "the task is not a contiguous window of its user's sequence"
    # query targets are exactly the last Q items; support targets never include the query
    assert np.array_equal(a["query_targets"], a["item_ids"][:, -3:])
    k_pos = cfg.support_max
    assert np.array_equal(a["support_targets"][:, -1], a["item_ids"][:, k_pos])


def test_prefix_window_takes_each_users_first_items():
    seqs = _seqs()
    s = TaskSampler(
        seqs, TasksConfig(support_min=3, support_max=3, query_size=2, window="prefix"), 50, seed=0
    )
    a = s.sample_arrays(10)
    for row, user in zip(a["item_ids"], a["users"], strict=True):
        assert np.array_equal(row[1:], seqs[user][:5])


def test_prefix_batch_layout_for_evaluation():
    seqs = [np.array([5, 6, 7, 8]), np.array([9])]
    b = prefix_batch(seqs, shots=3, support_max=4, bos_id=99)
    assert b.item_ids.tolist() == [[0, 99, 5, 6, 7], [0, 0, 0, 99, 9]]
    assert b.support_targets.tolist() == [[0, 5, 6, 7], [0, 0, 0, 9]]
