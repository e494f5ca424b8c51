"""`metarec serve --request-timeout-s` is the operator's upper bound: a client's ``x-request-timeout-seconds``
(which Ray Serve's proxy honours) cannot lift it, and each replica ends a request after it too; and what a
client's mistake echoes back stays short (tests/integration/test_sv18_serve_client_timeout.py: the real
proxy)."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from metarec_dist.eval.recommend import JSON_FIELDS, Catalogue
from metarec_dist.runtime import ray_launcher, serving
from metarec_dist.runtime.serving import (
    CapClientTimeout,
    capped_timeout_headers,
    handle,
    parse_request,
    proxy_middlewares,
)

OTHER = [(b"host", b"x"), (b"content-type", b"application/json")]


@pytest.mark.parametrize("asked", [b"3600", b"0", b"-1", b"nan", b"inf", b"soon", b"30.5"])
def test_a_client_timeout_that_would_lift_the_limit_is_dropped(asked):
    headers = [*OTHER, (b"x-request-timeout-seconds", asked)]
    assert capped_timeout_headers(headers, 30.0) == OTHER


def test_a_client_timeout_under_the_limit_is_kept_once_as_ray_serve_reads_the_last():
    headers = [(b"x-request-timeout-seconds", b"5"), *OTHER, (b"x-request-timeout-seconds", b"2.5")]
    assert capped_timeout_headers(headers, 30.0) == [*OTHER, (b"x-request-timeout-seconds", b"2.5")]
    sneaky = [(b"x-request-timeout-seconds", b"1"), (b"X-Request-Timeout-Seconds", b"3600")]
    assert capped_timeout_headers(sneaky, 30.0) == []  # the last one (Ray's) asks for more: none kept


def test_a_client_cannot_turn_off_the_cancel_on_disconnect():
    assert capped_timeout_headers([*OTHER, (b"x-request-disconnect-disabled", b"?1")], 30.0) == OTHER


def test_the_middleware_hands_the_capped_headers_on():
    seen = {}

    async def app(scope, receive, send):
        seen.update(scope)

    scope = {"type": "http", "headers": [*OTHER, (b"x-request-timeout-seconds", b"3600")]}
    asyncio.run(CapClientTimeout(app, limit=10.0)(scope, None, None))
    assert seen["headers"] == OTHER
    assert scope["headers"][-1] == (b"x-request-timeout-seconds", b"3600")  # the caller's scope untouched


@pytest.fixture
def clean_env(monkeypatch):
    """No proxy callback, limit or RAY_ADDRESS set, and whatever a test sets undone after it (delenv alone
    does not undo a variable set later that was absent before)."""
    names = (serving.PROXY_CALLBACK_ENV, serving.OTHER_CALLBACK_ENV, serving.LIMIT_ENV, "RAY_ADDRESS")
    for name in names:
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    return monkeypatch


def _mine():  # an operator's own proxy callback, named by import path
    from starlette.middleware import Middleware

    return [Middleware(dict)]


def test_the_proxy_callback_caps_at_the_limit_serve_set_and_keeps_an_operators_own(clean_env):
    clean_env.setenv(serving.PROXY_CALLBACK_ENV, f"{__name__}._mine")
    serving.cap_client_timeouts(2.5)
    assert os.environ[serving.PROXY_CALLBACK_ENV] == "metarec_dist.runtime.serving.proxy_middlewares"
    mine, cap = proxy_middlewares()
    assert mine.cls is dict
    assert cap.cls is CapClientTimeout and cap.kwargs == {"limit": 2.5}
    serving.cap_client_timeouts(4.0)  # a second call does not chain the callback to itself
    assert os.environ[serving.OTHER_CALLBACK_ENV] == f"{__name__}._mine"
    os.environ.pop(serving.PROXY_CALLBACK_ENV)  # a later serve in this process, none set by the operator
    serving.cap_client_timeouts(4.0)
    assert serving.OTHER_CALLBACK_ENV not in os.environ  # not the earlier one, which the proxy may not import
    assert len(proxy_middlewares()) == 1


def test_serve_sets_the_cap_for_the_cluster_it_starts(clean_env):
    monkeypatch = clean_env

    def deploy(*_):
        assert os.environ[serving.LIMIT_ENV] == "7.0"  # set before Ray starts: its processes inherit it
        assert os.environ[serving.PROXY_CALLBACK_ENV] == serving.PROXY_CALLBACK
        raise KeyboardInterrupt

    monkeypatch.setattr(serving, "check_port_free", lambda *a: None)
    monkeypatch.setattr(serving, "load_served", lambda *a: object())
    monkeypatch.setattr(serving, "deploy", deploy)
    monkeypatch.setattr(ray_launcher, "shutdown_ray", lambda: None)
    with pytest.raises(KeyboardInterrupt):
        serving.serve_model("x", port=8123, request_timeout_s=7.0)


class _Replica:
    def describe(self):
        return {}

    def answer(self, body):
        return 200, {"items": []}


def test_a_replica_ends_a_request_whose_body_never_comes_with_a_json_408():
    """The replica's own bound: on a joined cluster the proxy may have let the client's header through."""
    from starlette.requests import Request

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/recommend",
        "query_string": b"",
        "headers": [(b"content-length", b"40")],
    }

    async def receive():  # a client that stopped sending
        await asyncio.Event().wait()

    response = asyncio.run(handle(_Replica(), Request(scope, receive), 1, 100, timeout_s=0.05))
    assert response.status_code == 408
    assert json.loads(response.body) == {
        "error": "the request was not answered within 0.05 s (metarec serve --request-timeout-s)"
    }


@pytest.mark.parametrize(("k", "said"), [(None, "null"), (True, "true"), ("ten", '"ten"'), (2.5, "2.5")])
def test_a_wrong_k_is_said_as_json(k, said):
    with pytest.raises(ValueError) as exc:
        parse_request({"items": ["1"], "k": k})
    assert str(exc.value) == f'"k" must be an integer, got {said}'


def test_an_error_does_not_echo_a_huge_value_back():
    with pytest.raises(ValueError) as exc:
        parse_request({"items": ["1"], "k": ["x"] * 100_000})
    assert len(str(exc.value)) < 200
    catalogue = Catalogue(["1", "2"], {}, mapped=True)
    with pytest.raises(ValueError) as exc:
        catalogue.to_model_ids(["a" * 500_000, "b"], JSON_FIELDS)
    assert str(exc.value) == f'"items": unknown item id(s) {"a" * 40}... (500000 characters), b'


class _Parsing(_Replica):
    def answer(self, body):  # as RecommenderReplica.answer: the request's mistake is a 400
        try:
            parse_request(body)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        return 200, {"items": []}


def test_a_lone_surrogate_in_the_request_is_a_400_not_a_500():
    """``"\\ud800"`` is valid JSON; repeated in an error, Starlette's JSONResponse could not encode it."""
    from starlette.requests import Request

    raw = b'{"\\ud800": 1, "items": ["1"]}'
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/recommend",
        "query_string": b"",
        "headers": [(b"content-length", str(len(raw)).encode())],
    }
    messages = [{"type": "http.request", "body": raw, "more_body": False}]

    async def receive():
        return messages.pop(0)

    response = asyncio.run(handle(_Parsing(), Request(scope, receive), 1, 1000, timeout_s=10.0))
    assert response.status_code == 400
    assert json.loads(response.body) == {"error": "unknown field(s) \ud800: expected items, user, k"}
    assert response.headers["content-type"] == "application/json"
