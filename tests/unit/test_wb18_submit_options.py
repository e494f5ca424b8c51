"""``metarec submit`` options that would fail only on the cluster, or be dropped without a word, are refused
before anything is uploaded (a stand-in Ray job client records what would be submitted)."""

from __future__ import annotations

import pytest

from metarec_dist.cli import main

ADDRESS = "http://127.0.0.1:8265"


class _Client:
    submitted: list[dict] = []

    def __init__(self, address: str):
        self.address = address

    def submit_job(self, **job):
        _Client.submitted.append(job)
        return job.get("submission_id") or "raysubmit_1"


@pytest.fixture
def client(monkeypatch):
    import ray.job_submission

    _Client.submitted = []
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", _Client)
    return _Client


def _submit(*extra: str) -> list[str]:
    return [
        "submit",
        "--address",
        ADDRESS,
        "--config",
        "configs/tiny.yaml",
        "--set",
        "runtime.storage_path=/mnt/shared/runs",
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        # was: "the config must be inside the uploaded working dir /nonexistent/dir"
        (["--working-dir", "/nonexistent/dir"], "error: --working-dir /nonexistent/dir: not found;"),
        (["--working-dir", "README.md"], "README.md: not a folder;"),
        # was: submitted, and `pip install ''` failed on the cluster after the upload
        (["--pip", "pandas", "--pip", ""], "error: --pip '': give a pip requirement"),
        # was: dropped, the job ran without the image (an unset shell variable: --image "$IMAGE")
        (["--image", ""], "error: --image '': give a container image"),
        # was: submitted under an empty id, which no `ray job` command can name
        (["--job-id", ""], "error: --job-id '': give a non-empty id"),
        (["--job-id", " run7"], "error: --job-id ' run7': give a non-empty id without leading or trailing"),
    ],
)
def test_options_the_cluster_would_fail_on_are_refused_before_uploading(client, capsys, extra, said):
    assert main(_submit(*extra)) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1, err
    assert client.submitted == []


def test_the_printed_commands_quote_a_job_id_with_spaces(client, capsys):
    assert main(_submit("--job-id", "my run 7")) == 0
    out = capsys.readouterr().out
    assert client.submitted[0]["submission_id"] == "my run 7"
    assert f"ray job stop --address {ADDRESS} 'my run 7'" in out, out
    assert "--follow 'my run 7'" in out, out
