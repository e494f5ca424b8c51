"""`metarec serve --request-timeout-s`: checked before anything starts, and handed to Ray Serve as its own
``http_options.request_timeout_s`` (tests/integration/test_serve.py sees Ray Serve's 408 past it)."""

from __future__ import annotations

import os

import pytest

from metarec_dist.cli import build_parser, main
from metarec_dist.runtime import ray_launcher, serving


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_timeout_that_is_not_a_positive_number_is_one_error_line(value, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray_launcher, "init_ray", lambda **_: pytest.fail("Ray started"))
    args = ["serve", "--checkpoint", str(tmp_path / "none"), "--request-timeout-s", value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"error: --request-timeout-s must be a number of seconds > 0, got {float(value):g}"
    ], err


def test_a_timeout_that_is_no_number_is_argparses_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--checkpoint", "x", "--request-timeout-s", "soon"])
    assert exc.value.code == 2
    assert "--request-timeout-s: invalid float value: 'soon'" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "expected"), [([], 30.0), (["--request-timeout-s", "2.5"], 2.5)])
def test_the_timeout_reaches_ray_serves_http_options(flags, expected, monkeypatch):
    """The options ``serve.start`` gets: host, port and the timeout (30 s unless given)."""
    seen = {}

    def deploy(recommender, http, *rest):
        seen.update(http)
        raise KeyboardInterrupt  # as Ctrl-C right after: `metarec serve` stops cleanly

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # serve sets the proxy's callback and limit variables in its own environment: keep them out of pytest's
    monkeypatch.setattr(os, "environ", os.environ.copy())
    monkeypatch.setattr(serving, "check_port_free", lambda *a: None)
    monkeypatch.setattr(serving, "load_served", lambda *a: object())
    monkeypatch.setattr(serving, "deploy", deploy)
    monkeypatch.setattr(ray_launcher, "shutdown_ray", lambda: None)
    assert main(["serve", "--checkpoint", "x", "--port", "8123", *flags]) == 130
    assert seen == {"host": "127.0.0.1", "port": 8123, "request_timeout_s": expected}


def test_the_help_says_what_a_timed_out_request_gets(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--request-timeout-s SECONDS" in help_text and "HTTP 408 (default: 30)" in help_text
