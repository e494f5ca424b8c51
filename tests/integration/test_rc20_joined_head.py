"""Session 20 (rayaddr20), against a real head started as docs/cluster.md says (``ray start --head
--node-ip-address=127.0.0.1`` with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: every server on 127.0.0.1):

- ``RAY_ADDRESS=auto`` joined nothing: Ray read the head's ``127.0.0.1:PORT`` from ``ray_current_cluster``,
  swapped it for the machine's address and waited for a GCS there for ever; now it joins.
- ``RAY_ADDRESS=127.0.0.1:<dashboard port>`` passed the reachability check and hung in ``ray.init``; now
  one line.

The head runs under ``ray start --block`` with every port its own (other Ray clusters of this user may run
on the machine) and a temp folder of its own, which ``RAY_TMPDIR`` points the driver at; terminating that
process stops the head (no ``ray stop``, which would stop every Ray node of this user).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ports import free_ports

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PORTS = (
    "port",
    "dashboard-port",
    "ray-client-server-port",
    "node-manager-port",
    "object-manager-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
)
WORKER_PORTS = 50

JOIN = r"""
import ray
from metarec_dist.errors import UserError
from metarec_dist.runtime.ray_launcher import check_ray_address, init_ray
try:
    check_ray_address()
except UserError as exc:
    print("USERERROR " + str(exc))
    raise SystemExit(0)
init_ray()
print("JOINED", ray.get_runtime_context().gcs_address, ray.cluster_resources().get("CPU"))
ray.shutdown()
"""


def worker_range_start(taken: set[int], width: int = WORKER_PORTS) -> int:
    """A free port whose range of ``width`` worker ports holds none of ``taken``: Ray refuses a head whose
    worker ports overlap a component's port ("... is trying to use a port number ... used by other
    components"), which two separate draws of free ports did in about 2% of runs (a CI failure)."""
    for _ in range(100):
        start = free_ports(1)[0]
        if start + width < 65536 and not any(start <= port <= start + width for port in taken):
            return start
    raise AssertionError(f"no free range of {width} worker ports clear of {sorted(taken)}")


@pytest.fixture(scope="module")
def head() -> Iterator[dict[str, object]]:
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent))
    if ray_bin is None:
        pytest.skip("no ray command beside this Python")
    tmp = tempfile.mkdtemp(prefix="mr20", dir="/tmp")  # short: Ray's socket paths live under it
    ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
    workers = worker_range_start(set(ports.values()))
    env = {
        **os.environ,
        "RAY_TMPDIR": tmp,
        "RAY_AUTH_MODE": "token",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    env.pop("RAY_ADDRESS", None)
    cmd = [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1"]
    cmd += [f"--{name}={port}" for name, port in ports.items()]
    cmd += [f"--min-worker-port={workers}", f"--max-worker-port={workers + WORKER_PORTS}", "--num-cpus=1"]
    cmd += ["--disable-usage-stats", f"--temp-dir={tmp}/ray"]
    log = Path(tmp, "ray-start.log")
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        recorded = Path(tmp, "ray", "ray_current_cluster")
        deadline = time.monotonic() + 60
        while not recorded.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if not recorded.exists():
            said = log.read_text(errors="replace")[-2000:]
            pytest.fail(f"ray start --head did not come up (exit code {proc.poll()}):\n{said}")
        yield {"tmp": tmp, "ports": ports, "recorded": recorded.read_text().strip()}
    finally:
        proc.send_signal(signal.SIGTERM)  # ray start --block stops the head's processes
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def join(head: dict[str, object], address: str) -> str:
    env = {**os.environ, "RAY_TMPDIR": str(head["tmp"]), "RAY_AUTH_MODE": "token", "RAY_ADDRESS": address}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", JOIN], env=env, capture_output=True, text=True, timeout=45, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_auto_joins_a_head_on_loopback(head):
    gcs = head["ports"]["port"]
    assert head["recorded"] == f"127.0.0.1:{gcs}"  # what Ray swapped for the machine's address
    assert f"JOINED 127.0.0.1:{gcs} 1.0" in join(head, "auto")


def test_the_dashboard_port_is_one_line(head):
    dashboard = head["ports"]["dashboard-port"]
    said = join(head, f"127.0.0.1:{dashboard}")
    assert said.startswith(f"USERERROR RAY_ADDRESS=127.0.0.1:{dashboard}: an HTTP server answers there")


# Session 21 (ray21): the head's other gRPC ports were told apart only by ray.init's own time-outs (30 s for
# ray://<GCS port>, 20 s for a raylet's port); now by one call of the service asked for.
@pytest.mark.parametrize(
    ("scheme", "port", "said"),
    [
        ("ray://", "port", "the server there is no Ray client server"),
        ("", "node-manager-port", "the server there is no Ray GCS (a raylet's port?)"),
        ("", "ray-client-server-port", "that is a Ray client server; set RAY_ADDRESS=ray://"),
    ],
)
def test_another_ray_port_of_the_head_is_one_line(head, scheme, port, said):
    address = f"{scheme}127.0.0.1:{head['ports'][port]}"
    assert join(head, address).startswith(f"USERERROR RAY_ADDRESS={address}: {said}")
