"""End to end: `metarec serve` (a real Ray Serve application on a local cluster) answers POST /recommend with
exactly what `metarec recommend` computes for a fused export, refuses bad requests with HTTP 400 naming the
field (413 for a body over the limit), answers Ray Serve's 408 to a request past --request-timeout-s, brings
a killed replica back serving the same model without its files, listens on 127.0.0.1 only, and stops
cleanly and quietly on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest
from test_local_cluster_binding import _is_loopback

from metarec_dist.bench.serve_bench import free_port, start_server
from metarec_dist.cli import main
from metarec_dist.eval.recommend import Recommender

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
TIMEOUT_S = 10.0  # the served model's --request-timeout-s: the tiny model answers in well under a second


def call(url: str, body: object = None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def listening(pid: int) -> list[tuple[str, int]]:
    import psutil

    root = psutil.Process(pid)
    procs = {p.pid for p in [root, *root.children(recursive=True)]}
    return [
        (c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in procs
    ]


def gone(group: int, wait_s: float = 30.0) -> bool:
    """Whether every process of the process group has exited (within ``wait_s``)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    """A fused export of the tiny run, served by `metarec serve` in a child process (its own process group),
    requests limited to TIMEOUT_S: (url, export, process, its output lines)."""
    export = tmp_path_factory.mktemp("serve") / "export"
    run = trained().folder
    assert main(["export", "--checkpoint", str(run), "--out", str(export), "--fuse-weight", "0.5"]) == 0
    port = free_port()
    proc, lines, _ = start_server(str(export), port, args=["--request-timeout-s", str(TIMEOUT_S)])
    try:
        yield f"http://127.0.0.1:{port}", export, proc, lines
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever a failed test left running


def test_recommend_over_http_is_metarec_recommend(served):
    url, export, _, _ = served
    status, info = call(url + "/")
    assert status == 200 and info["fusion_weight"] == 0.5 and info["replicas"] == 1
    local = Recommender.load(str(export))
    assert local.fusion is not None
    raw = local.catalogue.raw_ids
    for history in ([raw[0]], [raw[2], raw[6], raw[1]], raw[:8]):
        status, out = call(url + "/recommend", {"items": history, "k": 5})
        assert status == 200, out
        expected = local(history, 5)
        assert [r["item"] for r in out["items"]] == [r.raw_id for r in expected]
        assert [r["score"] for r in out["items"]] == pytest.approx([r.score for r in expected], abs=1e-5)
        assert not set(history) & {r["item"] for r in out["items"]}  # seen items never come back


def test_bad_requests_are_400_naming_the_field(served):
    url = served[0] + "/recommend"
    for body, text in [
        ({"items": ["no-such-item"]}, '"items": unknown item id(s) no-such-item'),
        ({"items": ["1"], "k": 0}, '"k"'),
        ({"items": ["1"], "k": "ten"}, '"k"'),
        ({"itemz": ["1"]}, "itemz"),
        ({"items": "1,2"}, '"items"'),
        ({}, "items"),
        (["1", "2"], "JSON object"),
    ]:
        status, out = call(url, body)
        assert status == 400 and text in out["error"], (body, out)
        assert "--" not in out["error"], out  # the request's fields, never `metarec recommend`'s flags
    for raw in (b"{not json", b"\xff", b"[" * 100_000):  # the last: too deep for the decoder, not a 500
        status, out = call(url, raw=raw)
        assert status == 400 and "not JSON" in out["error"], raw[:10]
    status, out = call(served[0] + "/elsewhere", {"items": ["1"]})
    assert status == 404
    status, out = call(url, raw=b" " * ((1 << 20) + 1))  # over the default --max-body-bytes
    assert status == 413 and "limit of 1048576 bytes" in out["error"]


def stalled_request(port: int, wait_s: float) -> tuple[float, bytes]:
    """A POST /recommend whose body stops half-way (a stalled or slow client): (seconds until the server
    began to answer, the answer: head and chunked body), or ``wait_s`` and b"" if it did not."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        head = b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        t0 = time.monotonic()
        conn.sendall(head + b'Content-Length: 40\r\n\r\n{"items": [')
        conn.settimeout(wait_s)
        try:
            answer = conn.recv(65536)
        except TimeoutError:
            return wait_s, b""
        seconds = time.monotonic() - t0
        conn.settimeout(10)  # the rest (the body comes in its own chunks) follows at once
        with contextlib.suppress(TimeoutError):
            while not answer.endswith(b"\r\n0\r\n\r\n") and (more := conn.recv(65536)):
                answer += more
        return seconds, answer


def test_a_request_past_the_timeout_gets_ray_serves_408_and_the_others_still_200(served):
    url = served[0]
    seconds, answer = stalled_request(int(url.rsplit(":", 1)[1]), wait_s=6 * TIMEOUT_S)
    assert answer.startswith(b"HTTP/1.1 408 "), (seconds, answer)  # not a hang until the client gives up
    assert f"timed out after {TIMEOUT_S}s.".encode() in answer, answer
    assert TIMEOUT_S - 0.5 < seconds < 4 * TIMEOUT_S
    body = {"items": Recommender.load(str(served[1])).catalogue.raw_ids[:2], "k": 3}
    for _ in range(3):
        status, out = call(url + "/recommend", body)
        assert status == 200 and len(out["items"]) == 3, out


def test_a_killed_replica_comes_back_serving_the_model_after_its_files_are_gone(served):
    """Ray Serve restarts a replica killed with SIGKILL; it gets the model `metarec serve` loaded (the
    object store), so it answers even when the folder served has gone since (a run folder pruning it)."""
    import psutil

    url, export, proc, _ = served
    body = {"items": Recommender.load(str(export)).catalogue.raw_ids[:3], "k": 5}
    before = call(url + "/recommend", body)
    replica = [p for p in psutil.Process(proc.pid).children(recursive=True) if "ServeReplica" in p.name()]
    assert len(replica) == 1, replica
    moved = export.with_name("moved-away")
    export.rename(moved)
    try:
        replica[0].kill()
        replica[0].wait(30)
        deadline = time.monotonic() + 240
        while True:
            alive = [
                p for p in psutil.Process(proc.pid).children(recursive=True) if "ServeReplica" in p.name()
            ]
            with contextlib.suppress(urllib.error.URLError, OSError, json.JSONDecodeError):
                if alive and call(url + "/recommend", body) == before:
                    break
            assert time.monotonic() < deadline, "the killed replica did not come back"
            time.sleep(1.0)
        assert alive[0].pid != replica[0].pid
    finally:
        moved.rename(export)


def test_serve_listens_on_loopback_only_and_stops_on_sigterm(served):
    url, _, proc, lines = served
    sockets = listening(proc.pid)
    port = int(url.rsplit(":", 1)[1])
    assert any(p == port for _, p in sockets), sockets  # the HTTP proxy is among them: the check can fail
    assert all(_is_loopback(ip) for ip, _ in sockets), sockets
    started = len(lines)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, "".join(lines[-40:])
    assert gone(proc.pid), "Ray processes of the stopped server are still running"
    # Quiet: no Ray Serve INFO lines (one said the http_options just applied would not be), and no
    # "(raylet) Task ServeController.graceful_shutdown failed" on the way out.
    assert not any("will not be applied" in line for line in lines), lines
    assert not any("raylet" in line or "Traceback" in line for line in lines[started:]), lines[started:]
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing answers any more
