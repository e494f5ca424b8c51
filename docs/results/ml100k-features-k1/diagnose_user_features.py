"""What ML-100K's user features (age, gender, occupation) can add at K = 0 and K = 1, on the VALIDATION users
the adaptation is tuned on (docs/results/ml100k-features.md, "Cold-start users at K = 1").

1. Without a model: rank items by how many training users have them among their first 20 interactions,
   globally and within the validation user's group (same age bucket / gender / occupation / all three;
   global where the group has fewer than 5 training users); NDCG@10 against the user's first 10 items.
2. With a trained cold-start run of configs/ml100k-features.yaml (RUN: its folder or a checkpoint):
   NDCG@10 at K = 0 (the user token and BOS only), 1 and 3, with each user's features and with every
   user's features set to "unknown", without adaptation and at STEPS x LR.

    export PYTHONPATH=. METAREC_DATA_DIR=../shared/data
    python docs/results/ml100k-features-k1/diagnose_user_features.py [RUN STEPS LR]
"""

from __future__ import annotations

import json
import sys

import numpy as np

from metarec_dist.config import load_config
from metarec_dist.eval.loading import load_model, load_prepared
from metarec_dist.eval.protocol import ColdStartProtocol, PopularityScorer

GROUPS = {"age": [0], "gender": [1], "occupation": [2], "all three": [0, 1, 2]}  # user_features columns


def early_counts(sequences: list[np.ndarray], num_items: int) -> np.ndarray:
    counts = np.zeros(num_items + 1)
    for seq in sequences:
        np.add.at(counts, np.unique(seq[:20]), 1)
    return counts


def ndcg_at_10(scores: np.ndarray, relevant: set[int]) -> float:
    top = np.argsort(-scores[1:], kind="stable")[:10] + 1
    dcg = sum(1 / np.log2(r + 2) for r, i in enumerate(top) if int(i) in relevant)
    return dcg / sum(1 / np.log2(r + 2) for r in range(min(10, len(relevant))))


def group_popularity(cfg_path: str = "configs/ml100k-features.yaml") -> dict[str, float]:
    cfg = load_config(cfg_path)
    splits = load_prepared(cfg).user_splits()
    proto = ColdStartProtocol(splits, [1], cfg.tasks.support_max, cfg.eval)
    train, train_feats = splits.train, splits.user_features("train")
    overall = early_counts(train, splits.num_items)
    out = {}
    for name, cols in [("global", None), *GROUPS.items()]:
        values = []
        for seq, feats in zip(proto.tune_users(), proto.tune_user_features(), strict=True):
            scores = overall
            if cols is not None:
                same = np.all(train_feats[:, cols] == feats[cols], axis=1)
                if same.sum() >= 5:
                    members = [train[i] for i in np.nonzero(same)[0]]
                    scores = early_counts(members, splits.num_items) + 1e-3 * overall  # ties: global order
            values.append(ndcg_at_10(scores, set(seq[:10].tolist())))
        out[name] = round(float(np.mean(values)), 4)
    return out


def user_token(run: str, steps: int, lr: float) -> dict[str, dict[int, float]]:
    loaded = load_model(run)
    cfg = loaded.cfg
    splits = load_prepared(cfg).user_splits()
    users, feats = None, None
    out = {}
    for shots, adapt in [([0, 1, 3], 0), ([1, 3], steps)]:
        proto = ColdStartProtocol(splits, shots, cfg.tasks.support_max, cfg.eval)
        users, feats = proto.tune_users(), proto.tune_user_features()
        unknown = loaded.model.user_token.unknown(len(users), "cpu").numpy().copy()
        for name, f in [("features", feats), ("unknown user", unknown)]:
            res = proto.per_user(proto.scorer(loaded, lr), users, adapt, user_features=f)
            out[f"{name}, {adapt} steps"] = {k: round(float(v["ndcg@10"].mean()), 4) for k, v in res.items()}
    proto = ColdStartProtocol(splits, [0, 1, 3], cfg.tasks.support_max, cfg.eval)
    pop = proto.per_user(PopularityScorer(splits.train, splits.num_items), users)
    out["popularity"] = {k: round(float(v["ndcg@10"].mean()), 4) for k, v in pop.items()}
    return out


if __name__ == "__main__":
    print(json.dumps({"early popularity, K = 0": group_popularity()}))
    if len(sys.argv) > 1:
        print(json.dumps(user_token(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))))
