"""Behaviour pinned across refactors: the tiny config's loss trajectory for a fixed seed.

``fixtures/tiny_trajectory.json`` was recorded from the code *before* the architecture refactor (issue 11)
by ``python tests/unit/test_trajectory.py --record``. A refactor that moves code must leave every number
unchanged: the per-step training loss of each algorithm and the final validation metrics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_trajectory.json"
STEPS = 20
# name -> overrides of configs/tiny.yaml (the algorithm and its options)
VARIANTS: dict[str, list[str]] = {
    "fomaml": ["meta.algorithm=fomaml"],
    "reptile": ["meta.algorithm=reptile"],
    "none": ["meta.algorithm=none"],
    "sasrec": ["meta.algorithm=sasrec"],
    "metasgd": ["meta.algorithm=metasgd"],
    "fomaml_init_query": ["meta.algorithm=fomaml", "meta.init_query_weight=0.5"],
}
RECORDED_THREADS = 2
# Measured quantities that depend on wall time or the machine, not on the computation.
NOT_PINNED = ("tasks_per_s", "tokens_per_s", "peak_memory_gb", "mfu", "lr")


class Recorder:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.rows.append({"step": step, **metrics})

    def close(self) -> None:
        return None


def run_variant(overrides: list[str]) -> dict[str, Any]:
    import torch

    from metarec_dist.config import load_config
    from metarec_dist.data import prepare_data
    from metarec_dist.runtime.context import LocalContext
    from metarec_dist.train.trainer import MetaTrainer

    cfg = load_config(
        Path(__file__).parents[2] / "configs" / "tiny.yaml",
        [
            f"train.meta_steps={STEPS}",
            "train.log_every=1",
            "optim.warmup_steps=0",
            "optim.lr=0.005",
            "train.eval_users=64",
            "data.synthetic_users=200",
            "logging.wandb=off",
            *overrides,
        ],
    )
    # The recording ran with 2 intra-op threads (a 2-core machine); another count splits the matmul sums
    # differently and the trajectory drifts by ~1e-4 within 20 steps. conftest restores the count afterwards.
    torch.set_num_threads(RECORDED_THREADS)
    rec = Recorder()
    MetaTrainer(cfg, LocalContext(None), prepare_data(cfg.data).user_splits(), logger=rec).fit()
    losses = [row["loss"] for row in rec.rows if "loss" in row]
    final = {k: v for row in rec.rows if "loss" not in row for k, v in row.items() if k.startswith("val/")}
    return {"loss": losses, "final": final}


def _legacy_overrides(name: str) -> list[str]:
    # Before issue 11, Meta-SGD was FOMAML with a model flag; the recording used that spelling.
    if name == "metasgd":
        return ["meta.algorithm=fomaml", "model.learn_inner_lr=true"]
    return VARIANTS[name]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_tiny_trajectory_is_unchanged(name):
    expected = json.loads(FIXTURE.read_text())[name]
    got = run_variant(VARIANTS[name])
    assert len(got["loss"]) == STEPS
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-6, abs=1e-7)
    assert got["final"].keys() == expected["final"].keys()
    for k, v in expected["final"].items():
        assert got["final"][k] == pytest.approx(v, rel=1e-6, abs=1e-7), k


if __name__ == "__main__" and "--record" in sys.argv:
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps({n: run_variant(_legacy_overrides(n)) for n in VARIANTS}, indent=1) + "\n")
    print(f"wrote {FIXTURE}")
