"""What a `metarec serve` replica does with a request body, without Ray: the parsed fields, the answer equal
to `metarec recommend`'s, and every mistake a 400 naming the field (tests/integration/test_serve.py runs the
real Ray Serve application)."""

from __future__ import annotations

import dataclasses

import pytest

from metarec_dist.cli import main
from metarec_dist.eval.recommend import Recommender
from metarec_dist.eval.stored_adaptation import StoredAdaptation
from metarec_dist.runtime.serving import (
    BodyTooLarge,
    RecommenderReplica,
    handle,
    load_served,
    parse_request,
    read_body,
    read_limited,
)


def test_parse_request_reads_items_user_and_k():
    assert parse_request({"items": ["12", 55], "k": 3}) == (["12", "55"], None, 3)
    assert parse_request({"user": {"age": 24, "gender": "M"}}) == ([], {"age": "24", "gender": "M"}, 10)
    assert parse_request({"items": ["12"], "user": {}}) == (["12"], None, 10)  # states nothing: no user


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "JSON object"),
        ({"items": ["1"], "extra": 1}, "extra"),
        ({"items": "1,2"}, '"items"'),
        ({"items": [["1"]]}, '"items"'),
        ({"items": ["1"], "user": ["age=3"]}, '"user"'),
        ({"items": ["1"], "k": 2.5}, '"k"'),
        ({"items": ["1"], "k": True}, '"k"'),
        ({"items": ["1"], "k": -1}, '"k"'),
        ({"items": []}, "history"),
        ({"items": [True]}, '"items"'),
        ({"items": ["1"], "user": {"student": False}}, '"user"'),
    ],
)
def test_bad_bodies_name_the_field(body, field):
    with pytest.raises(ValueError) as err:
        parse_request(body)
    assert field in str(err.value)


@pytest.mark.parametrize(
    "raw", [b"", b"{not json", b'{"items": ["\xff"]}', b"[" * 100_000, b'{"a":' * 100_000]
)
def test_a_body_that_is_not_json_is_a_value_error_not_a_500(raw):
    with pytest.raises(ValueError, match="the request body is not JSON"):
        read_body(raw)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"  ", "it is empty"),
        (b'{"items": ["1"],}', "line 1 column 17"),  # where the mistake is
        (b'{"items": ["\xff"]}', "not UTF-8"),
        (b'{"k": ' + b"9" * 5000 + b"}", "4300 digits"),
    ],
)
def test_a_body_that_is_not_json_says_why(raw, why):
    with pytest.raises(ValueError) as err:
        read_body(raw)
    assert why in str(err.value) and "sys." not in str(err.value)  # nothing about the server's Python


def test_a_replica_answers_as_metarec_recommend(trained, tmp_path):
    run = trained().folder
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run), "--out", str(out), "--fuse-weight", "0.5"]) == 0
    replica = RecommenderReplica(load_served(str(out), fuse=True), threads=1)
    assert replica.describe()["fusion_weight"] == 0.5
    raw = replica.recommender.catalogue.raw_ids
    status, answer = replica.answer({"items": raw[:3], "k": 4})
    expected = Recommender.load(str(out))(raw[:3], 4)
    assert status == 200 and [r["item"] for r in answer["items"]] == [r.raw_id for r in expected]
    assert [r["score"] for r in answer["items"]] == [r.score for r in expected]
    plain = RecommenderReplica(load_served(str(out), fuse=False), threads=1)
    assert plain.describe()["fusion_weight"] is None
    status, answer = replica.answer({"items": ["no-such-item"]})
    assert status == 400 and answer["error"].startswith('"items": unknown item id(s) no-such-item')
    status, answer = replica.answer({"items": raw[:1], "k": len(raw)})  # k above the items left
    assert status == 400 and answer["error"].startswith('"k" must be between')
    status, answer = replica.answer({"items": raw[:1], "user": {"age": "24"}})  # trained without features
    assert status == 400 and answer["error"].startswith('"user": this model reads no user features')
    assert "--" not in answer["error"].split("(")[0]  # the request's fields, not `metarec recommend`'s flags


def test_recommend_names_its_flags_and_serve_its_fields_for_the_same_mistake(trained, tmp_path, capsys):
    run = trained().folder
    assert main(["recommend", "--checkpoint", str(run), "--items", "no-such-item"]) == 2
    assert capsys.readouterr().err.startswith("error: --items: unknown item id(s) no-such-item")
    replica = RecommenderReplica(load_served(str(run), fuse=False), threads=1)
    status, answer = replica.answer({"items": ["no-such-item"]})
    assert status == 400 and answer["error"].startswith('"items": unknown item id(s) no-such-item')


