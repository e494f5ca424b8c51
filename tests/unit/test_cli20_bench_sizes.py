"""``metarec bench serve``'s sizes are refused naming the flag, the value given and the range (it said
"--requests, --concurrency and --replicas must be >= 1" whichever was wrong, and a --replicas the server
refuses failed only after the in-process half, as "metarec serve did not come up"); ``bench scale``'s two
in-process evaluation figures have distinct keys even when torch's default is one thread."""

from __future__ import annotations

import pytest
import torch

from metarec_dist.bench import scale, serve_bench
from metarec_dist.cli import main

RANGE = "--replicas must be between 1 and 8 on this machine (4 per core, 2 cores)"


@pytest.fixture
def nothing_runs(monkeypatch):
    from metarec_dist.eval import recommend

    def reached(*args, **kwargs):
        raise AssertionError("the benchmark started before its sizes were checked")

    monkeypatch.setattr(recommend.Recommender, "load", reached)
    monkeypatch.setattr(serve_bench, "start_server", reached)
    monkeypatch.setattr(serve_bench.os, "cpu_count", lambda: 2)


@pytest.mark.parametrize(
    "flag, value, says",
    [
        ("--requests", "0", "--requests must be >= 1, got 0"),
        ("--concurrency", "-3", "--concurrency must be >= 1, got -3"),
        ("--replicas", "0", f"{RANGE}, got 0"),
        ("--replicas", "9", f"{RANGE}, got 9"),
    ],
)
def test_a_serve_size_is_refused_with_its_value_and_range(flag, value, says, nothing_runs, capsys):
    assert main(["bench", "serve", "--checkpoint", "x", flag, value]) == 2
    assert capsys.readouterr().err.strip() == f"error: {says}"


def test_the_most_replicas_the_server_takes_pass():
    from metarec_dist.runtime.serving import MAX_REPLICAS_PER_CORE, check_replicas_fit

    serve_bench.check_replicas(MAX_REPLICAS_PER_CORE * 2, cores=2)
    check_replicas_fit(MAX_REPLICAS_PER_CORE * 2, 1, 2)  # the server's own limit: the same


@pytest.mark.parametrize("default_threads", [1, 2])
def test_the_in_process_eval_keys_stay_distinct(default_threads):
    before = torch.get_num_threads()
    torch.set_num_threads(default_threads)
    try:
        seen: list[int] = []

        def measure() -> float:
            seen.append(torch.get_num_threads())
            return float(len(seen))

        out = scale.inprocess_rates(measure)
    finally:
        torch.set_num_threads(before)
    assert seen == [default_threads, 1]
    assert out == {
        "eval_inprocess_default_threads": default_threads,
        "eval_users_per_s_inprocess_default": 1.0,
        "eval_users_per_s_inprocess_1t": 2.0,
    }
