"""Fault injection around checkpoints (issue 12): kill -9 in the middle of a save, a full disk, a read-only
checkpoint folder, a manifest edited after the fact, and a second run on a run folder in use.

Every case ends in one of two ways: the run resumes from the last complete checkpoint, or it stops with a
message that names the file or folder (exit 2, no traceback). A complete checkpoint is never written over
or deleted: its files are compared byte for byte before and after.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trained import TINY_MODEL

from metarec_dist import checkpoint as ckpt
from metarec_dist.cli import main

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("fault_runner.py")
RUN = "faults"
SETTINGS = [
    *TINY_MODEL,
    "data.synthetic_users=60",
    "data.synthetic_items=40",
    "data.cache=false",
    "train.eval_users=8",
    "eval.shots=[1]",
    "logging.wandb=off",
    "checkpoint.every=2",
    "checkpoint.keep=5",
    f"runtime.run_name={RUN}",
]


def _args(storage: Path, steps: int, *extra: str) -> list[str]:
    sets = [*SETTINGS, f"runtime.storage_path={storage}", f"train.meta_steps={steps}", *extra]
    return [
        "train",
        "--config",
        str(ROOT / "configs" / "tiny.yaml"),
        *(a for s in sets for a in ("--set", s)),
    ]


def _train_here(capsys, storage: Path, steps: int) -> tuple[int, str, dict]:
    """``metarec train`` in this process: (exit code, stderr, the --json result or {})."""
    out = storage / f"result-{time.monotonic_ns()}.json"
    capsys.readouterr()
    rc = main([*_args(storage, steps), "--json", str(out)])
    result = json.loads(out.read_text()) if out.is_file() else {}
    return rc, capsys.readouterr().err, result


def _spawn(storage: Path, steps: int, env: dict[str, str] | None = None, preexec=None) -> subprocess.Popen:
    """``metarec train`` in a subprocess (through the fault runner, which adds its hook only when asked)."""
    return subprocess.Popen(
        [sys.executable, str(RUNNER), *_args(storage, steps)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec,
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _step(storage: Path, step: int) -> Path:
    return ckpt.step_dir(storage / RUN, step)


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory) -> Path:
    """A run folder with one complete checkpoint (meta-step 2), trained once and copied by each test."""
    storage = tmp_path_factory.mktemp("template")
    assert main(_args(storage, 2)) == 0
    ckpt.verify(_step(storage, 2))
    return storage / RUN


@pytest.fixture
def storage(tmp_path, two_steps) -> Path:
    shutil.copytree(two_steps, tmp_path / RUN)
    return tmp_path


def _stopped_naming(proc: subprocess.Popen, *names: str) -> str:
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 2, err
    assert "Traceback" not in err, err
    for name in names:
        assert name in err, err
    return err


# ------------------------------------------------------------------------------------ the cases


def test_kill_9_during_a_checkpoint_write_then_resume(storage, capsys, caplog):
    step2, step4 = _step(storage, 2), _step(storage, 4)
    before = _files(step2)
    flag = storage / "paused"
    proc = _spawn(storage, 4, env={"FAULT_PAUSE_STEP": "4", "FAULT_FLAG": str(flag)})
    try:
        deadline = time.time() + 240
        while not flag.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.time() < deadline, "the training process never reached the step-4 save"
            time.sleep(0.1)
        assert (step4 / "engine").is_dir() and not (step4 / ckpt.MANIFEST).exists()  # shards, no manifest

        # While it holds the run folder, a second run with the same name is refused, naming the holder.
        rc, err, _ = _train_here(capsys, storage, 4)
        assert rc == 2 and f"in use by another metarec run (pid {proc.pid} on " in err, err
    finally:
        proc.kill()  # SIGKILL: no cleanup of any kind runs
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    # The lock died with its holder; the run resumes from the last complete checkpoint and says what it
    # skipped; the interrupted folder is moved aside, not written over.
    rc, err, result = _train_here(capsys, storage, 4)
    assert rc == 0, err
    assert result["resumed_from"] == 2 and result["step"] == 4
    assert f"skipping incomplete checkpoint(s) {step4}" in caplog.text
    assert _files(step2) == before
    ckpt.verify(step4)
    assert (step4.parent / "step_000004.old-1" / "engine").is_dir()


@pytest.mark.parametrize("full_at", ["model.safetensors", "optimizer.pt"])
def test_a_full_disk_during_a_checkpoint_stops_naming_it(storage, capsys, full_at):
    step2, step4 = _step(storage, 2), _step(storage, 4)
    before = _files(step2)
    # a file-size limit between the two engine files' sizes, or below the first one written
    sizes = sorted(len(v) for k, v in before.items() if k.startswith("engine/"))
    limit = sizes[0] // 2 if full_at == "model.safetensors" else (sizes[0] + sizes[1]) // 2
    assert len(before[f"engine/state/{full_at}"]) > limit

    def small_disk() -> None:  # writes past the limit fail with EFBIG instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    _stopped_naming(_spawn(storage, 4, preexec=small_disk), f"could not write checkpoint {step4}")
    assert _files(step2) == before and not (step4 / ckpt.MANIFEST).exists()

    if full_at == "model.safetensors":
        return  # the resume after a failed save is the same in both cases: checked once
    rc, err, result = _train_here(capsys, storage, 4)  # room again: resumes from the complete one
    assert rc == 0 and result["resumed_from"] == 2, err
    assert _files(step2) == before
    ckpt.verify(step4)


def _without_dac_override() -> None:
    """In the child, before exec: drop the capabilities that let root write through file permissions
    (CAP_DAC_OVERRIDE = 1, CAP_DAC_READ_SEARCH = 2, CAP_FOWNER = 3) from the bounding set, so the exec'd
    training process, though uid 0, is held to the folder's mode like any user."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_read_only_checkpoint_folder_stops_naming_it(storage):
    step2, step4 = _step(storage, 2), _step(storage, 4)
    before = _files(step2)
    step2.parent.chmod(0o555)
    try:
        try:
            proc = _spawn(storage, 4, preexec=_without_dac_override if os.geteuid() == 0 else None)
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"running as root without CAP_SETPCAP: cannot make a folder read-only ({exc})")
        _stopped_naming(proc, f"could not write checkpoint {step4}", "Permission denied")
    finally:
        step2.parent.chmod(0o755)
    assert _files(step2) == before and not step4.exists()


