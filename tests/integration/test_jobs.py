"""End to end: `metarec submit` against a real `ray start --head` on 127.0.0.1 with token auth."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from ports import free_ports

from metarec_dist.runtime.ray_launcher import LOOPBACK_ENV

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


FIXED_DEFAULT_PORTS = (
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "ray-client-server-port",
    "runtime-env-agent-port",
    "metrics-export-port",
)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A token-authenticated head node; stopped by its process ids at the end."""
    token = secrets.token_hex(16)
    tmp = tmp_path_factory.mktemp("rayhead")
    # The job entrypoint runs `python` on the cluster: make it this venv's, as a cluster image would.
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        # Ray's one-machine switch: every server of the node binds 127.0.0.1, not the machine's address
        # (`--node-ip-address` alone is replaced by the routable address; see runtime/ray_launcher.py)
        LOOPBACK_ENV: "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }
    port, dash, *fixed = free_ports(2 + len(FIXED_DEFAULT_PORTS))
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        # Ports Ray otherwise takes at fixed defaults (52365, 10001, ...): another cluster on the machine
        # holding one left this head without its dashboard agent, and every submission then got "HTTP 500:
        # No available agent to submit job" for minutes (seen with other Ray clusters running beside).
        *(f"--{name}={p}" for name, p in zip(FIXED_DEFAULT_PORTS, fixed, strict=True)),
        "--num-cpus=4",
        "--include-dashboard=true",
        f"--temp-dir={tmp}",
        "--disable-usage-stats",
    ]
    log = tmp / "ray-start.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", dash), timeout=1).close()
            break
        except OSError:
            time.sleep(1)
    else:
        _stop(proc)  # with the node processes it started, where it still runs (a bare kill left them)
        said = log.read_text(errors="replace")[-2000:]
        pytest.fail(f"ray head did not start (exit code {proc.poll()}):\n{said}")
    yield {"address": address, "token": token}
    _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    # Stopped as `ray stop --force` would: SIGTERM to `ray start --block` and the node's processes, then
    # SIGKILL after 5 s. Gently, the raylet drains and `ray start` waits ~30 s (measured) for a cluster
    # that only this test used.
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:  # `ray start` ended by itself: its node processes are not its children now
        children = []
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    proc.terminate()
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        child.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _submit(head, *args, token=True, storage="/tmp/metarec-test-jobs", **kw):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    if token:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head["token"])
    cmd = [
        str(BIN / "metarec"),
        "submit",
        "--address",
        head["address"],
        "--config",
        "configs/tiny.yaml",
        # the job's run folder must be absolute (a relative one would land in Ray's copy of the repo)
        "--set",
        f"runtime.storage_path={storage}",
        *args,
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, **kw)


def test_job_succeeds_with_checkpoint_summary_and_logs(head, tmp_path):
    out = _submit(
        head,
        "--set",
        "train.meta_steps=4",
        "--set",
        "runtime.num_workers=2",
        "--set",
        "runtime.run_name=job",
        "--set",
        "logging.wandb=off",
        "--wait",
        "--job-id",
        "metarec-ok",
        storage=str(tmp_path),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "job metarec-ok: SUCCEEDED" in out.stdout
    assert "== metarec train: summary ==" in out.stdout  # the job's own log, streamed back
    ckpt = tmp_path / "job" / "checkpoint_step_000004"
    assert (ckpt / "manifest.json").is_file()

    # the logs stay retrievable after the job ended (Ray's own CLI, with the token)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": head["token"]}
    logs = subprocess.run(
        [str(BIN / "ray"), "job", "logs", "--address", head["address"], "metarec-ok"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert logs.returncode == 0 and "checkpoint_step_000004" in logs.stdout

    # the same --job-id again: one line saying so, not the server's traceback
    again = _submit(head, "--set", "logging.wandb=off", "--job-id", "metarec-ok")
    assert again.returncode == 2, again.stdout[-3000:] + again.stderr[-3000:]
    last = again.stderr.strip().splitlines()[-1]
    assert last == "error: job id metarec-ok already exists on the cluster; choose another --job-id", last
    assert "Traceback" not in again.stderr


def test_failing_job_is_reported_failed(head, tmp_path):
    out = _submit(
        head,
        "--set",
        "data.format=csv",
        "--set",
        f"data.path={tmp_path}/missing.csv",
        "--set",
        "logging.wandb=off",
        "--wait",
        "--job-id",
        "metarec-bad",
        storage=str(tmp_path),
    )
    assert out.returncode == 1
    assert "job metarec-bad: FAILED" in out.stdout
    assert "missing.csv" in out.stdout


def test_submission_without_token_is_refused(head):
    out = _submit(head, "--set", "train.meta_steps=1", token=False)
    assert out.returncode == 2
    assert "error:" in out.stderr and (
        "401" in out.stderr or "nauthorized" in out.stderr or "token" in out.stderr
    )
