"""Cold-start split: disjoint train / valid / test USERS (never a split of one user's history).

``time``: users ordered by their first interaction; the newest are test, the next newest valid --
evaluation then mimics users who arrive after the model was trained. ``random``: a seeded shuffle.
``UserSplits`` holds the per-user sequences of the three groups, as training and evaluation read them.

``leave_one_out`` (``data.protocol: loo``): the warm protocol of the SASRec / S3-Rec / ICLRec papers, where
every user trains and a user's history is split instead: training sees all but the last two items, the
validation sequence ends with the second-last item (its target), the test sequence with the last.

``newest_items`` (``data.protocol: new_items``): the cold-start user split, and the newest
``data.new_item_frac`` of the items (by first interaction) held out of training entirely: they are removed
from every training user's sequence (the user's other items keep their chronological order and close up),
so no training batch holds them as input or target. Validation and test users keep their whole history; the
evaluation (``eval/new_items.py``) adapts on their old items and ranks the new ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metarec_dist.data.errors import DataError
from metarec_dist.data.features import FeatureTables

SPLIT_NAMES = ("train", "valid", "test")
LOO_MIN_LEN = 3  # leave-one-out needs one training item besides the two held-out targets


@dataclass
class UserSplits:
    """Chronological per-user sequences (item ids 1..num_items) of three disjoint user groups (with
    ``data.protocol: loo``, prefixes of the same users' histories: ``leave_one_out``)."""

    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]  # empty where only training runs (a Ray worker gets train and valid)
    num_items: int
    item_titles: dict[int, str] | None = None  # item id -> title, when metadata was found
    item_raw_ids: list[str] | None = None  # item_raw_ids[i - 1] is the raw id of item i
    # Side information: item rows by item id, user rows by user id (split_users maps list position -> id).
    features: FeatureTables | None = None
    # data.protocol=new_items: the held-out item ids (sorted), absent from every training sequence.
    new_items: np.ndarray | None = None
    # The user id of each training sequence (``train[i]`` is user ``train_users[i]``): which rank's shard
    # a user belongs to (``tasks.sampler.shard_of``). None: the list position stands in for the id.
    train_users: np.ndarray | None = None

    def user_features(self, split: str) -> np.ndarray | None:
        """``[N, F]`` user-feature ids of ``split``'s users, row i for its i-th sequence (None without user
        features): what batches carry for the model's user token."""
        return None if self.features is None else self.features.split_user_matrix(split)


def _count(n: int, frac: float) -> int:
    # At least one user whenever a fraction is asked for, so tiny data sets still get every split.
    return 0 if frac <= 0 else max(1, int(round(n * frac)))


def split_users(
    first_time: np.ndarray, how: str, valid_frac: float, test_frac: float, seed: int
) -> np.ndarray:
    """Split code per user: 0 train, 1 valid, 2 test (index into SPLIT_NAMES)."""
    n = len(first_time)
    n_test, n_valid = _count(n, test_frac), _count(n, valid_frac)
    if n - n_test - n_valid < 1:
        raise DataError(
            f"only {n} user{'' if n == 1 else 's'} left after filtering: data.valid_frac={valid_frac} and "
            f"data.test_frac={test_frac} leave none for training; use more data or lower the fractions"
        )
    if how == "time":
        order = np.lexsort((np.arange(n), first_time))  # oldest first; ties by user id
    elif how == "random":
        order = np.random.default_rng(seed).permutation(n)
    else:
        raise DataError(f"data.split: unknown {how!r}; choose time or random")
    codes = np.zeros(n, dtype=np.int8)
    codes[order[n - n_test :]] = 2
    codes[order[n - n_test - n_valid : n - n_test]] = 1
    return codes


def newest_items(first_time: np.ndarray, frac: float) -> np.ndarray:
    """The newest ``frac`` of the items by first interaction time (item ids 1..V, sorted): ``first_time[i]``
    is item ``i + 1``'s. Ties go by item id (the higher id counts as newer), so the set is deterministic."""
    n = len(first_time)
    n_new = _count(n, frac)
    if n_new >= n:
        raise DataError(
            f"data.new_item_frac={frac} holds out all {n} items; lower it so that some items are left "
            "for training"
        )
    order = np.lexsort((np.arange(n), first_time))  # oldest first; ties by item id
    return np.sort(order[n - n_new :] + 1).astype(np.int64)


def leave_one_out(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the leave-one-out split, per user in user order: (user, prefix length, split code).

    A user with ``n >= LOO_MIN_LEN`` items gives three rows: train = its first ``n - 2`` items, valid =
    its first ``n - 1`` (the last one is the validation target), test = all ``n`` (the last one is the
    test target). A shorter user has no items to hold out and gives one training row of its whole history:
    it is never evaluated, so nothing of an evaluated target leaks through it.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    users = np.arange(len(lengths), dtype=np.int64)
    held = lengths >= LOO_MIN_LEN
    rows = np.concatenate([users, users[held], users[held]])
    prefix = np.concatenate([np.where(held, lengths - 2, lengths), lengths[held] - 1, lengths[held]])
    codes = np.repeat(np.arange(3, dtype=np.int8), [len(users), int(held.sum()), int(held.sum())])
    order = np.lexsort((codes, rows))  # user order; train, valid, test within a user
    return rows[order], prefix[order], codes[order]