@pytest.mark.parametrize("edit", ["sha256", "size", "garbage"])
def test_a_manifest_edited_after_the_fact_stops_naming_the_file(storage, capsys, edit):
    step2 = _step(storage, 2)
    path = step2 / ckpt.MANIFEST
    manifest = json.loads(path.read_text())
    shard = sorted(manifest["files"])[0]
    if edit == "garbage":
        path.write_text(path.read_text()[:40])
        named = str(path)
    else:
        manifest["files"][shard][edit] = (
            "0" * 64 if edit == "sha256" else manifest["files"][shard]["size"] + 1
        )
        path.write_text(json.dumps(manifest))
        named = f"shard {shard}"
    before = _files(step2)
    rc, err, _ = _train_here(capsys, storage, 4)
    assert rc == 2 and named in err and str(step2) in err, err
    assert _files(step2) == before and not _step(storage, 4).exists()


def test_every_manifest_deleted_is_never_a_fresh_start(storage, capsys):
    step2 = _step(storage, 2)
    (step2 / ckpt.MANIFEST).unlink()
    before = _files(step2)
    rc, err, _ = _train_here(capsys, storage, 4)
    assert rc == 2 and "none is complete" in err and "step_000002" in err and "runtime.run_name" in err, err
    assert _files(step2) == before and not _step(storage, 4).exists()


def test_resume_false_over_existing_checkpoints_is_refused(storage, capsys):
    before = _files(_step(storage, 2))
    capsys.readouterr()
    rc = main([*_args(storage, 4), "--set", "checkpoint.resume=false"])
    err = capsys.readouterr().err
    assert rc == 2 and "checkpoint.resume=false" in err and "step_000002" in err, err
    assert _files(_step(storage, 2)) == before and not _step(storage, 4).exists()
