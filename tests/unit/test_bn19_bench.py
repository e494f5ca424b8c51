"""`metarec bench` user pass (session 19): what a benchmark leaves behind when it is interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from metarec_dist.bench import serve_bench


def test_ctrl_c_while_the_server_starts_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The `metarec serve` child runs in its own session (the terminal's SIGINT never reaches it): a Ctrl-C
    while the bench waits for it to come up must stop it, not leave it (and its Ray cluster) running."""
    started: list[subprocess.Popen] = []
    popen = subprocess.Popen

    def never_up(cmd: list[str], **kwargs: object) -> subprocess.Popen:  # a server that never answers
        proc = popen([sys.executable, "-c", "import time; time.sleep(120)"], **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(serve_bench.subprocess, "Popen", never_up)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            serve_bench.start_server("unused", serve_bench.free_port(), timeout_s=60)
    finally:
        timer.cancel()
        left = [p for p in started if p.poll() is None]
        for p in left:  # never leave the stand-in behind, even when the test fails
            p.kill()
            p.wait()
    assert len(started) == 1
    assert not left, "the server child was left running after Ctrl-C"
