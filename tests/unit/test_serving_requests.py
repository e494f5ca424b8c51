"""What a `metarec serve` replica does with a request body, without Ray: the parsed fields, the answer equal
to `metarec recommend`'s, and every mistake a 400 naming the field (tests/integration/test_serve.py runs the
real Ray Serve application)."""

from __future__ import annotations

import pytest

from metarec_dist.cli import main
from metarec_dist.eval.recommend import Recommender
from metarec_dist.runtime.serving import RecommenderReplica, parse_request, read_body


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


def test_a_replica_answers_as_metarec_recommend(trained, tmp_path):
    run = trained().folder
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run), "--out", str(out), "--fuse-weight", "0.5"]) == 0
    replica = RecommenderReplica(str(out), fuse=True, threads=1)
    assert replica.describe()["fusion_weight"] == 0.5
    raw = replica.recommender.catalogue.raw_ids
    status, answer = replica.answer({"items": raw[:3], "k": 4})
    expected = Recommender.load(str(out))(raw[:3], 4)
    assert status == 200 and [r["item"] for r in answer["items"]] == [r.raw_id for r in expected]
    assert [r["score"] for r in answer["items"]] == [r.score for r in expected]
    plain = RecommenderReplica(str(out), fuse=False, threads=1)
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
    status, answer = RecommenderReplica(str(run), fuse=False, threads=1).answer({"items": ["no-such-item"]})
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
