"""``metarec bench serve``'s sizes are refused naming the flag, the value given and the range (it said
"--requests, --concurrency and --replicas must be >= 1" whichever was wrong, and a --replicas the server
refuses failed only after the in-process half, as "metarec serve did not come up"); ``bench scale``'s two
in-process evaluation figures have distinct keys even when torch's default is one thread."""

from __future__ import annotations

import pytest
import torch

from metarec_dist import errors
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


@pytest.fixture
def one_gib_free(monkeypatch):
    """1 GiB available, and no log is made: a size that does not fit fails before make_log."""
    from metarec_dist.bench import data_bench

    def make_log(*args, **kwargs):
        raise AssertionError("the log was generated before its size was checked")

    monkeypatch.setattr(errors, "available_bytes", lambda: 2**30)
    monkeypatch.setattr(data_bench, "make_log", make_log)


def test_a_generated_log_too_big_for_memory_is_refused_before_it_is_made(one_gib_free, capsys):
    """--interactions 10**12 was numpy's _ArrayMemoryError traceback; a size just under that filled the
    machine's memory first."""
    assert main(["bench", "data", "--interactions", "40000000"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --interactions 40,000,000: the generated log alone needs 1.2 GiB of memory (32 bytes per "
        "interaction) and 1.0 GiB are available; choose a smaller size"
    )
    assert main(["bench", "scale", "--interactions", "4000000", "--parts", "data"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --interactions 4,000,000 (the data part's 10 N): the generated log alone")


def test_a_log_that_fits_goes_on_to_be_made(one_gib_free):
    with pytest.raises(AssertionError, match="the log was generated"):  # past the check: make_log is called
        main(["bench", "data", "--interactions", "30000000"])  # 0.9 GiB


def test_the_zero_part_says_how_far_zero3_trained_from_zero0():
    def rank(param_mb: float, losses: list[float]) -> dict:
        figures = {"eval_peak_delta_mb": 1.0, "peak_mb": 2.0, "loss": "sampled", "losses": losses}
        return {**figures, "param_mb": param_mb}

    runs = {
        0: [rank(60, [11.5, 11.4]), rank(60, [11.6, 11.5])],
        3: [rank(30, [11.5, 11.4]), rank(30, [11.6, 11.25])],
    }
    out = scale.zero_summary(runs, 1000)
    assert out["zero3_max_loss_diff_vs_zero0"] == pytest.approx(0.25)
    assert (
        out["zero0_rank_param_mb"] == 60
        and out["zero3_rank_param_mb"] == 30
        and out["zero_loss"] == "sampled"
    )


def test_the_bench_help_says_the_choices_and_ranges(capsys):
    """``--parts`` said "comma-separated subset" (of what?), --replicas and --requests said nothing."""
    from metarec_dist.runtime.serving import MAX_REPLICAS_PER_CORE

    with pytest.raises(SystemExit):
        main(["bench", "scale", "--help"])
    assert f"subset of {','.join(scale.PARTS)}" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["bench", "serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"1 to {MAX_REPLICAS_PER_CORE} per core" in text and "after 10 warm-up" in text


def test_out_of_memory_is_one_line_and_verbose_keeps_the_traceback(monkeypatch, capsys):
    """A MemoryError (numpy's, for a size the memory check cannot see) was a traceback."""
    from metarec_dist.bench import data_bench

    def make_log(*args, **kwargs):
        raise MemoryError("Unable to allocate 7.28 TiB for an array with shape (1000000000000,)")

    monkeypatch.setattr(errors, "available_bytes", lambda: None)  # not known: not checked
    monkeypatch.setattr(data_bench, "make_log", make_log)
    assert main(["bench", "data"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: out of memory: Unable to allocate 7.28 TiB for an array with shape (1000000000000,); choose "
        "smaller sizes (--verbose: where)\n"
    )
    assert main(["--verbose", "bench", "data"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_generated_users_and_requests_too_big_for_memory_are_refused_naming_the_option(
    one_gib_free, nothing_runs, monkeypatch, capsys
):
    """``bench scale --eval-users 10**9`` and ``bench serve --requests 10**9`` had no memory check (the
    eval part's child, or this process, filled the machine's memory): refused as ``--interactions`` is,
    before anything runs."""

    def child(*args, **kwargs):
        raise AssertionError("a part ran before its sizes were checked")

    monkeypatch.setattr(scale, "_child", child)
    assert main(["bench", "scale", "--eval-users", "4000000", "--parts", "eval"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --eval-users 4,000,000: the generated users alone need 1.2 GiB of memory (320 bytes per "
        "user) and 1.0 GiB are available; choose a smaller size"
    )
    assert main(["bench", "serve", "--checkpoint", "x", "--requests", "4000000"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --requests 4,000,000: its requests alone need 1.2 GiB of memory (320 bytes per request) "
        "and 1.0 GiB are available; choose a smaller size"
    )
    # Sizes that fit go on (to the part, to loading the model), and an unrun part's size is not checked.
    with pytest.raises(AssertionError, match="a part ran"):
        main(["bench", "scale", "--eval-users", "3000000", "--parts", "eval"])
    with pytest.raises(AssertionError, match="a part ran"):
        main(["bench", "scale", "--eval-users", "4000000", "--parts", "sampled"])
    with pytest.raises(AssertionError, match="before its sizes were checked"):
        main(["bench", "serve", "--checkpoint", "x", "--requests", "3000000"])


@pytest.mark.parametrize(
    "raised, says",
    [
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                "you tried to allocate 25600000000 bytes. Error code 12 (Cannot allocate memory)"
            ),
            "torch could not allocate 23.8 GiB",
        ),
        (
            torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139 GiB"
            ),
            "CUDA out of memory. Tried to allocate 2.00 GiB",
        ),
    ],
)
def test_torch_out_of_memory_is_one_line(raised, says, monkeypatch, capsys):
    """torch's allocator failure is a RuntimeError (not a MemoryError): it was a traceback."""
    from metarec_dist.bench import data_bench

    def make_log(*args, **kwargs):
        raise raised

    monkeypatch.setattr(errors, "available_bytes", lambda: None)
    monkeypatch.setattr(data_bench, "make_log", make_log)
    assert main(["bench", "data"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: out of memory: {says}; choose smaller sizes (--verbose: where)\n"


def test_another_runtime_error_keeps_its_traceback(monkeypatch):
    from metarec_dist.bench import data_bench

    def make_log(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(errors, "available_bytes", lambda: None)
    monkeypatch.setattr(data_bench, "make_log", make_log)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["bench", "data"])
