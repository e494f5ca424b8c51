"""``metarec bench serve``: recommendations per second in this process vs over HTTP from ``metarec serve``.

The same requests both ways: histories of 1, 3, 5 and 10 catalogue items (drawn with a fixed seed), top 10.
In this process: one :class:`Recommender`, requests one after another (what a replica does). Served: a
``metarec serve`` child process (a local Ray cluster on 127.0.0.1, ``replicas`` replicas of one thread each),
``concurrency`` clients sending at once. Start-up (cluster, proxy, replicas loading the model) is timed
apart; the first ``warmup`` requests of each side are not counted.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

LENGTHS = (1, 3, 5, 10)
REQUEST_BYTES = 320  # per request: its history (_histories) and its body, all made before the first is sent


def _histories(raw_ids: list[str], n: int, seed: int) -> list[list[str]]:
    """``n`` histories of LENGTHS items in turn, distinct items each (at most the whole catalogue: a
    catalogue under 10 items was numpy's "Cannot take a larger sample than population")."""
    rng = np.random.default_rng(seed)
    sizes = [min(LENGTHS[j % len(LENGTHS)], len(raw_ids)) for j in range(n)]
    return [[raw_ids[i] for i in rng.choice(len(raw_ids), size=size, replace=False)] for size in sizes]


def _summary(latencies_s: list[float], wall_s: float) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1000
    return {
        "requests": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "req_per_s": round(len(ms) / wall_s, 1),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    checkpoint: str, port: int, replicas: int = 1, timeout_s: float = 600, args: Sequence[str] = ()
) -> tuple[subprocess.Popen, list[str], float]:
    """``metarec serve`` (with ``args``, more of its flags) in a child process (its own process group, a
    local cluster of its own), once it answers: (process, its output lines so far and to come, seconds it
    took to come up)."""
    cmd = [sys.executable, "-m", "metarec_dist.cli", "serve", "--checkpoint", checkpoint]
    cmd += ["--port", str(port), "--replicas", str(replicas), *args]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a failed start is killed with every Ray process it started
    )
    up, lines = threading.Event(), []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("serving at"):
                up.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        while not up.wait(0.5):
            if proc.poll() is not None or time.perf_counter() - t0 > timeout_s:
                raise RuntimeError("metarec serve did not come up:\n" + "".join(lines[-40:]))
    except BaseException:  # also Ctrl-C while it starts: its own session gets no SIGINT, stop it here
        stop_server(proc)
        raise
    return proc, lines, time.perf_counter() - t0


def stop_server(proc: subprocess.Popen, timeout_s: float = 120) -> int | None:
    """SIGTERM (a clean stop), then SIGKILL to the whole group if it is still there; the exit status of a
    clean stop, None otherwise."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


BROKEN = 0  # the status counted for an answer cut off: the connection closed before its whole body


def _post(url: str, body: dict[str, Any]) -> tuple[float, int]:
    """(seconds, HTTP status) of one request: an error status (a 408 past the server's request timeout at
    overload) is counted, not raised, and so is an answer cut off (``BROKEN``): Ray Serve's proxy closes the
    connection when its timeout falls between a response's head and its body (seen once in 1,500 requests
    at 300 clients)."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        status = exc.code
    except (http.client.IncompleteRead, ConnectionError):  # RemoteDisconnected is a ConnectionError
        status = BROKEN
    return time.perf_counter() - t0, status


def _served_summary(answers: list[tuple[float, int]], wall_s: float) -> dict[str, Any]:
    """The latencies of the answered (200) requests; every status counted, and how long the others took."""
    ok = [t for t, status in answers if status == 200]
    failed = [t for t, status in answers if status != 200]
    out: dict[str, Any] = _summary(ok, wall_s) if ok else {"requests": 0, "req_per_s": 0.0}
    out["statuses"] = {str(k): v for k, v in sorted(Counter(s for _, s in answers).items())}
    if failed:
        out["failed_p50_ms"] = round(float(np.percentile(np.asarray(failed) * 1000, 50)), 2)
    return out


