"""``metarec bench serve --request-timeout-s``: the server it starts gets the limit (``metarec serve`` has had
the flag, default 30 s; the benchmark could not set it), the result records it, and a value serve refuses
fails at once naming the flag, not after the in-process half as "metarec serve did not come up"."""

from __future__ import annotations

import json

import pytest

from metarec_dist.bench import serve_bench
from metarec_dist.cli import build_parser, main


@pytest.fixture
def fake_server(monkeypatch):
    """No Ray: ``start_server`` records its flags and every request is answered 200 at once."""
    started: list[list[str]] = []

    def start(checkpoint, port, replicas=1, timeout_s=600, args=()):
        started.append(list(args))
        return object(), [], 0.1

    monkeypatch.setattr(serve_bench, "start_server", start)
    monkeypatch.setattr(serve_bench, "stop_server", lambda proc: 0)
    monkeypatch.setattr(serve_bench, "_post", lambda url, body: (0.001, 200))
    return started


def test_the_timeout_reaches_the_server_and_the_result(trained, fake_server, tmp_path):
    run = trained()
    out = tmp_path / "serve.json"
    argv = ["bench", "serve", "--checkpoint", str(run.folder), "--requests", "2", "--concurrency", "1"]
    assert main([*argv, "--request-timeout-s", "2.5", "--json", str(out)]) == 0
    assert fake_server == [["--request-timeout-s", "2.5"]]
    served = json.loads(out.read_text())["served"]
    assert served["request_timeout_s"] == 2.5 and served["statuses"] == {"200": 2}
    assert main([*argv, "--json", str(out)]) == 0  # not given: serve's own default, recorded as such
    assert fake_server[-1] == [] and json.loads(out.read_text())["served"]["request_timeout_s"] == 30.0


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan"])
def test_a_timeout_serve_refuses_fails_before_the_benchmark(fake_server, monkeypatch, capsys, value):
    from metarec_dist.eval import recommend

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before --request-timeout-s was checked")

    monkeypatch.setattr(recommend.Recommender, "load", load)
    assert main(["bench", "serve", "--checkpoint", "x", "--request-timeout-s", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --request-timeout-s must be a number of seconds > 0") and not fake_server


def test_the_default_is_serves():
    """Not given, the flag is not passed: the server runs with serve's default, which the result records."""
    from metarec_dist.runtime.serving import REQUEST_TIMEOUT_S

    parser = build_parser()
    assert parser.parse_args(["bench", "serve", "--checkpoint", "x"]).request_timeout_s is None
    assert parser.parse_args(["serve", "--checkpoint", "x"]).request_timeout_s == REQUEST_TIMEOUT_S == 30.0
