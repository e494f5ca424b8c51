"""Options that name a file or folder on this machine, given a URL: `export --out s3://bucket/exp` wrote
the export into a local folder "s3:/bucket/exp" and said it had exported there, and `--checkpoint
s3://bucket/run` was "--checkpoint s3:/bucket/run: no such folder"."""

from __future__ import annotations

import pytest

from metarec_dist.cli import main

READ = "give a path on this machine and copy it here first (aws s3 cp --recursive, gsutil -m cp -r, ...)"


@pytest.mark.parametrize(
    "argv, says",
    [
        (
            ["export", "--checkpoint", "run", "--out", "s3://b/exp"],
            "--out s3://b/exp: a URL; give a path on this machine and copy the result there afterwards",
        ),
        (["export", "--checkpoint", "s3://b/run", "--out", "exp"], f"--checkpoint s3://b/run: a URL; {READ}"),
        (["evaluate", "--checkpoint", "gs://b/run"], f"--checkpoint gs://b/run: a URL; {READ}"),
        (["recommend", "--checkpoint", "gs://b/run"], f"--checkpoint gs://b/run: a URL; {READ}"),
        (["train", "--config", "https://h/c.yaml"], f"--config https://h/c.yaml: a URL; {READ}"),
        (
            ["bench", "data", "--json", "s3://b/r.json"],
            "--json s3://b/r.json: a URL; give a path on this machine and copy the result there afterwards",
        ),
    ],
)
def test_a_url_for_a_local_path_is_refused_naming_the_option(argv, says, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert capsys.readouterr().err == f"error: {says}\n"
    assert list(tmp_path.iterdir()) == []  # no "s3:" folder
