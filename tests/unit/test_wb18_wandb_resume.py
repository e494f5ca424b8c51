"""W&B across resumes and processes (offline W&B): the rows of a resumed offline run follow the earlier ones,
and the driver learns the W&B run from the process that logs, not from its own environment."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from metarec_dist.config import load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wandb_reader import PINNED_WANDB, _payloads  # noqa: E402


def _steps(wandb_file: Path, rows: int) -> list[int]:
    """The W&B step of every history row of one offline ``.wandb`` file, once it has ``rows`` rows (W&B's
    writer, its own process, may trail ``run.finish()`` on a loaded machine)."""
    from wandb.proto import wandb_internal_pb2 as pb

    for _ in range(120):
        steps = []
        for payload in _payloads(wandb_file.read_bytes()):
            rec = pb.Record()
            rec.ParseFromString(payload)
            if rec.WhichOneof("record_type") == "history":
                steps.append(rec.history.step.num)
        if len(steps) >= rows:
            break
        time.sleep(0.5)
    return steps


def _logger(run_dir: Path, project: str = "wb18-config"):
    from metarec_dist.metrics.wandb_logger import WandbLogger

    return WandbLogger(project, None, "wb18", "wb18-0123abcd", {}, "offline", run_dir, setting="offline")


def _pinned() -> None:
    import wandb

    if wandb.__version__ != PINNED_WANDB:
        pytest.skip(f"the .wandb reader is written for wandb {PINNED_WANDB}")


def test_a_resumed_offline_run_goes_on_at_the_next_step(tmp_path, monkeypatch):
    """Each offline session wrote steps 0, 1, ...: `wandb sync` of both folders (one run, resumed in start
    order) put the second session's rows over the first's. Now a row's W&B step is its meta-step."""
    _pinned()
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    # The second session resumed from the checkpoint at meta-step 4. Each writes its own folder (a real
    # resume's is named after its start second; two sessions within one second here would share one).
    for session, steps in (("first", (2, 4)), ("second", (6, 8))):
        logger = _logger(tmp_path / session)
        for step in steps:
            logger.log({"loss": 1.0 / step}, step)
        logger.log({"val/ndcg@10@k3": 0.5}, steps[-1])  # the final validation, at the last step
        logger.close()
    (first,) = tmp_path.glob("first/wandb/offline-run-*-wb18-0123abcd/run-*.wandb")
    (second,) = tmp_path.glob("second/wandb/offline-run-*-wb18-0123abcd/run-*.wandb")
    assert (_steps(first, 2), _steps(second, 2)) == ([2, 4], [6, 8])


def test_steps_a_resumed_online_run_already_has_are_not_logged_again(caplog):
    """Online, W&B knows the run's next step; the meta-steps re-trained after the checkpoint are below it
    (W&B would drop each with a warning): skipped, said once."""
    from metarec_dist.metrics.wandb_logger import WandbLogger

    class Run:
        id = "wb18-0123abcd"
        logged: list[int] = []

        def log(self, payload, step):
            self.logged.append(step)

    logger = WandbLogger.__new__(WandbLogger)
    logger.run, logger.first_step, logger._skipped = Run(), 7, False
    with caplog.at_level("INFO", logger="metarec"):
        for step in (5, 6, 7, 8):
            logger.log({"loss": 0.1}, step)
    assert Run.logged == [7, 8]
    assert caplog.text.count("already has rows up to step 6") == 1, caplog.text


def test_the_driver_reports_the_wandb_run_its_logging_process_used(tmp_path, monkeypatch):
    """The summary said WANDB_PROJECT of the driver's environment, while rank 0 (a Ray worker: the node's or
    the job's environment) logged to another project."""
    _pinned()
    from metarec_dist.runtime.ray_launcher import wandb_used

    cfg = load_config(
        None,
        [f"runtime.storage_path={tmp_path}", "runtime.run_name=wb18", "logging.wandb=offline"],
    )
    from metarec_dist.metrics.wandb_logger import describe, run_id
    from metarec_dist.run_folder import local_run_dir, storage_root

    rid = run_id("wb18", storage_root(cfg.runtime))
    monkeypatch.setenv("WANDB_PROJECT", "wb18-worker-env")  # as rank 0 sees it
    from metarec_dist.metrics.wandb_logger import WandbLogger

    run_dir = local_run_dir(cfg.runtime)
    logger = WandbLogger("wb18-config", None, "wb18", rid, {}, "offline", run_dir, setting="offline")
    logger.close()
    monkeypatch.setenv("WANDB_PROJECT", "wb18-driver-env")  # the driver's
    record = wandb_used(cfg)["wandb"]
    assert (record["project"], record["id"], record["mode"]) == ("wb18-worker-env", rid, "offline")
    assert describe(record) == f"<default entity>/wb18-worker-env/{rid} (offline)"
    assert Path(record["sync_dir"]).parent == local_run_dir(cfg.runtime) / "wandb"


def test_no_record_of_another_run_id_or_with_wandb_off(tmp_path):
    """A run folder moved here holds the record of the W&B run of its old path: not this run's."""
    from metarec_dist.metrics.wandb_logger import read_record, write_record
    from metarec_dist.runtime.ray_launcher import wandb_used

    write_record(tmp_path / "wb18", {"id": "wb18-ffffffff", "project": "p", "mode": "offline"})
    assert read_record(tmp_path / "wb18", "wb18-ffffffff")["project"] == "p"
    base = [f"runtime.storage_path={tmp_path}", "runtime.run_name=wb18"]
    assert wandb_used(load_config(None, [*base, "logging.wandb=offline"])) == {}
    assert wandb_used(load_config(None, [*base, "logging.wandb=off"])) == {}
    assert read_record("s3://bucket/runs/wb18") is None


def test_a_run_that_cannot_say_its_step_skips_nothing():
    """``run.step`` raises in W&B's shared mode (and may time out): the logger still starts."""
    from metarec_dist.metrics.wandb_logger import next_step

    class Shared:
        @property
        def step(self) -> int:
            raise RuntimeError("run.step is not supported in shared mode")

    class Resumed:
        step = 7

    assert (next_step(Shared()), next_step(Resumed())) == (0, 7)
