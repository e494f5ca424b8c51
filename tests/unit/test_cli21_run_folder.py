"""A run folder that is a file (``runtime.storage_path/runtime.run_name`` taken by a file) was refused as
"cannot create the run folder lock ...: [Errno 17] File exists": now it says what is wrong and what to do."""

from __future__ import annotations

from trained import train_args

from metarec_dist.cli import main


def test_a_run_folder_that_is_a_file_is_named(tmp_path, capsys):
    (tmp_path / "a").write_text("not a run")
    assert main(train_args(tmp_path, "a")) == 2
    assert capsys.readouterr().err == (
        f"error: run folder {tmp_path / 'a'}: is a file, not a folder; choose another run name (--set "
        "runtime.run_name=NEW) or move the file away\n"
    )
    assert (tmp_path / "a").read_text() == "not a run"