def check_replicas(replicas: int, cores: int | None = None) -> None:
    """``--replicas`` within what the server refuses beyond: it starts a cluster of its own on this machine
    (``cores``, default all), one thread per replica, at most ``MAX_REPLICAS_PER_CORE`` per core."""
    from metarec_dist.errors import UserError
    from metarec_dist.runtime.serving import MAX_REPLICAS_PER_CORE

    cores = cores or os.cpu_count() or 1
    most = MAX_REPLICAS_PER_CORE * cores
    if not 1 <= replicas <= most:
        raise UserError(
            f"--replicas must be between 1 and {most} on this machine ({MAX_REPLICAS_PER_CORE} per core, "
            f"{cores} cores), got {replicas}"
        )


def run_serve_bench(
    checkpoint: str,
    requests: int = 200,
    concurrency: int = 4,
    replicas: int = 1,
    warmup: int = 10,
    seed: int = 0,
    server_args: Sequence[str] = (),
    request_timeout_s: float | None = None,
) -> dict[str, Any]:
    """``server_args``: more ``metarec serve`` flags; ``request_timeout_s``: its ``--request-timeout-s``
    (None: serve's default), recorded in the result. The served side counts the answers by HTTP status
    (``statuses``) and times the 200s."""
    import torch

    from metarec_dist.errors import check_fits
    from metarec_dist.eval.recommend import Recommender
    from metarec_dist.runtime.serving import REQUEST_TIMEOUT_S, check_serve_args

    timeout = REQUEST_TIMEOUT_S if request_timeout_s is None else request_timeout_s
    # A value serve refuses fails now, naming the flag, not after the in-process half as "did not come up".
    check_replicas(replicas)
    check_serve_args(1, replicas, 1, 1, timeout)
    check_fits(
        requests + warmup, REQUEST_BYTES, f"--requests {requests:,}", "its requests alone need", "request"
    )
    if request_timeout_s is not None:
        server_args = [*server_args, "--request-timeout-s", repr(float(request_timeout_s))]

    torch.set_num_threads(1)  # as each replica
    local = Recommender.load(checkpoint)
    histories = _histories(local.catalogue.raw_ids, requests + warmup, seed)
    for h in histories[:warmup]:
        local(h, 10)
    t0, latencies = time.perf_counter(), []
    for h in histories[warmup:]:
        t = time.perf_counter()
        local(h, 10)
        latencies.append(time.perf_counter() - t)
    result: dict[str, Any] = {
        "checkpoint": checkpoint,
        "num_items": int(local.loaded.meta["num_items"]),
        "fused": local.fusion is not None,
        "in_process": _summary(latencies, time.perf_counter() - t0),
    }
    del local
    port = free_port()
    proc, _, startup_s = start_server(checkpoint, port, replicas, args=server_args)
    url = f"http://127.0.0.1:{port}/recommend"
    try:
        bodies = [{"items": h, "k": 10} for h in histories]
        for b in bodies[:warmup]:
            _post(url, b)
        t0 = time.perf_counter()
        pool = ThreadPoolExecutor(concurrency)
        try:
            answers = list(pool.map(lambda b: _post(url, b), bodies[warmup:]))
        finally:  # on Ctrl-C, drop the requests not yet sent instead of sending them all first
            pool.shutdown(wait=False, cancel_futures=True)
        result["served"] = {
            **_served_summary(answers, time.perf_counter() - t0),
            "replicas": replicas,
            "concurrency": concurrency,
            "request_timeout_s": timeout,
            "startup_s": round(startup_s, 1),
        }
    finally:
        stop_server(proc)
    result["served_over_in_process"] = round(
        result["served"]["req_per_s"] / result["in_process"]["req_per_s"], 2
    )
    return result
