"""A relative train.init_from on Ray: the workers run in folders of their own, where it named nothing
(`error: train.init_from runs/warm: no such file or folder`, after Ray had started, although the driver had
found it). `metarec train` now gives every stage the path made absolute against the current folder."""

from __future__ import annotations

import pytest

from metarec_dist.checkpoint import export
from metarec_dist.config import with_overrides
from metarec_dist.runtime.context import LocalContext
from metarec_dist.train.trainer import MetaTrainer


@pytest.mark.parametrize("given", ["exports/old", "./exports/../exports/old-s{seed}"])
def test_a_relative_source_reaches_the_trainer_absolute(tiny_cfg, synth_data, tmp_path, monkeypatch, given):
    from metarec_dist.train import launch

    out = MetaTrainer(
        with_overrides(tiny_cfg, ["train.meta_steps=1"]), LocalContext(tmp_path / "r"), synth_data
    )
    checkpoint = out.fit()["checkpoint"]
    export(checkpoint, tmp_path / "exports" / "old")
    export(checkpoint, tmp_path / "exports" / "old-s0")
    seen = []
    monkeypatch.setattr(launch, "train_one", lambda cfg, verbose=False: seen.append(cfg) or {})
    monkeypatch.chdir(tmp_path)
    launch.train(with_overrides(tiny_cfg, [f"train.init_from={given}"]))
    expected = str(tmp_path / "exports" / ("old" if "seed" not in given else "old-s{seed}"))
    assert seen[0].train.init_from == expected
    assert seen[0].train.init_from_path == str(tmp_path / "exports" / given.rsplit("/", 1)[-1].format(seed=0))