def test_serve_refuses_a_port_in_use_before_starting_ray():
    import socket

    from metarec_dist.errors import UserError
    from metarec_dist.runtime.serving import check_port_free

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(UserError, match=f"--port {port} on 127.0.0.1 is in use"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # closed: free again


def test_metarec_serve_on_a_port_in_use_is_one_error_line(tmp_path, capsys, monkeypatch):
    import socket

    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a cluster started here: its proxy would take the port

    run = tmp_path  # checked before the checkpoint is read and before Ray starts
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert main(["serve", "--checkpoint", str(run), "--port", str(port)]) == 2
    assert f"error: --port {port} on 127.0.0.1 is in use" in capsys.readouterr().err


def test_metarec_serve_on_a_damaged_export_is_one_error_line_before_ray_starts(
    trained, tmp_path, capsys, monkeypatch
):
    import socket

    from metarec_dist.runtime import ray_launcher

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(trained().folder), "--out", str(out)]) == 0
    with open(out / "model.safetensors", "r+b") as f:
        f.truncate(1000)

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started for a model that does not load")

    monkeypatch.setattr(ray_launcher, "init_ray", no_ray)
    with socket.socket() as s:  # a port that is free
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["serve", "--checkpoint", str(out), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out / 'model.safetensors'} is damaged") and err.count("\n") == 1


def _request(method: str, path: str, chunks: list[bytes], headers: dict[str, str] | None = None):
    """A Starlette request as a replica gets it; reading past the chunks given fails the test."""
    from starlette.requests import Request

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]

    async def receive():
        if not messages:
            raise AssertionError("the body was read past its end (or read when it should not be)")
        return messages.pop(0)

    return Request(scope, receive), messages


def _run(coro):
    import asyncio

    return asyncio.run(coro)


def test_read_limited_refuses_a_body_over_the_limit_by_its_length_before_reading_it():
    request, unread = _request("POST", "/recommend", [b"x" * 11], {"Content-Length": "11"})
    with pytest.raises(BodyTooLarge, match="limit of 10 bytes .*--max-body-bytes"):
        _run(read_limited(request, 10, drain=10))
    assert len(unread) == 1  # declared over the drain bound too: refused on the header, nothing read


def test_read_limited_reads_a_body_declared_within_the_drain_bound_before_refusing_it():
    """A client still sending its 1 MiB + 1 byte body got a broken pipe, not the 413, when the answer
    closed the connection with the body unread (test_serve, twice on a loaded machine)."""
    request, unread = _request("POST", "/recommend", [b"x" * 6, b"y" * 5], {"Content-Length": "11"})
    with pytest.raises(BodyTooLarge, match="limit of 10 bytes"):
        _run(read_limited(request, 10))
    assert unread == []  # read to its end, then refused
    chunks = [b"x" * 6] * 3 + [b"never read"]  # a length that lies: the drain stops past its bound
    request, unread = _request("POST", "/recommend", chunks, {"Content-Length": "12"})
    with pytest.raises(BodyTooLarge):
        _run(read_limited(request, 10, drain=12))
    assert len(unread) == 1


def test_read_limited_stops_a_chunked_or_mislabelled_body_once_it_passes_the_limit():
    chunks = [b"x" * 6] * 3 + [b"never read"]
    request, unread = _request("POST", "/recommend", chunks)  # chunked: no Content-Length
    with pytest.raises(BodyTooLarge):
        # a drain bound equal to the limit leaves no room to read on (the default drains up to 16 MiB)
        _run(read_limited(request, 10, drain=10))
    assert len(unread) == 2  # past the limit and the drain bound: stopped at the second chunk
    request, _ = _request("POST", "/recommend", [b"x" * 6] * 2, {"Content-Length": "3"})  # lies
    with pytest.raises(BodyTooLarge):
        _run(read_limited(request, 10))
    request, _ = _request("POST", "/recommend", [b"x" * 5, b"y" * 5], {"Content-Length": "10"})
    assert _run(read_limited(request, 10)) == b"x" * 5 + b"y" * 5  # at the limit: read
    request, _ = _request("POST", "/recommend", [b"{}"], {"Content-Length": "-1"})
    with pytest.raises(ValueError, match="Content-Length '-1' is not a number"):
        _run(read_limited(request, 10))


class _Replica:
    def __init__(self) -> None:
        self.bodies = []

    def describe(self):
        return {"algorithm": "fomaml"}

    def answer(self, body):
        self.bodies.append(body)
        return 200, {"items": []}


def _handle(method, path, chunks=(), headers=None, max_body=100):
    import json

    replica = _Replica()
    request, _ = _request(method, path, list(chunks) or [b""], headers)
    response = _run(handle(replica, request, replicas=2, max_body=max_body))
    return response.status_code, json.loads(response.body), response.headers, replica.bodies


def test_a_replica_answers_413_naming_the_limit_405_for_another_method_404_elsewhere():
    status, out, _, seen = _handle("POST", "/recommend", [b" " * 101], {"Content-Length": "101"})
    assert status == 413 and "limit of 100 bytes" in out["error"] and not seen
    status, out, headers, _ = _handle("GET", "/recommend")
    assert status == 405 and headers["allow"] == "POST" and "POST" in out["error"]
    status, out, headers, _ = _handle("POST", "/")
    assert status == 405 and headers["allow"] == "GET, HEAD" and out["error"] == "POST /: GET / for the model"
    status, out, headers, _ = _handle("HEAD", "/")  # the methods Allow lists are the ones answered
    assert status == 200 and out == {"algorithm": "fomaml", "replicas": 2}
    status, out, headers, _ = _handle("OPTIONS", "/recommend")
    assert status == 405 and headers["allow"] == "POST" and out["error"].startswith("OPTIONS /recommend:")
    assert _handle("POST", "/elsewhere")[0] == 404
    status, out, _, _ = _handle("POST", "/recommend", [b"\xff"])
    assert status == 400 and "not JSON" in out["error"]
    status, out, _, seen = _handle("POST", "/recommend/", [b'{"items": ["1"]}'])
    assert status == 200 and seen == [{"items": ["1"]}]
    status, out, _, _ = _handle("GET", "/")
    assert status == 200 and out == {"algorithm": "fomaml", "replicas": 2}


