"""Screen (issue 15, eleventh session): learn the co-occurrence fusion inside training.

Stage 2 of configs/coldstart.yaml, started from a finished run's stage 1 (its `pretrain/` folder), with the
query loss on the FUSED distribution ``log_softmax(model) + W log(counts(support) + eps)`` -- the fusion
`metarec evaluate --fuse` applies at test time -- so the model learns what the counts do not already say.
The counts of a training task leave out the task's own window (its support items' pairs with the later first
occurrences within the horizon, support and query alike): otherwise they would hold the query's answer.
Two algorithms, registered here only (a screen, not part of the package): ``fusedfomaml`` (FOMAML, the
recipe's stage 2) and its control ``fusednone`` (the same fused query loss at ``fast_init``, no inner loop:
plain fine-tuning). The trainer's periodic validation (early stopping) is fused at W too.

    python fused_training.py train RUN_FOLDER OUT_FOLDER fusedfomaml|fusednone
    python fused_training.py score OUT.json CHECKPOINT...   # validation: steps 0 / 1, weights 0 .. 2

with METAREC_DATA_DIR set and PYTHONPATH including this folder (``score`` loads the screen's algorithms).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from metarec_dist.eval import protocol as P
from metarec_dist.meta import algorithms as A
from metarec_dist.metrics.cooccurrence import pair_counts
from metarec_dist.models.losses import full_softmax_loss

WEIGHT, HORIZON = 1.0, 10  # the fusion weight validation chose for seed 0; eval.num_relevant
COUNTS: LooCounts | None = None


class LooCounts:
    """The co-occurrence baseline's counts before row normalisation, so a task's own pairs can be taken out
    of both a row and its total."""

    def __init__(self, sequences: list[np.ndarray], num_items: int) -> None:
        rows, self.indices, counts = pair_counts(sequences, num_items, HORIZON)
        self.num_items, self.data = num_items, counts.astype(np.float64)
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=num_items))])
        self.totals = np.bincount(rows, weights=counts, minlength=num_items)

    def prior(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """``[T, V]``: each task's recency-weighted, row-normalised counts of its support items (as
        ``ItemCooccurrence.weighted``) without the task's own pairs. Prefix windows start at a user's first
        interaction, so "first occurrence in the window" is "first occurrence for the user"."""
        sup, qry = support.cpu().numpy(), query.cpu().numpy()
        out = np.zeros((len(sup), self.num_items))
        for t in range(len(sup)):
            s = sup[t][sup[t] > 0] - 1
            window = np.concatenate([s, qry[t][qry[t] > 0] - 1])
            first = [x not in window[:j] for j, x in enumerate(window)]
            own: dict[int, dict[int, int]] = {}
            for i in range(len(s)):
                pairs = own.setdefault(int(s[i]), {})
                for j in range(i + 1, min(i + HORIZON + 1, len(window))):
                    if first[j]:
                        pairs[int(window[j])] = pairs.get(int(window[j]), 0) + 1
            for i, x in enumerate(s):
                weight = P.COOC_RECENCY ** (len(s) - 1 - i)
                pairs = own[int(x)]
                denom = self.totals[x] - sum(pairs.values())
                if denom <= 0:
                    continue
                lo, hi = self.indptr[x], self.indptr[x + 1]
                np.add.at(out[t], self.indices[lo:hi], weight * self.data[lo:hi] / denom)
                for y, c in pairs.items():
                    out[t, y] -= weight * c / denom
        return torch.from_numpy(np.clip(out, 0, None)).float()


def fused_query_loss(model, h: torch.Tensor, fast: torch.Tensor, batch) -> torch.Tensor:
    """The query's next-item loss under the fused distribution (a per-task item bias: the softmax's
    normaliser makes ``log_softmax(model)`` and the raw scores the same thing here)."""
    hp = model.head.transform(h, fast)
    prior = COUNTS.prior(batch.support_targets, batch.query_targets).to(hp.device)
    bias = WEIGHT * torch.log(prior + P.FUSION_EPS)
    own = model.head.item_bias(fast)
    bias = bias if own is None else own + bias
    return full_softmax_loss(hp, batch.query_targets, model.item_table(), bias).mean()


@A.register("fusedfomaml")
class FusedFOMAML(A.FOMAML):
    def query_terms(self, model, feats, batch, adapted):
        init = self.task_init(model, feats.support, batch.support_targets)
        query = fused_query_loss(model, feats.query, init + (adapted - init).detach(), batch)
        return query, {"query_loss": query.detach()}


@A.register("fusednone")
class FusedNone(A.NoAdaptation):
    def meta_loss(self, model, batch, track_adaptation=True):
        feats = A.encode(model, batch)
        query = fused_query_loss(model, feats.query, model.fast_init.expand(batch.num_tasks, -1), batch)
        metrics = {"query_loss": query.detach()}
        return A.MetaStepOutput(loss=self.dense.add(model, feats, batch, query, metrics), metrics=metrics)


def fuse_validation() -> None:
    """The trainer's periodic validation scores the fused model, so early stopping judges what is used."""
    per_user = P.ColdStartProtocol.per_user

    def fused(self, scorer, *args, **kwargs):
        return per_user(self, P.FusedScorer(scorer, self.cooc_model, WEIGHT), *args, **kwargs)

    P.ColdStartProtocol.per_user = fused


def train(source: str, out: str, algorithm: str) -> None:
    global COUNTS
    from metarec_dist.config import load_config
    from metarec_dist.data import prepare_data
    from metarec_dist.train.launch import train as run

    fuse_validation()
    cfg = load_config(
        "configs/coldstart.yaml",
        [
            f"meta.algorithm={algorithm}",
            "train.pretrain=null",
            f"train.init_from={source}/pretrain",
            f"runtime.storage_path={out}",
            f"runtime.run_name={algorithm}",
            "runtime.torch_threads=1",
            "data.format=recbole",
            "data.name=amazon-sports",
            "data.split=random",
        ],
    )
    splits = prepare_data(cfg.data).user_splits()
    COUNTS = LooCounts(splits.train, splits.num_items)
    print(run(cfg), flush=True)


def score(out: str, checkpoints: list[str]) -> None:
    from metarec_dist.eval.cli import model_protocol
    from metarec_dist.eval.loading import load_model

    results = {}
    for ck in checkpoints:
        loaded = load_model(ck)
        protocol, _ = model_protocol(loaded, sorted(loaded.cfg.eval.shots), "cold_start")
        users, feats = protocol.tune_users(), protocol.tune_user_features()
        for steps, lr in ((0, 0.05), (1, 0.025)):
            for weight in (0.0, 0.5, 1.0, 2.0):
                t = time.time()
                res = protocol.adapted_per_user(loaded, P.Adaptation(steps, lr, fusion=weight), users, feats)
                per_k = {k: float(res[k][P.CRITERION].mean()) for k in protocol.shots}
                mean = float(np.mean(list(per_k.values())))
                results[f"{ck}|{steps}|{weight}"] = {"per_k": per_k, "mean": mean}
                print(ck, steps, weight, per_k, f"{time.time() - t:.0f}s", flush=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "train":
        train(*sys.argv[2:5])
    else:
        score(sys.argv[2], sys.argv[3:])
