"""Session 19 (raycluster19): a Ray Train worker killed at about step 105 of a run saving every 20 steps
(``runtime.max_failures=1``) was restarted from step 60, the latest checkpoint Ray's controller had
registered: steps 61-100 were trained again and the whole checkpoints 80 and 100 moved aside as
``*.old-1``, never pruned. The restarted workers now take the run folder's newest checkpoint that every rank
finished."""

from __future__ import annotations

from pathlib import Path

from metarec_dist import checkpoint as ckpt
from metarec_dist.runtime.ray_worker import RayContext


def _checkpoint(run: Path, step: int, ranks: int = 2, uploaded: int = 2) -> Path:
    """A Ray checkpoint of ``ranks`` shards of which ``uploaded`` reached the run folder."""
    folder = run / ckpt.ray_checkpoint_name(step)
    folder.mkdir(parents=True)
    files = {f"shard_{r}.pt": {"size": 4, "sha256": "0" * 64} for r in range(ranks)}
    for rel in list(files)[:uploaded]:
        (folder / rel).write_bytes(b"abcd")
    ckpt.write_manifest(folder, step, ranks, files)
    return folder


def _context(run: Path, resume_from: Path | None) -> RayContext:
    ctx = RayContext.__new__(RayContext)  # no Ray Train session: only what found_checkpoint reads
    ctx.run_dir, ctx.resume_from = run, resume_from
    return ctx


def test_a_restarted_worker_takes_the_newest_checkpoint_every_rank_finished(tmp_path):
    run = tmp_path / "run"
    _checkpoint(run, 60)
    eighty = _checkpoint(run, 80)
    hundred = _checkpoint(run, 100)
    _checkpoint(run, 120, uploaded=1)  # rank 1 died during its upload: its shard never arrived
    (run / ckpt.ray_checkpoint_name(140)).mkdir()  # no manifest yet
    assert _context(run, None).found_checkpoint() == hundred  # a fresh run's failover
    assert _context(run, eighty).found_checkpoint() == hundred  # a resumed run's failover
    (hundred / "shard_1.pt").write_bytes(b"ab")  # cut short
    assert _context(run, None).found_checkpoint() == eighty


def test_the_drivers_checkpoint_stays_when_nothing_newer_is_whole(tmp_path):
    run = tmp_path / "run"
    assert _context(run, None).found_checkpoint() is None  # a fresh run folder
    older = _checkpoint(run, 20)
    newest = _checkpoint(run, 40, uploaded=1)  # the driver's pick (a manifest): loading names the shard
    assert _context(run, newest).found_checkpoint() == newest
    assert _context(run, older).found_checkpoint() == older
    assert _context(None, older).found_checkpoint() == older  # cloud storage: nothing to look at here


def test_a_rerun_past_rays_record_reports_the_checkpoint_it_resumed_from(tmp_path):
    """A job stopped at step 100 still saved 150 (= train.meta_steps) before its workers went, which Ray
    never registered. Its re-run resumed from 150 and trained nothing; Ray's result was still step 100's:
    the summary named checkpoint_step_000100 and said "stopped early; raise train.early_stop_patience"."""
    from metarec_dist.config import load_config
    from metarec_dist.runtime.ray_launcher import with_resume_point
    from metarec_dist.train.summary import next_step_line

    cfg = load_config("configs/tiny.yaml", ["train.meta_steps=150"])
    point = _checkpoint(tmp_path / "run", 150)
    rays = {"step": 100.0, "loss": 4.2, "checkpoint": str(tmp_path / "run" / "checkpoint_step_000100")}
    run = str(tmp_path / "run")
    out = with_resume_point({**rays, "run_path": run}, point)
    assert out == {"run_path": run, "step": 150, "checkpoint": str(point), "resumed_from": 150}
    assert next_step_line(out, cfg).startswith("finished:   already, at meta-step 150;")
    assert with_resume_point({"run_path": "r"}, point)["checkpoint"] == str(point)  # Ray registered none
    trained_on = with_resume_point({"step": 200.0, "loss": 4.0}, point)
    assert trained_on == {"step": 200.0, "loss": 4.0}  # a run that trained past it keeps its own result
