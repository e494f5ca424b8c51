"""Session 20: a re-run under the same run name that names another ``train.init_from`` source (or adds or
drops one, or adds a ``train.pretrain``) than the run started from resumed the run from its own checkpoint
and silently ignored the new source (only a changed-settings warning). It is now one line naming the key
and both sources, before any data is read or a first stage trained; the same source still resumes."""

from __future__ import annotations

import pytest
import yaml

from metarec_dist.checkpoint import export
from metarec_dist.config import with_overrides
from metarec_dist.errors import UserError
from metarec_dist.runtime.context import LocalContext
from metarec_dist.train import launch
from metarec_dist.train.trainer import MetaTrainer


@pytest.fixture
def started(tiny_cfg, synth_data, tmp_path):
    """A 3-step run `next` in tmp_path started from the export A of a `sasrec` run; B: another export."""
    sasrec = MetaTrainer(
        with_overrides(tiny_cfg, ["meta.algorithm=sasrec"]), LocalContext(tmp_path / "s"), synth_data
    )
    checkpoint = sasrec.fit()["checkpoint"]
    a, b = export(checkpoint, tmp_path / "A"), export(checkpoint, tmp_path / "B")
    place = [f"runtime.storage_path={tmp_path}", "runtime.run_name=next"]
    cfg = with_overrides(tiny_cfg, [*place, f"train.init_from={a}"])
    MetaTrainer(cfg, LocalContext(tmp_path / "next"), synth_data).fit()
    return cfg, a, b


def _never(cfg, verbose=False):
    raise AssertionError(f"trained {cfg.runtime.run_name}: the refusal must come before any training")


def test_another_source_on_resume_is_refused_naming_both(started, synth_data, tmp_path, monkeypatch):
    cfg, a, b = started
    longer = with_overrides(cfg, ["train.meta_steps=5"])
    other = with_overrides(longer, [f"train.init_from={b}"])
    monkeypatch.setattr(launch, "train_one", _never)
    with pytest.raises(UserError) as err:
        launch.train(other)  # before: resumed from A's run, B never read
    text = str(err.value)
    assert text.startswith("train.init_from: ") and "\n" not in text
    assert str(a) in text and str(b) in text and "runtime.run_name" in text
    with pytest.raises(UserError, match=r"^train\.init_from: .*no source \(from scratch\)"):
        launch.train(with_overrides(longer, ["train.init_from=null"]))
    # The trainer itself refuses too (the Ray workers' and any caller's resume).
    with pytest.raises(UserError, match=r"^train\.init_from: "):
        MetaTrainer(other, LocalContext(tmp_path / "next"), synth_data).fit()
    # The same source resumes, as before.
    out = MetaTrainer(longer, LocalContext(tmp_path / "next"), synth_data).fit()
    assert out["resumed_from"] == 3 and out["step"] == 5
    monkeypatch.setattr(launch, "train_one", lambda cfg, verbose=False: {"step": 5})
    assert launch.train(longer)["step"] == 5


def test_a_first_stage_added_on_resume_is_refused_before_it_trains(
    tiny_cfg, synth_data, tmp_path, monkeypatch
):
    place = [f"runtime.storage_path={tmp_path}", "runtime.run_name=plain"]
    cfg = with_overrides(tiny_cfg, place)
    MetaTrainer(cfg, LocalContext(tmp_path / "plain"), synth_data).fit()  # from scratch
    stage = tmp_path / "stage1.yaml"
    model = {"hidden_size": 16, "num_heads": 2, "adapter_rank": 2, "max_seq_len": 16}  # tiny_cfg's
    stage.write_text(yaml.safe_dump({"meta": {"algorithm": "sasrec", "meta_batch_size": 8}, "model": model}))
    monkeypatch.setattr(launch, "train_one", _never)  # before: stage 1 trained, then ignored by the resume
    with pytest.raises(UserError, match=r"^train\.pretrain: .*no source \(from scratch\).*train\.pretrain "):
        launch.train(with_overrides(cfg, [f"train.pretrain={stage}", "train.meta_steps=5"]))
