"""``metarec evaluate``/``export`` options as a user meets them: an output place where no file can be
created (/proc: permission bits say yes to root) is refused at once naming the flag, not after the whole
evaluation or as a temp folder's OSError; the probe leaves nothing behind; too many ``--shots`` is one error
saying the largest that fits, with no note about support_max before it."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_safety import assert_fails

PROC = Path("/proc")
needs_proc = pytest.mark.skipif(not PROC.is_dir(), reason="needs Linux /proc")


@needs_proc
def test_json_into_a_place_that_takes_no_files_fails_before_the_checkpoint_is_read(tmp_path, capsys):
    missing = str(tmp_path / "no-such-run")  # never reached: the --json check comes first
    argv = ["evaluate", "--checkpoint", missing, "--json", "/proc/r.json"]
    assert_fails(capsys, argv, "--json /proc/r.json: cannot create files in /proc")


@needs_proc
def test_export_out_into_a_place_that_takes_no_files_names_out(tmp_path, capsys):
    missing = str(tmp_path / "no-such-run")
    argv = ["export", "--checkpoint", missing, "--out", "/proc/x"]
    assert_fails(capsys, argv, "export --out /proc/x: cannot create files in /proc")


def test_the_probe_leaves_nothing_behind(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("precious")
    argv = ["evaluate", "--checkpoint", str(tmp_path / "no-such-run"), "--json", str(tmp_path / "a/b/r.json")]
    assert_fails(capsys, argv, "--checkpoint")
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_too_many_shots_is_one_error_giving_the_largest_that_fits(trained, capsys):
    run = trained()
    most = run.cfg.model.max_seq_len - 1
    err = assert_fails(capsys, ["evaluate", "--checkpoint", str(run.folder), "--shots", "1,99"], "--shots")
    assert f"give shot counts up to {most}" in err and "note:" not in err, err


@pytest.mark.parametrize("flag", ["--json", "--shots", "--baseline"])
def test_an_empty_option_is_refused_not_read_as_absent(tmp_path, capsys, flag):
    # Before the fix --json "" evaluated and wrote nothing, silently; the checkpoint is never reached.
    argv = ["evaluate", "--checkpoint", str(tmp_path / "no-such-run"), flag, ""]
    assert_fails(capsys, argv, f"{flag}: got an empty value")


def test_json_never_replaces_a_file_that_is_no_report(trained, tmp_path, capsys):
    """``--json EXPORT/metarec_config.json`` replaced the export's config with the report (the export then
    no longer loaded); a file that is not an earlier report is refused, an earlier report is rewritten."""
    from metarec_dist import checkpoint as ckpt
    from metarec_dist.cli import main

    export = tmp_path / "export"
    assert main(["export", "--checkpoint", str(trained().folder), "--out", str(export)]) == 0
    config = export / ckpt.EXPORT_CONFIG
    before = config.read_bytes()
    argv = ["evaluate", "--checkpoint", str(export), "--json", str(config), "--n-boot", "5"]
    assert_fails(capsys, argv, f"--json {config}: exists and is not a `metarec evaluate` report")
    assert config.read_bytes() == before
    report = tmp_path / "r.json"
    for _ in range(2):  # the second run rewrites its own report
        assert main(["evaluate", "--checkpoint", str(export), "--json", str(report), "--n-boot", "5"]) == 0
    assert "methods" in report.read_text()
