"""Session 22 (ray22): with 2 replicas `metarec serve` answered GET / before it counted itself started: Ray
Serve routes to a replica as soon as it is up, while ``serve.run`` still waits for the other one, and the
server's own readiness poll looks once a second. A SIGTERM then (a supervisor that saw the answer, a
rollback) said "interrupted" and exited 130, as a stop during the start-up; measured: first answer 44 s
into the start, SIGTERM, status 130. From the deployment on, a SIGTERM is now the server's normal stop
(status 0), so whatever answers has started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from metarec_dist.bench.serve_bench import free_port
from metarec_dist.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_a_sigterm_once_get_answers_is_a_clean_stop_with_two_replicas(trained, tmp_path):
    export = tmp_path / "export"
    assert main(["export", "--checkpoint", str(trained().folder), "--out", str(export)]) == 0
    port = free_port()
    cmd = [sys.executable, "-m", "metarec_dist.cli", "serve", "--checkpoint", str(export)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "--replicas", "2"],
        env={**env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own group: whatever a failure leaves is killed below
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        while not answers(f"http://127.0.0.1:{port}/"):
            assert proc.poll() is None, "".join(lines[-40:])
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # at the first answer: served, so a normal stop
        assert proc.wait(timeout=180) == 0, "".join(lines[-40:])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert not any(line.startswith("interrupted") for line in lines), lines
