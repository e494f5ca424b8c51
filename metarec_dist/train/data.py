"""From the ``data:`` config section to the trainer's input (per-user sequences per split)."""

from __future__ import annotations

from metarec_dist.data.config import DataConfig
from metarec_dist.train.trainer import TrainData


def load_train_data(cfg: DataConfig) -> TrainData:
    from metarec_dist.data import prepare_data

    prepared = prepare_data(cfg)
    return TrainData(
        train=prepared.sequences("train"),
        valid=prepared.sequences("valid"),
        num_items=prepared.num_items,
        item_titles=prepared.item_titles,
    )
