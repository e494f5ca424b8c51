"""An interrupted reproduction ends its training processes and says how to continue (status 130, no
traceback). SIGTERM, or SIGINT sent to the main process alone, used to leave it waiting for every running
training to finish (or, for SIGTERM, to leave them training as orphans)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# Run in a child process: reproduce's pool workers stand in for trainings with ``slow_run`` (spawned
# workers import it from this file, by module name, from the parent's sys.path).
SCRIPT = """
import faulthandler, signal, sys
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for the stacks of a hang
sys.path.insert(0, {here!r})
from metarec_dist.eval import reproduce
import test_up17_reproduce_interrupt as me
reproduce.train_and_evaluate = me.slow_run
sys.exit(reproduce.main(["--method", "a={tiny}", "--seeds", "0,1", "--jobs", "2", "--out", {out!r}]))
"""


def slow_run(spec, out, shots, reuse=False):
    (Path(out) / f"worker-{spec.seed}.pid").write_text(str(os.getpid()))
    time.sleep(120)
    return {}


def _group(pgid: int) -> list[str]:
    """The processes of a process group, as 'pid state command'."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")[:120]
                found.append(f"{stat.parent.name} {fields[0]} {cmd.decode(errors='replace')}")
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_main_process_alone_interrupted_ends_the_trainings(tmp_path, sig):
    out = tmp_path / "out"
    out.mkdir()
    code = SCRIPT.format(here=str(HERE), tiny=str(ROOT / "configs" / "tiny.yaml"), out=str(out))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while len(list(out.glob("worker-*.pid"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        pids = [int(p.read_text()) for p in out.glob("worker-*.pid")]
        assert len(pids) == 2, proc.communicate(timeout=5)
        started = time.monotonic()
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # seen twice in full suites on a loaded machine: say where it hung
            # The main process may have ended while a process it started keeps the output pipes open.
            exited, group = proc.poll(), _group(proc.pid)
            proc.send_signal(signal.SIGUSR1)
            time.sleep(2)
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(
                f"no end of output 60 s after signal {sig}; main process status {exited}; its process group "
                f"{group}; its threads (if it was alive):\n{proc.communicate()[1][-8000:]}"
            )
        assert time.monotonic() - started < 40  # not the 120 s the "trainings" take
        left = [pid for pid in pids if _alive(pid)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in [int(p.read_text()) for p in out.glob("worker-*.pid")]:
            if _alive(pid):  # this test's own stand-ins, should the code under test leave them
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().endswith(
        "the same command with --reuse trains only the others"
    )
    assert not left
