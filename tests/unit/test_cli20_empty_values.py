"""An option naming a file, folder or address given as an empty string (``--json "$OUT"`` with OUT unset)
fails naming the option: ``train --json ''`` trained and silently wrote nothing, and the others read ``''``
as the working folder ("--checkpoint .: not a checkpoint", "--json .: is a folder"). ``bench scale``'s
``--parts`` with a comma too many said "unknown ['']", and ``--eval-users`` did not echo the value."""

from __future__ import annotations

import pytest
from trained import TINY

from metarec_dist import cli
from metarec_dist.cli import main


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    def reached(*args, **kwargs):
        raise AssertionError("the command's work started before the empty option was refused")

    from metarec_dist.train import launch

    monkeypatch.setattr(launch, "train", reached)
    monkeypatch.setattr(cli, "_bench_result", reached)


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["train", "--config", TINY, "--json", ""], "--json"),
        (["train", "--config", ""], "--config"),
        (["print-config", "--config", " "], "--config"),
        (["bench", "data", "--json", ""], "--json"),
        (["bench", "serve", "--checkpoint", ""], "--checkpoint"),
        (["serve", "--checkpoint", ""], "--checkpoint"),
        (["serve", "--checkpoint", "x", "--host", ""], "--host"),
        (["export", "--checkpoint", "", "--out", "x"], "--checkpoint"),
        (["data", "download", "movielens-100k", "--data-dir", ""], "--data-dir"),
        (["bench", "scale", "--parts", ""], "--parts"),
        # evaluate / recommend had their own list (eval/cli.py), without recommend's --checkpoint ('' read
        # as the working folder) and with blanks passed on: one table (cli.NON_EMPTY) covers every command.
        (["recommend", "--checkpoint", "", "--items", "1"], "--checkpoint"),
        (["evaluate", "--checkpoint", " "], "--checkpoint"),
        (["evaluate", "--checkpoint", "x", "--baseline", ""], "--baseline"),
        (["evaluate", "--checkpoint", "x", "--shots", ""], "--shots"),
        (["evaluate", "--checkpoint", "x", "--json", ""], "--json"),
    ],
)
def test_an_empty_path_option_is_refused_naming_it(argv, flag, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag}: got an empty value; give ") and len(err.splitlines()) == 1, err


def test_bench_scale_names_a_comma_too_many_and_the_eval_users_given(capsys, monkeypatch):
    monkeypatch.undo()  # the real _bench_result: these are refused inside it, before any part runs
    assert main(["bench", "scale", "--parts", "zero,"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --parts zero,: an empty name; a comma-separated subset of data,eval,zero,sampled"
    )
    assert main(["bench", "scale", "--parts", "ZERO,eval"]) == 2
    assert "--parts ZERO,eval: unknown ['ZERO']" in capsys.readouterr().err
    assert main(["bench", "scale", "--eval-users", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --eval-users must be >= 1, got -1"
