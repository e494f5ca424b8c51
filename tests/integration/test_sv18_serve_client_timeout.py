"""End to end on a real Ray Serve: a client's ``x-request-timeout-seconds`` does not lift `metarec serve
--request-timeout-s` (Ray Serve's proxy honours the header: 3600 held the request, 0 took the limit away);
a client's mistake echoes no huge value back, nor is a lone surrogate in it a 500; and Ctrl-C at a terminal
(SIGINT to the whole process group, Ray's processes included) stops the server with every Ray process it
started."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket

import pytest
from test_serve import call, gone

from metarec_dist.bench.serve_bench import free_port, start_server
from metarec_dist.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
LIMIT_S = 2.0


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    """The tiny run's fused export served with --request-timeout-s LIMIT_S: (url, process, output lines)."""
    export = tmp_path_factory.mktemp("sv18") / "export"
    args = ["export", "--checkpoint", str(trained().folder), "--out", str(export), "--fuse-weight", "0.5"]
    assert main(args) == 0
    port = free_port()
    proc, lines, _ = start_server(str(export), port, args=["--request-timeout-s", str(LIMIT_S)])
    try:
        yield f"http://127.0.0.1:{port}", proc, lines
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def stalled_with_header(port: int, header: bytes, wait_s: float) -> bytes:
    """A POST /recommend whose body stops half-way, sending ``header``: the server's answer, or b""
    if none came within ``wait_s``."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        head = b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + header
        conn.sendall(head + b'\r\nContent-Length: 40\r\n\r\n{"items": [')
        conn.settimeout(wait_s)
        try:
            answer = conn.recv(65536)
        except TimeoutError:
            return b""
        conn.settimeout(10)  # the body, in its own chunks, follows at once
        with contextlib.suppress(TimeoutError):
            while not answer.endswith(b"\r\n0\r\n\r\n") and (more := conn.recv(65536)):
                answer += more
        return answer


@pytest.mark.parametrize("asked", [b"3600", b"0"])
def test_a_clients_timeout_header_does_not_lift_the_operators_limit(served, asked):
    port = int(served[0].rsplit(":", 1)[1])
    answer = stalled_with_header(port, b"x-request-timeout-seconds: " + asked, wait_s=30 * LIMIT_S)
    assert answer.startswith(b"HTTP/1.1 408 "), answer  # b"": still held when the client gave up
    assert f"timed out after {LIMIT_S}s.".encode() in answer, answer  # the proxy's, at the operator's limit


def test_an_unknown_huge_item_id_is_a_short_400(served):
    status, out = call(served[0] + "/recommend", {"items": ["a" * 500_000]})
    assert status == 400 and out["error"].startswith('"items": unknown item id(s) aaaa'), out
    assert len(json.dumps(out)) < 300


def test_a_lone_surrogate_is_a_400_not_a_500(served):
    status, out = call(served[0] + "/recommend", raw=b'{"items": ["\\ud800"]}')
    assert status == 400 and out == {"error": '"items": unknown item id(s) \ud800'}, out


def test_ctrl_c_at_a_terminal_stops_the_server_and_its_ray_processes(served):
    url, proc, lines = served
    started = len(lines)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole foreground group
    assert proc.wait(timeout=120) == 0, "".join(lines[-40:])
    assert gone(proc.pid), "Ray processes of the stopped server are still running"
    assert not any("Traceback" in line for line in lines[started:]), lines[started:]
