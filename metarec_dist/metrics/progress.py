"""A progress bar that is just another logger: meta-step, ETA (tqdm's), latest loss and validation NDCG."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from metarec_dist.config import Config


class ProgressBar:
    def __init__(self, total: int, initial: int = 0, desc: str = "meta-train") -> None:
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)
        self.postfix: dict[str, str] = {}

    @classmethod
    def for_run(cls, cfg: Config, resume_from: Path | None, at: int = 0) -> ProgressBar:
        """The bar of a run that resumes from the checkpoint ``resume_from`` (None: a fresh run): it starts
        at that checkpoint's meta-step, so it neither shows 0 until the first log nor counts the resumed
        steps in its rate and ETA. ``at``: a bar drawn at a report of that meta-step starts there too (the
        steps before it were not timed by it)."""
        start = max(resumed_step(resume_from), at)
        return cls(cfg.train.meta_steps, start, f"meta-train [{cfg.runtime.run_name}]")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if step > self.bar.n:
            self.bar.update(step - self.bar.n)
        for key, label in (("loss", "loss"), ("val/ndcg@10@k3", "val_ndcg@10")):
            if isinstance(metrics.get(key), float):
                self.postfix[label] = f"{metrics[key]:.4f}"
        self.bar.set_postfix(self.postfix, refresh=True)

    def close(self) -> None:
        self.bar.close()


def resumed_step(checkpoint: Path | None) -> int:
    """The meta-step of the checkpoint a run resumes from; 0 without one."""
    if checkpoint is None:
        return 0
    from metarec_dist.checkpoint import read_client_state

    return int(read_client_state(checkpoint)["step"])
