"""Session 21 (ray21): every Ctrl-C of ``metarec serve`` joined to a cluster (``RAY_ADDRESS``) printed Ray's
"(raylet) Task ServeController.graceful_shutdown failed. There are infinite retries remaining ... killed by
`ray.kill`" (measured against a ``ray start --head`` on 127.0.0.1, Ray 2.60). ``serve.shutdown()`` waits on
a controller call that never returns: the controller kills itself, and Ray's core worker reports the cut
call of an actor with ``max_task_retries=-1`` as a failure to retry. ``stop_serving`` now tells the
controller with ``graceful_shutdown(wait=False)`` and waits for it to be gone; Serve still serving another
application (another user's) is left running.

Run in a child process on a local cluster (the controller and its shutdown are the same as on a joined
one): the line is printed by Ray's error listener on the driver's terminal."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import sys
import ray
from ray import serve
from metarec_dist.runtime import ray_launcher, serving

def controller_alive():
    try:
        ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
        return True
    except ValueError:
        return False

@serve.deployment(ray_actor_options={"num_cpus": 0})
def theirs(request):
    return "theirs"

ray_launcher.init_ray(num_cpus=2)
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])})
serve.run(theirs.bind(), name="theirs", route_prefix="/theirs")
serving.stop_serving(joined=True)
print("OTHER APP KEPT", controller_alive(), sorted(serve.status().applications), flush=True)
serve.delete("theirs")
serving.stop_serving(joined=True)
print("CONTROLLER ALIVE", controller_alive(), flush=True)
ray.shutdown()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stopping_serve_on_a_joined_cluster_prints_no_failed_task_and_spares_other_apps():
    tmp = tempfile.mkdtemp(prefix="mr21", dir="/tmp")  # short: Ray's socket paths live under it
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": tmp}
    env.pop("RAY_ADDRESS", None)
    try:
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            cwd=ROOT,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    said = out.stdout + out.stderr
    assert out.returncode == 0, said[-3000:]
    assert "OTHER APP KEPT True ['theirs']" in said
    assert "CONTROLLER ALIVE False" in said  # Serve shut down, its controller gone
    assert "graceful_shutdown failed" not in said