def test_a_restarted_replica_serves_the_checkpoint_chosen_at_start_after_training_deleted_it(
    trained, tmp_path
):
    """What a replica Ray Serve restarts after a crash gets: the model `metarec serve` loaded, through the
    object store (pickled), not a path to a checkpoint a run training in its folder has deleted since."""
    import pickle
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained().folder, run)
    served = load_served(str(run), fuse=False)  # a run folder: its newest checkpoint
    step = served.loaded.source
    raw = served.catalogue.raw_ids
    expected = [(r.raw_id, r.score) for r in served(raw[:3], 4)]
    stored = pickle.dumps(served)
    shutil.rmtree(step)  # the run trains on and prunes it (checkpoint.keep)
    replica = RecommenderReplica(pickle.loads(stored), threads=1)
    status, answer = replica.answer({"items": raw[:3], "k": 4})
    assert status == 200 and [r["item"] for r in answer["items"]] == [item for item, _ in expected]
    # The replica runs on its own torch thread count, which may sum in another order than this process.
    assert [r["score"] for r in answer["items"]] == pytest.approx([score for _, score in expected], rel=1e-5)
    assert replica.describe()["checkpoint"] == str(step)  # GET / says which step is served


def test_sigterm_while_metarec_serve_starts_is_an_interrupt_that_stops_the_cluster(monkeypatch):
    """SIGTERM (`kill`, `docker stop`) before the server answers: unwound as Ctrl-C through the clean-up
    (`metarec` prints "interrupted"), not the process killed with the cluster it was starting left running."""
    import os
    import signal

    from metarec_dist.runtime import ray_launcher, serving

    calls = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(serving, "check_port_free", lambda *a: None)
    monkeypatch.setattr(serving, "load_served", lambda *a: object())

    def init_ray(**kwargs):
        calls.append("init")
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the cluster starts
        calls.append("still starting")

    monkeypatch.setattr(ray_launcher, "init_ray", init_ray)
    monkeypatch.setattr(ray_launcher, "shutdown_ray", lambda: calls.append("shutdown"))
    received = []

    def outer(*_):  # stands for the default action, which would end the test process
        received.append("outer")

    previous = signal.signal(signal.SIGTERM, outer)
    try:
        with pytest.raises(KeyboardInterrupt):
            serving.serve_model("unused", port=8000)
        assert not received and signal.getsignal(signal.SIGTERM) is outer  # put back after the clean-up
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert calls == ["init", "shutdown"]


def test_the_catalogue_maps_raw_ids_with_an_index_built_once_not_per_request():
    from metarec_dist.eval.recommend import Catalogue

    catalogue = Catalogue([f"B{i:05d}" for i in range(20_000)], {}, mapped=True)
    assert catalogue.to_model_ids(["B00011", "B19999"]) == [12, 20_000]
    index = catalogue.index
    assert catalogue.to_model_ids(["B00000"]) == [1] and catalogue.index is index  # the same dict, reused
    with pytest.raises(ValueError, match="unknown item id"):
        catalogue.to_model_ids(["nope"])


def test_get_slash_says_which_adaptation_a_request_gets(trained, tmp_path):
    """GET / named the model and its fusion weight but not the test-time adaptation a request is served
    with: an export's recorded one (--steps / --choose-adaptation), or the trained one."""
    run = trained().folder
    out = tmp_path / "export"
    assert (
        main(["export", "--checkpoint", str(run), "--out", str(out), "--steps", "2", "--inner-lr", "0.25"])
        == 0
    )
    replica = RecommenderReplica(load_served(str(out), fuse=True), threads=1)
    assert replica.describe()["adaptation"] == {"steps": 2, "inner_lr": 0.25, "source": "export"}
    meta = replica.recommender.loaded.cfg.meta
    trained_one = RecommenderReplica(load_served(str(run), fuse=True), threads=1).describe()["adaptation"]
    assert trained_one == {"steps": meta.adaptation_steps, "inner_lr": meta.inner_lr, "source": "trained"}
    per_k = StoredAdaptation(steps=3, inner_lr=0.5, per_shot={1: (3, 0.5), 5: (1, 0.1)})
    loaded = dataclasses.replace(replica.recommender.loaded, adaptation=per_k)
    assert Recommender(loaded, replica.recommender.catalogue).served_adaptation() == {
        "steps": 3,
        "inner_lr": 0.5,
        "source": "export",
        "per_shot": {"1": [3, 0.5], "5": [1, 0.1]},
    }
