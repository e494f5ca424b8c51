"""The warm leave-one-out protocol (``data.protocol: loo``, ``metarec evaluate --protocol loo``): the split
(last item test, second-last validation, neither in training; short users counted and training-only), the
metrics on hand-built scores, and the CLI end to end on a tiny trained checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import write_csv
from scorers import TableScorer

from metarec_dist.cli import main
from metarec_dist.config import EvalConfig
from metarec_dist.data import DataConfig, data_stats, prepare_data
from metarec_dist.data.cache import cache_key
from metarec_dist.data.split import LOO_MIN_LEN, UserSplits, leave_one_out
from metarec_dist.eval.loo import LOO
from metarec_dist.eval.protocol import LeaveOneOutProtocol
from metarec_dist.eval.report import build_report, format_table

V = 25  # items 1..25; score column j is item j + 1


# ------------------------------------------------------------------------------------------ the split


def test_leave_one_out_rows_by_hand():
    users, prefix, codes = leave_one_out(np.array([5, 3, 2, 1]))
    assert users.tolist() == [0, 0, 0, 1, 1, 1, 2, 3]
    assert prefix.tolist() == [3, 4, 5, 1, 2, 3, 2, 1]  # train n-2, valid n-1, test n; short: all, train
    assert codes.tolist() == [0, 1, 2, 0, 1, 2, 0, 0]


# Per user (raw id): items in time order. User 4 has 2 interactions, user 5 one: too short to hold out two.
LOG = {1: [10, 11, 12, 13, 14, 15], 2: [20, 21, 22], 3: [10, 20, 30, 11], 4: [12, 13], 5: [14]}


def _prepare(tmp_path: Path, **kwargs):
    rows = [(u, i, 5.0, 1000 * u + t) for u, items in LOG.items() for t, i in enumerate(items)]
    rows = rows[::-1]  # file order is not time order
    path = write_csv(tmp_path / "log.csv", rows=rows)
    cfg = DataConfig(format="csv", path=str(path), min_history=1, cache=False, protocol="loo", **kwargs)
    return prepare_data(cfg)


def _raw(prepared, seqs):
    ids = prepared.item_raw_ids
    return [[int(ids[i - 1]) for i in s] for s in seqs]


def test_loo_split_holds_out_the_last_two_items(tmp_path):
    prepared = _prepare(tmp_path)
    splits = prepared.user_splits()
    full = [LOG[u] for u in sorted(LOG)]
    evaluated = [s for s in full if len(s) >= LOO_MIN_LEN]
    # Every user trains: the evaluated ones on all but their last two items, the short ones on everything.
    assert _raw(prepared, splits.train) == [s[:-2] if len(s) >= LOO_MIN_LEN else s for s in full]
    assert _raw(prepared, splits.valid) == [s[:-1] for s in evaluated]  # target: the second-last item
    assert _raw(prepared, splits.test) == evaluated  # target: the last item
    train_of = dict(zip(prepared.split_users("train").tolist(), splits.train, strict=True))
    for user, valid, test in zip(prepared.split_users("valid"), splits.valid, splits.test, strict=True):
        train = train_of[int(user)]
        # No leak: the training sequence is the history strictly before both targets.
        assert len(train) == len(test) - 2 and np.array_equal(train, test[:-2])
        assert np.array_equal(valid, test[:-1])
    stats = data_stats(prepared)
    assert stats["loo_train_only_users"] == 2  # users 4 and 5: counted, training only, never evaluated
    assert (stats["train_users"], stats["valid_users"], stats["test_users"]) == (5, 3, 3)
    assert stats["train_interactions"] == sum(len(s) - 2 for s in evaluated) + 3


def test_cold_start_stays_the_default_and_the_switch_is_checked(tmp_path):
    assert DataConfig().protocol == "cold_start"
    with pytest.raises(ValueError, match="data.protocol"):
        DataConfig(protocol="leave_one_out")
    path = write_csv(tmp_path / "log.csv")
    a = DataConfig(format="csv", path=str(path))
    b = DataConfig(format="csv", path=str(path), protocol="loo")
    assert cache_key([path], a) != cache_key([path], b)  # a cached cold-start split is never reused


# ------------------------------------------------------------------------------------------ the metrics


def _protocol(mask_seen: bool, max_seq_len: int = 3) -> LeaveOneOutProtocol:
    splits = UserSplits(train=[], valid=[], test=[], num_items=V)
    return LeaveOneOutProtocol.build(splits, max_seq_len, EvalConfig(), mask_seen)


# User A: history 1 2 3, target 4; the model (shown 2 3: a window of max_seq_len - 1 = 2 items) ranks
# 1, 2, 5, 4, 6 first. User B: history 1 2, target 1 (a repeat); ranks 1 first.
A, B = np.array([1, 2, 3, 4]), np.array([1, 2, 1])
SCORES = {(2, 3): {1: 10, 2: 9, 5: 8, 4: 7, 6: 6}, (1, 2): {1: 10, 7: 9}}


def test_metrics_by_hand_with_the_history_masked():
    scorer = TableScorer(SCORES, V)
    res = _protocol(mask_seen=True).per_user(scorer, [A, B])[LOO]
    assert scorer.seen == [(2, 3), (1, 2)]  # the most recent window only; never the target
    # A: 1 and 2 masked (3 too) -> 5, 4, 6: rank 2. B: its target repeats a history item -> a miss.
    assert res["hr@5"].tolist() == [1.0, 0.0] and res["hr@10"].tolist() == [1.0, 0.0]
    assert res["ndcg@5"].tolist() == pytest.approx([1 / math.log2(3), 0.0])
    assert res["ndcg@20"].tolist() == pytest.approx([1 / math.log2(3), 0.0])
    assert res["mrr"].tolist() == pytest.approx([0.5, 0.0])


def test_metrics_by_hand_without_masking():
    res = _protocol(mask_seen=False).per_user(TableScorer(SCORES, V), [A, B])[LOO]
    # A: 1, 2, 5, 4 -> rank 4; B: its target 1 ranks first.
    assert res["ndcg@5"].tolist() == pytest.approx([1 / math.log2(5), 1.0])
    assert res["hr@5"].tolist() == [1.0, 1.0]
    assert res["mrr"].tolist() == pytest.approx([0.25, 1.0])


def test_a_target_below_the_cutoff_is_a_miss():
    scores = {(2, 3): {i: 20.0 - i for i in range(5, 13)} | {4: 0.0}}  # 8 unseen items above the target
    res = _protocol(mask_seen=True).per_user(TableScorer(scores, V), [A])[LOO]
    assert res["hr@5"].tolist() == [0.0] and res["hr@10"].tolist() == [1.0]
    assert res["ndcg@10"].tolist() == pytest.approx([1 / math.log2(10)])


def test_popularity_counts_training_sequences_only():
    # Item 9 is the most popular in training; item 4 appears only as the test target.
    splits = UserSplits(train=[np.array([9, 1]), np.array([9])], valid=[], test=[A], num_items=V)
    protocol = LeaveOneOutProtocol.build(splits, 3, EvalConfig(), mask_seen=False)
    pop = protocol.popularity("test")
    assert pop.per_user[LOO]["hr@5"].tolist() == [0.0]  # 4 was never counted
    assert pop.info["protocol"] == "loo" and pop.info["mask_seen"] is False
    doc = build_report([pop], None, n_boot=20)
    doc.update({"protocol": "loo", "mask_seen": False, "window": 2, "split": "test"})
    table = format_table(doc)
    assert "leave-one-out, test targets (1 users)" in table and "ndcg@20" in table


def test_trainer_validation_is_the_loo_protocol(tiny_cfg):
    """With data.protocol=loo the trainer validates on the validation targets through the same protocol
    code as ``metarec evaluate --protocol loo`` (fomaml: its trained adaptation steps on the window)."""
    from dataclasses import replace

    from metarec_dist.data.synthetic import make_synthetic_sequences
    from metarec_dist.eval.protocol import AdaptingScorer
    from metarec_dist.runtime.context import LocalContext
    from metarec_dist.train.trainer import MetaTrainer

    full = make_synthetic_sequences(num_users=40, num_items=40, num_groups=4, min_len=10, max_len=20, seed=1)
    data = UserSplits(train=[s[:-2] for s in full], valid=[s[:-1] for s in full], test=[], num_items=40)
    cfg = replace(tiny_cfg, data=replace(tiny_cfg.data, protocol="loo"))
    trainer = MetaTrainer(cfg, LocalContext(None), data)
    trainer.fit()
    out = trainer.validate()
    protocol = LeaveOneOutProtocol.build(data, cfg.model.max_seq_len, cfg.eval)
    scorer = AdaptingScorer(trainer.model, cfg.meta.algorithm, cfg.meta.inner_lr)
    res = protocol.per_user(scorer, data.valid[: cfg.train.eval_users], cfg.meta.adaptation_steps)[LOO]
    assert set(out) == {"val/loo_ndcg@10", "val/loo_hr@10"}
    for m in ("ndcg@10", "hr@10"):
        assert out[f"val/loo_{m}"] == pytest.approx(float(res[m].mean()), abs=1e-6)


# ------------------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def run(trained):
    loo = ["data.protocol=loo", "meta.algorithm=sasrec", "train.eval_every=1"]
    return trained("data.synthetic_users=60", "tasks.support_max=10", "tasks.query_size=5", *loo).folder


def test_evaluate_loo_end_to_end(run, tmp_path, capsys):
    out = tmp_path / "loo.json"
    assert main(["evaluate", "--checkpoint", str(run), "--protocol", "loo", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["protocol"] == "loo" and doc["mask_seen"] is True and doc["window"] == 15
    assert set(doc["methods"]) == {"sasrec", "popularity", "cooccurrence"} and "shots" not in doc
    row = doc["methods"]["sasrec"]["metrics"][str(LOO)]
    assert set(row) == {f"{m}@{k}" for m in ("hr", "ndcg") for k in (5, 10, 20)} | {"mrr"}
    assert row["ndcg@10"]["lo"] <= row["ndcg@10"]["mean"] <= row["ndcg@10"]["hi"]
    assert row["hr@5"]["mean"] <= row["hr@10"]["mean"] <= row["hr@20"]["mean"]
    assert doc["methods"]["sasrec"]["info"]["adaptation"]["steps"] == 0  # sasrec does not adapt
    # Every user of the synthetic set (>= 12 interactions) is a test user.
    assert doc["methods"]["sasrec"]["users"][str(LOO)] == 60
    assert "leave-one-out, test targets (60 users)" in printed and "hr@10" in printed


def test_evaluate_defaults_to_the_trained_protocol_and_refuses_the_other(run, tmp_path, capsys):
    out = tmp_path / "default.json"
    args = ["evaluate", "--checkpoint", str(run), "--no-mask-seen", "--split", "valid", "--json", str(out)]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    assert doc["protocol"] == "loo" and doc["mask_seen"] is False and doc["split"] == "valid"
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run), "--protocol", "cold_start"]) == 2
    assert "data.protocol=loo" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(run), "--shots", "1,3"]) == 2
    assert "no shot counts" in capsys.readouterr().err


def test_baseline_gives_paired_intervals_under_loo(run, tmp_path, capsys):
    out = tmp_path / "paired.json"
    args = ["evaluate", "--checkpoint", str(run), "--baseline", str(run), "--json", str(out)]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    d = doc["paired"]["sasrec"]["diff"][str(LOO)]["ndcg@10"]
    assert doc["paired"]["sasrec"]["baseline"] == "baseline:sasrec"
    assert d["diff"] == d["lo"] == d["hi"] == 0.0  # the same model on the same users: no difference
    assert "sasrec - baseline:sasrec: NDCG@10 +0.0000" in capsys.readouterr().out
