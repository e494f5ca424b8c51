"""Tiny trained models for the tests that read a checkpoint, an export or a trained model: each distinct
setting is trained once per session (``trained`` in tests/conftest.py) instead of once per test or module.

The runs are shared: a test reads them, and writes (exports, damaged copies, resumed runs) under its own
tmp_path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feature_data import feature_config

from metarec_dist.config import Config, load_config

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")

# The tiny config's model, tasks and meta-batch shrunk (also the integration tests' model).
TINY_MODEL = [
    "model.hidden_size=16",
    "model.num_heads=2",
    "model.adapter_rank=2",
    "model.max_seq_len=16",
    "tasks.support_max=5",
    "tasks.query_size=3",
    "meta.meta_batch_size=8",
]
# ... trained for 2 steps: about a second.
SMALL = [*TINY_MODEL, "train.meta_steps=2", "train.log_every=1"]
# Two meta-steps on 60 synthetic users, no validation, no W&B: the Ray integration tests' runs.
RAY_SMALL = [
    *TINY_MODEL,
    "train.meta_steps=2",
    "train.eval_every=0",
    "data.format=synthetic",
    "data.synthetic_users=60",
    "data.synthetic_items=30",
    "data.cache=false",
    "logging.wandb=off",
]
# The synthetic data set and evaluation settings of the CLI tests (evaluate, recommend, export).
SYNTHETIC = [
    "data.format=synthetic",
    "data.synthetic_users=80",
    "data.synthetic_items=30",
    "data.synthetic_groups=3",
    "logging.wandb=off",
    "eval.n_boot=50",
    "eval.shots=[1,3]",
]


def local_config(storage: Path, run_name: str, *settings: str) -> Config:
    """The defaults with TINY_MODEL on 60 synthetic users, no validation and no W&B (``settings`` win):
    seconds-long local runs for tests of the loop's bookkeeping (resume, progress bars, W&B ids)."""
    return load_config(
        None,
        [
            *TINY_MODEL,
            "train.log_every=2",
            "train.eval_every=0",
            "data.synthetic_users=60",
            "data.synthetic_items=40",
            "data.cache=false",
            "logging.wandb=off",
            f"runtime.storage_path={storage}",
            f"runtime.run_name={run_name}",
            *settings,
        ],
    )


def train_args(root: Path, name: str, *settings: str, base: str = TINY) -> list[str]:
    """``metarec train`` on the tiny config with SMALL, SYNTHETIC and ``settings`` (later ones win) into
    ``root/name``."""
    args = ["train", "--config", base]
    for s in [*SMALL, *SYNTHETIC, f"runtime.storage_path={root}", f"runtime.run_name={name}", *settings]:
        args += ["--set", s]
    return args


@dataclass(frozen=True)
class TrainedRun:
    """A finished run: its folder (``metarec train``'s layout), last checkpoint, config, user splits, the
    trainer (its model holds the trained weights) and ``fit()``'s summary. Read it; do not change it."""

    folder: Path
    checkpoint: Path
    cfg: Config
    data: Any
    trainer: Any
    out: dict[str, Any]


class TrainedRuns:
    """``runs(*settings, features=False, base=TINY, replica=0)``: the run of SMALL (+ SYNTHETIC unless
    ``features``) and ``settings`` on ``base`` (None: the built-in defaults), trained on first use.

    ``features`` trains on the RecBole set with user and item features of tests/feature_data.py; ``replica``
    trains the same settings again into another folder (to compare two runs of one seed)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs: dict[tuple, TrainedRun] = {}

    def config(self, *settings: str, features: bool = False, base: str | None = TINY) -> Config:
        """The config a run of these settings trains with (the feature data set written once per session)."""
        if features:
            return feature_config(self.root, [*SMALL, *settings], base=base)
        return load_config(base, [*SMALL, *SYNTHETIC, *settings])

    def __call__(
        self, *settings: str, features: bool = False, base: str | None = TINY, replica: int = 0
    ) -> TrainedRun:
        key = (settings, features, base, replica)
        if key not in self.runs:
            name = f"run{len(self.runs)}"
            place = [f"runtime.storage_path={self.root}", f"runtime.run_name={name}"]
            self.runs[key] = train(self.config(*settings, *place, features=features, base=base))
        return self.runs[key]


def train(cfg: Config) -> TrainedRun:
    """Train ``cfg`` here into its run folder, as ``metarec train`` does with runtime.backend=local."""
    from metarec_dist.data import prepare_data
    from metarec_dist.run_folder import local_run_dir
    from metarec_dist.runtime.context import LocalContext
    from metarec_dist.train.trainer import MetaTrainer

    folder = local_run_dir(cfg.runtime)
    data = prepare_data(cfg.data).user_splits()
    trainer = MetaTrainer(cfg, LocalContext(folder, cfg.checkpoint.keep), data)
    out = trainer.fit()
    return TrainedRun(folder, Path(out["checkpoint"]), cfg, data, trainer, out)
