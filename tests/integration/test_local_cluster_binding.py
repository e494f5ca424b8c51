"""Issue 12 item 2: a Ray cluster that ``init_ray`` starts listens on loopback only and requires a token.

The cluster is started in a child process (``init_ray`` sets process-wide Ray settings that must not leak
into the other tests); the child lists the listening sockets of itself and every process under it (GCS,
raylet, workers, agents, dashboard, autoscaler monitor) with psutil, while the cluster runs tasks.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, os, sys, time
import psutil
import ray
from metarec_dist.runtime.ray_launcher import init_ray, shutdown_ray

init_ray(num_cpus=2, dashboard=sys.argv[1] == "1")

@ray.remote
def pid():
    return os.getpid()

ray.get([pid.remote() for _ in range(2)])  # workers up, so their servers are listed too
time.sleep(2)  # agents and exporters start a moment after the node
me = psutil.Process()
procs = {p.pid: p for p in [me, *me.children(recursive=True)]}
listening = [
    {"ip": c.laddr.ip, "port": c.laddr.port, "proc": " ".join(procs[c.pid].cmdline()[:2])[-80:]}
    for c in psutil.net_connections(kind="inet")
    if c.status == psutil.CONN_LISTEN and c.pid in procs
]
auth = {}
for p in procs.values():
    try:
        name = p.name()
        if name in ("gcs_server", "raylet"):
            auth[name] = p.environ().get("RAY_AUTH_MODE")
    except psutil.Error:
        pass
from ray._private.authentication.authentication_utils import is_token_auth_enabled
print("PROBE" + json.dumps({"listening": listening, "auth": auth, "driver_token": is_token_auth_enabled()}))
shutdown_ray()
"""


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)  # "::ffff:127.0.0.1": a dual-stack socket on 127.0.0.1
    return (mapped or addr).is_loopback


@pytest.mark.parametrize("dashboard", [False, True], ids=["default", "dashboard"])
def test_a_local_cluster_listens_on_loopback_only_and_requires_a_token(dashboard, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env.update(PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0", HOME=str(tmp_path))  # token file in HOME
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "1" if dashboard else "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("PROBE"))
    report = json.loads(line.removeprefix("PROBE"))
    listening = report["listening"]
    exposed = [s for s in listening if not _is_loopback(s["ip"])]
    assert not exposed, f"listening on a non-loopback address: {exposed}"
    servers = " ".join(s["proc"] for s in listening)
    assert "gcs_server" in servers and "raylet" in servers, listening  # the check saw the cluster
    assert report["auth"] == {"gcs_server": "token", "raylet": "token"} and report["driver_token"], report
    # runtime.dashboard=true says where the dashboard is (Ray's own line is quieted): a port listening here
    said = re.findall(r"^Ray dashboard: http://127\.0\.0\.1:(\d+)$", proc.stderr, re.MULTILINE)
    if dashboard:
        assert len(said) == 1 and int(said[0]) in {s["port"] for s in listening}, proc.stderr[-2000:]
    else:
        assert not said, proc.stderr[-2000:]


GROUP_PROBE = r"""
import json, os, sys
from pathlib import Path

import psutil
import ray.train
from ray.train.torch import TorchConfig, TorchTrainer

from metarec_dist.runtime.loopback_group import LoopbackTorchConfig
from metarec_dist.runtime.ray_launcher import init_ray, shutdown_ray

out = Path(sys.argv[1])
init_ray(num_cpus=4)


def group_sockets(folder):
    # each worker: an all-reduce over the group, then its own process's listening sockets
    import torch
    import torch.distributed as dist

    total = torch.ones(1) * (dist.get_rank() + 1)
    dist.all_reduce(total)
    me = os.getpid()
    listening = [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN]
    ips = [c.laddr.ip for c in listening if c.pid == me]
    Path(folder, f"rank{dist.get_rank()}.json").write_text(json.dumps({"sum": float(total), "ips": ips}))


report = {}
for name, config in (("loopback", LoopbackTorchConfig), ("stock", TorchConfig)):
    folder = out / name
    folder.mkdir()
    TorchTrainer(
        lambda: group_sockets(str(folder)),
        scaling_config=ray.train.ScalingConfig(num_workers=2),
        run_config=ray.train.RunConfig(name=name, storage_path=str(out / "storage")),
        torch_config=config(backend="gloo"),
    ).fit()
    report[name] = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(2)]
print("PROBE" + json.dumps(report))
shutdown_ray()
"""


def test_the_training_workers_process_group_listens_on_loopback_only(tmp_path):
    """The workers' torch process group on a cluster metarec starts (``LoopbackTorchConfig``, what
    ``build_trainer`` uses without RAY_ADDRESS) listens on 127.0.0.1 only; Ray Train's stock TorchConfig
    (env://) has rank 0's TCPStore on every interface in the same cluster, which shows the check can fail."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env.update(PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0", HOME=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-c", GROUP_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(
        next(x for x in proc.stdout.splitlines() if x.startswith("PROBE")).removeprefix("PROBE")
    )
    for name, ranks in report.items():
        assert [r["sum"] for r in ranks] == [3.0, 3.0], name  # the group works
    loopback = [ip for r in report["loopback"] for ip in r["ips"]]
    stock = [ip for r in report["stock"] for ip in r["ips"]]
    assert loopback and not [ip for ip in loopback if not _is_loopback(ip)], loopback
    assert [ip for ip in stock if not _is_loopback(ip)], stock
