"""`metarec bench serve`'s client counts error answers (a 408 past `metarec serve --request-timeout-s` at
overload) and answers cut off by status instead of stopping the benchmark at the first one."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from metarec_dist.bench.serve_bench import BROKEN, _post, _served_summary


class _Answers(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 -- http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        status = 408 if self.path == "/late" else 200
        body = b"Request x timed out after 3.0s." if status == 408 else b'{"items": []}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path != "/cut":  # the head of a 200, then the connection closed
            self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_post_returns_the_status_of_an_error_answer_instead_of_raising(server):
    assert _post(server + "/recommend", {"items": ["1"]})[1] == 200
    seconds, status = _post(server + "/late", {"items": ["1"]})
    assert status == 408 and seconds >= 0
    assert _post(server + "/cut", {"items": ["1"]})[1] == BROKEN == 0


def test_the_summary_times_the_200s_and_counts_every_status():
    answers = [(0.010, 200), (0.030, 200), (3.2, 408), (3.4, 408), (3.6, 408)]
    out = _served_summary(answers, wall_s=2.0)
    assert out["requests"] == 2 and out["req_per_s"] == 1.0
    assert out["p50_ms"] == pytest.approx(20.0)
    assert out["statuses"] == {"200": 2, "408": 3} and out["failed_p50_ms"] == pytest.approx(3400.0)
    none = _served_summary([(3.0, 408)], wall_s=1.0)
    assert none["requests"] == 0 and none["statuses"] == {"408": 1}
