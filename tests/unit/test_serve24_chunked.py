"""A chunked request body (``Transfer-Encoding: chunked``, no ``Content-Length``) over ``--max-body-bytes``:
read to its end (within ``DRAIN_BYTES``) before its 413, so that a client still sending it reads the 413
JSON. Refused as soon as it passed the limit, the connection was closed under the client (uvicorn closes
it after the answer when the request says ``Connection: close``, as urllib's do), which saw a reset or a
broken pipe: 21 of 50 chunked 16 MiB bodies against a served export with the 1 MiB limit, 0 now."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest
from test_serving_requests import _Replica, _request, _run

from metarec_dist.runtime.serving import BodyTooLarge, handle, read_limited

LIMIT = 1000
SMALL_BUFFER = 64 << 10  # socket buffers far below the body: a client still sending meets the close


def test_a_chunked_body_over_the_limit_is_read_to_its_end_before_the_413():
    request, unread = _request("POST", "/recommend", [b" " * 60] * 4)  # no Content-Length: chunked
    response = _run(handle(_Replica(), request, replicas=1, max_body=100))
    assert response.status_code == 413
    assert "limit of 100 bytes" in json.loads(response.body)["error"]
    assert unread == []  # read to its end, then refused


def test_a_chunked_body_is_refused_as_it_passes_the_drain_bound():
    chunks = [b"x" * 6] * 5 + [b"never read"]
    request, unread = _request("POST", "/recommend", chunks)
    with pytest.raises(BodyTooLarge, match="limit of 10 bytes"):
        _run(read_limited(request, 10, drain=20))
    assert len(unread) == 2  # stopped at the fourth chunk (24 bytes), past the bound
    request, unread = _request("POST", "/recommend", [b"x" * 6] * 3 + [b"y" * 2])  # 20 bytes: the bound
    with pytest.raises(BodyTooLarge, match="limit of 10 bytes"):
        _run(read_limited(request, 10, drain=20))
    assert unread == []


@pytest.fixture
def http_replica():
    """``handle`` (a fake replica, ``--max-body-bytes`` LIMIT) behind uvicorn, the server Ray Serve's proxy
    runs, on 127.0.0.1: its port. The listening socket's receive buffer is small, as it is at first on a
    real one (Linux grows it as data comes): a body left unread does not fit in it."""
    import uvicorn
    from starlette.requests import Request

    async def app(scope, receive, send):
        response = await handle(_Replica(), Request(scope, receive), replicas=1, max_body=LIMIT)
        await response(scope, receive, send)

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_a_client_sending_a_chunked_body_over_the_limit_reads_the_413(http_replica):
    """Limit + 4 MiB, sent in 64 KiB chunks with ``Connection: close``: the client is still sending long
    after the limit is passed (its send buffer is small), and reads the 413 naming the limit."""

    def body():
        for _ in range(64):
            yield b" " * (64 << 10)
        yield b" " * LIMIT

    conn = http.client.HTTPConnection("127.0.0.1", http_replica, timeout=60)
    try:
        conn.connect()
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        headers = {"Content-Type": "application/json", "Connection": "close"}
        conn.request("POST", "/recommend", body=body(), headers=headers, encode_chunked=True)
        response = conn.getresponse()
        out = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 413
    assert f"limit of {LIMIT} bytes" in out["error"] and "--max-body-bytes" in out["error"]


@pytest.mark.parametrize("chunks", [[b'{"items": ', b'["1"'], [b" " * 60] * 2], ids=["within", "over"])
def test_a_client_gone_before_its_body_was_read_is_499_not_a_500(chunks):
    """A client that closed the connection mid-body: the replica's log had Ray Serve's ERROR "Request
    failed" with starlette's ClientDisconnect traceback and "POST / 500" (a chunked body abandoned
    after 512 KiB, against a served export); now it is Ray Serve's own code for a client gone, 499."""
    request, unread = _request("POST", "/recommend", chunks)
    unread[-1]["more_body"] = True
    unread.append({"type": "http.disconnect"})
    response = _run(handle(_Replica(), request, replicas=1, max_body=100))
    assert response.status_code == 499
    assert json.loads(response.body) == {"error": "the client closed the connection before sending its body"}
    assert unread == []
