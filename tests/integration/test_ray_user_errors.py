"""Issue 12 item 6 on Ray: a damaged checkpoint found by a worker on resume is one ``error:`` line naming
the file, not Ray's wrapper with two tracebacks. A real local cluster (started by ``metarec train``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SETTINGS = [
    "runtime.backend=ray",
    "runtime.num_workers=1",
    "logging.wandb=off",
    "data.synthetic_users=80",
    "model.hidden_size=16",
    "meta.meta_batch_size=8",
]


def _train(root: Path, steps: int, home: Path) -> subprocess.CompletedProcess:
    tiny = str(ROOT / "configs" / "tiny.yaml")
    args = [sys.executable, "-m", "metarec_dist.cli", "train", "--config", tiny]
    for s in [*SETTINGS, f"train.meta_steps={steps}", f"runtime.storage_path={root}", "runtime.run_name=r"]:
        args += ["--set", s]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0", HOME=str(home))
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)


def test_a_damaged_checkpoint_on_resume_is_one_error_line(tmp_path):
    first = _train(tmp_path / "runs", 2, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = tmp_path / "runs" / "r" / "checkpoint_step_000002"
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in ckpt.rglob("*") if p.is_file())
    (ckpt / "engine" / "latest").write_text("tampered")
    second = _train(tmp_path / "runs", 4, tmp_path)
    assert second.returncode == 2, second.stderr[-3000:]
    assert "Traceback" not in second.stderr, second.stderr[-3000:]
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith("error: checkpoint ") and "engine/latest" in last and str(ckpt) in last, last
