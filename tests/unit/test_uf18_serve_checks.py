"""`metarec serve` refuses, before Ray starts, what would only make it wait: more replicas than this
machine can run, and an operator's proxy callback that cannot be imported (the proxy never came up: a 600 s
silent wait); on a joined cluster too small for the replicas it warns before Ray Serve waits."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from metarec_dist.cli import main
from metarec_dist.runtime import ray_launcher, serving


@pytest.fixture
def no_ray(monkeypatch):
    """No cluster: these checks come first; the variables serve sets are put back after the test."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for key in [
        *serving.SERVE_ENV,
        serving.PROXY_CALLBACK_ENV,
        serving.OTHER_CALLBACK_ENV,
        serving.LIMIT_ENV,
    ]:
        monkeypatch.delenv(key, raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError("Ray started")

    monkeypatch.setattr(ray_launcher, "init_ray", refuse)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_more_replicas_than_the_machine_runs_is_one_error_line(no_ray, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    args = ["serve", "--checkpoint", str(tmp_path), "--port", str(_free_port())]
    assert main([*args, "--replicas", "1000"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: --replicas 1000 x --threads 1 is 1000 CPUs on a machine with 2 cores; at most 8 (more "
        "replicas than cores only queue behind each other)\n"
    )
    assert main([*args, "--replicas", "3", "--threads", "3"]) == 2  # threads count too
    assert capsys.readouterr().err.startswith("error: --replicas 3 x --threads 3 is 9 CPUs")
    serving.check_replicas_fit(8, 1, 2)  # the most allowed: no error


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("no_such_module_uf18.callback", "cannot be imported (No module named"),
        ("os.sep", "is not a function"),
    ],
)
def test_a_proxy_callback_that_cannot_be_imported_is_one_error_line(
    no_ray, tmp_path, capsys, monkeypatch, path, why
):
    monkeypatch.setenv(serving.PROXY_CALLBACK_ENV, path)
    assert main(["serve", "--checkpoint", str(tmp_path), "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {serving.PROXY_CALLBACK_ENV}='{path}' {why}") and err.count("\n") == 1
    assert err.rstrip().endswith("fix or unset it")


def test_a_joined_cluster_too_small_for_the_replicas_is_warned_of(caplog):
    with caplog.at_level(logging.WARNING, logger="metarec"):
        serving.warn_if_cluster_too_small(4, 2, 4.0)
        serving.warn_if_cluster_too_small(2, 2, 4.0)  # fits: nothing
    assert [r.getMessage() for r in caplog.records] == [
        "--replicas 4 x --threads 2 reserve 8 CPUs but the cluster at RAY_ADDRESS has 4: Ray Serve waits "
        "until it has them (an autoscaler adding nodes); Ctrl-C and lower --replicas otherwise"
    ]
