"""Session 19 (raycluster19): a Ray resume on changed data with another setting changed too printed the
driver's warning about that setting (``optim.lr: 0.002 -> 0.001``), then the workers' refusal of the data:
now one refusal. And what rank 0 says of a resume once it has compared the data (``data.dedup: first ->
last``) reached nobody without ``--verbose`` (Ray forwards no worker output): rank 0's warnings now go to
the driver through the progress actor, which prints them."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dc18_data_checks import _ray_checkpoint  # noqa: E402

from metarec_dist import checkpoint as ckpt  # noqa: E402
from metarec_dist.config import with_overrides  # noqa: E402
from metarec_dist.errors import UserError  # noqa: E402
from metarec_dist.runtime.ray_launcher import WithWorkerNotes, check_resume_settings, resume_point_of  # noqa: E402
from metarec_dist.runtime.ray_worker import NOTE_KEY, notes_to_driver  # noqa: E402


def _said(caplog) -> str:
    return " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_changed_data_with_another_setting_is_one_refusal(tmp_path, caplog):
    cfg, folder, state, ids = _ray_checkpoint(tmp_path)
    moved = with_overrides(cfg, ["data.seed=5", "optim.lr=0.01"])
    with caplog.at_level(logging.INFO, logger="metarec"):
        rank0_says = check_resume_settings(moved, resume_point_of(moved), 40, ids)  # the driver
    assert rank0_says == "all" and not caplog.records  # before: "... changed settings: optim.lr ..."
    with caplog.at_level(logging.WARNING, logger="metarec"), pytest.raises(UserError) as err:
        ckpt.check_resume_config(folder, state, moved, 40, ids, "b" * 64, say=rank0_says)  # other data
    assert not caplog.records and "data.seed: 0 -> 5" in str(err.value)
    # The same data after all: rank 0 says every change, once.
    ckpt.check_resume_config(folder, state, moved, 40, ids, "a" * 64, say=rank0_says)
    assert "data.seed: 0 -> 5" in _said(caplog) and "optim.lr" in _said(caplog)


def test_without_a_data_change_the_driver_says_the_rest(tmp_path, caplog):
    cfg, _, _, ids = _ray_checkpoint(tmp_path)
    moved = with_overrides(cfg, ["optim.lr=0.01"])
    with caplog.at_level(logging.WARNING, logger="metarec"):
        assert check_resume_settings(moved, resume_point_of(moved), 40, ids) == "data"
    assert "optim.lr" in _said(caplog)
    with pytest.raises(UserError, match="model.hidden_size"):  # a shape change: refused here, as before
        check_resume_settings(with_overrides(cfg, ["model.hidden_size=32"]), resume_point_of(cfg), 40, ids)


class _Actor:
    """A stand-in for the progress actor: ``actor.update.remote(step, metrics)`` is recorded."""

    def __init__(self) -> None:
        self.updates: list[tuple[int, dict]] = []
        self.update = self
        self.remote = lambda step, metrics: self.updates.append((step, metrics))


class _Sink:
    def __init__(self) -> None:
        self.logged: list[tuple[dict, int]] = []

    def log(self, metrics, step):
        self.logged.append((metrics, step))


def test_rank_0_warnings_are_printed_by_the_driver(caplog):
    actor, sink = _Actor(), _Sink()
    log = logging.getLogger("metarec")
    with notes_to_driver(actor):
        log.info("not sent")
        log.warning("resuming from %s with changed settings: %s", "ckpt", "data.dedup: 'first' -> 'last'")
    log.warning("after the run: not sent")
    assert [m[NOTE_KEY]["message"] for _, m in actor.updates] == [
        "resuming from ckpt with changed settings: data.dedup: 'first' -> 'last'"
    ]
    caplog.clear()
    driver = WithWorkerNotes(sink)
    with caplog.at_level(logging.WARNING, logger="metarec"):
        for step, metrics in [*actor.updates, (10, {"loss": 1.0})]:
            driver.log(metrics, step)
    assert _said(caplog) == "resuming from ckpt with changed settings: data.dedup: 'first' -> 'last'"
    assert sink.logged == [({"loss": 1.0}, 10)]  # the bar gets the metrics only
    with notes_to_driver(None):  # verbose: Ray shows the worker's own log, nothing is sent
        log.warning("shown by Ray")
    assert len(actor.updates) == 1


def test_with_nothing_checked_on_the_driver_rank_0_says_every_change(tmp_path):
    """Cloud storage (``s3://``): the driver finds no checkpoint, Ray's is resumed from; an
    ``optim.lr`` changed since went unsaid (rank 0 said only data settings)."""
    cfg, _, _, ids = _ray_checkpoint(tmp_path)
    assert check_resume_settings(cfg, None, 40, ids) == "all"
