"""``metarec submit`` against a stand-in Ray job client: what the user is told, and what is refused before
anything is uploaded."""

from __future__ import annotations

import pytest

from metarec_dist.cli import main

ADDRESS = "http://127.0.0.1:8265"


class _Client:
    """Ray's ``JobSubmissionClient`` as far as ``metarec submit`` uses it; Ctrl-C arrives while it polls."""

    submitted: list[dict] = []

    def __init__(self, address: str):
        self.address = address

    def submit_job(self, **job):
        _Client.submitted.append(job)
        return "raysubmit_1"

    def get_job_status(self, sid: str):
        raise KeyboardInterrupt


@pytest.fixture
def client(monkeypatch):
    import ray.job_submission

    _Client.submitted = []
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", _Client)
    return _Client


def _submit(*sets: str, wait: bool = False) -> list[str]:
    argv = ["submit", "--address", ADDRESS, "--config", "configs/tiny.yaml"]
    return argv + [a for s in sets for a in ("--set", s)] + (["--wait"] if wait else [])


def test_ctrl_c_while_waiting_says_the_job_keeps_running_and_how_to_stop_it(client, capsys):
    assert main(_submit("runtime.storage_path=/mnt/shared/runs", wait=True)) == 130
    out, err = capsys.readouterr()
    stop = f"ray job stop --address {ADDRESS} raysubmit_1"
    assert stop in out  # said at submission, too
    assert "keeps running on the cluster" in err and stop in err, err


@pytest.mark.parametrize("path", ["runs", "./runs", "../elsewhere"])
def test_a_relative_storage_path_is_refused_before_submitting(client, capsys, path):
    assert main(_submit(f"runtime.storage_path={path}")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: runtime.storage_path={path}:") and "absolute path" in err, err
    assert client.submitted == []


@pytest.mark.parametrize("path", ["/mnt/shared/runs", "s3://bucket/runs"])
def test_an_absolute_or_cloud_storage_path_is_submitted(client, capsys, path):
    assert main(_submit(f"runtime.storage_path={path}")) == 0
    assert f"runtime.storage_path={path}" in client.submitted[0]["entrypoint"]


def test_a_working_dir_over_the_upload_limit_says_what_to_do(client, monkeypatch, capsys):
    """What Ray's client raises when the zipped working dir is over the Jobs API's 100 MiB request limit."""

    def too_large(self, **job):
        raise RuntimeError(
            "Request failed with status code 413: Maximum request body size 104857600 exceeded.."
        )

    monkeypatch.setattr(client, "submit_job", too_large)
    assert main(_submit("runtime.storage_path=/mnt/shared/runs")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the working dir ") and "too large to upload" in err, err
    assert "104857600" in err and ".gitignore" in err and "--working-dir" in err, err


def test_deepspeed_settings_are_checked_as_the_ray_job_runs_them(client, capsys):
    """configs/tiny.yaml says backend local; the job runs on Ray, which takes ZeRO settings."""
    sets = ("runtime.storage_path=/mnt/shared/runs", "runtime.zero_stage=3", "runtime.offload_param=true")
    assert main(_submit(*sets)) == 0, capsys.readouterr().err
    assert "--set runtime.zero_stage=3" in client.submitted[0]["entrypoint"]
