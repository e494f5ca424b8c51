"""A progress bar that is just another logger: meta-step, ETA (tqdm's), latest loss and validation NDCG."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm


class ProgressBar:
    def __init__(self, total: int, initial: int = 0, desc: str = "meta-train") -> None:
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)
        self.postfix: dict[str, str] = {}

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if step > self.bar.n:
            self.bar.update(step - self.bar.n)
        for key, label in (("loss", "loss"), ("val/ndcg@10@k3", "val_ndcg@10")):
            if isinstance(metrics.get(key), float):
                self.postfix[label] = f"{metrics[key]:.4f}"
        self.bar.set_postfix(self.postfix, refresh=True)

    def close(self) -> None:
        self.bar.close()
