"""Issue 12 (items 1, 6, 8): nothing the user did not create is deleted, and user mistakes are one
``error:`` line naming the file or key, never a traceback (``--verbose`` keeps it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from metarec_dist.checkpoint import EXPORT_CONFIG, EXPORT_WEIGHTS, MANIFEST, find_checkpoint
from metarec_dist.cli import main
from metarec_dist.config import load_config
from metarec_dist.metrics.redact import redact_text

EXPORT_FILES = {EXPORT_CONFIG, EXPORT_WEIGHTS}

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
SETTINGS = [
    "data.format=synthetic",
    "data.synthetic_users=60",
    "data.synthetic_items=30",
    "model.hidden_size=16",
    "model.num_heads=2",
    "model.adapter_rank=2",
    "model.max_seq_len=16",
    "tasks.support_max=5",
    "tasks.query_size=3",
    "meta.meta_batch_size=8",
    "train.meta_steps=2",
    "train.log_every=1",
    "logging.wandb=off",
]


def _train_args(root: Path, name: str, *extra: str) -> list[str]:
    args = ["train", "--config", TINY]
    for s in [*SETTINGS, f"runtime.storage_path={root}", f"runtime.run_name={name}", *extra]:
        args += ["--set", s]
    return args


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    assert main(_train_args(root, "r")) == 0
    return root / "r"


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _fails(capsys, argv: list[str], *expected: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: "), err
    for text in expected:
        assert text in err, err
    return err


# ------------------------------------------------------------------------------------ 1. export --out


def test_export_refuses_a_folder_holding_other_files(run, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    for extra in ([], ["--overwrite"]):
        _fails(capsys, ["export", "--checkpoint", str(run), "--out", str(out), *extra], "not empty")
    assert (out / "notes.txt").read_text() == "precious" and [p.name for p in out.iterdir()] == ["notes.txt"]


def test_export_never_touches_the_checkpoint_its_run_or_a_parent(run, capsys, monkeypatch):
    before = _tree(run.parent)
    ckpt = find_checkpoint(run)
    monkeypatch.chdir(run.parent)
    for out in (ckpt, run, run.parent, Path("."), ckpt / "engine", ckpt / "new"):
        for extra in ([], ["--overwrite"]):
            _fails(capsys, ["export", "--checkpoint", str(run), "--out", str(out), *extra], str(out))
    assert _tree(run.parent) == before


def test_export_replaces_a_previous_export_only_with_overwrite(run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == EXPORT_FILES
    first = _tree(out)
    _fails(capsys, ["export", "--checkpoint", str(run), "--out", str(out)], "--overwrite")
    assert main(["export", "--checkpoint", str(run), "--out", str(out), "--overwrite"]) == 0
    assert _tree(out) == first  # same checkpoint, same export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temp or backup folder left


def test_export_into_an_empty_folder(run, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == EXPORT_FILES


def test_export_out_at_a_file_is_a_clear_error(run, tmp_path, capsys):
    target = tmp_path / "model.bin"
    target.write_text("keep me")
    _fails(capsys, ["export", "--checkpoint", str(run), "--out", str(target)], str(target), "is a file")
    _fails(capsys, ["export", "--checkpoint", str(run), "--out", str(target / "sub")], "is a file")
    assert target.read_text() == "keep me"


# ---------------------------------------------------------------------------- 6. no tracebacks


@pytest.mark.parametrize("text", ["{}", "not json at all", '{"files": [1, 2]}', "\xff\xfe"])
def test_a_damaged_manifest_is_named(run, tmp_path, capsys, text):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(find_checkpoint(run), ckpt)
    (ckpt / MANIFEST).write_bytes(text.encode("latin-1"))
    _fails(capsys, ["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")], str(ckpt / MANIFEST))
    assert not (tmp_path / "o").exists()


def test_storage_path_at_a_file_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "runs"
    blocker.write_text("")
    _fails(capsys, _train_args(blocker, "x"), "runtime.storage_path", str(blocker), "is a file")
    _fails(capsys, _train_args(blocker / "deeper", "x"), str(blocker), "is a file")


def test_json_into_a_missing_folder_fails_before_training(tmp_path, capsys):
    target = tmp_path / "no" / "such" / "m.json"
    _fails(capsys, [*_train_args(tmp_path, "x"), "--json", str(target)], "--json", "does not exist")
    assert not (tmp_path / "x").exists()  # nothing was trained
    _fails(capsys, [*_train_args(tmp_path, "x"), "--json", str(tmp_path)], "is a folder")


def test_an_os_error_about_a_file_is_one_line_and_verbose_keeps_the_traceback(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    _fails(capsys, ["print-config", "--config", str(missing)], str(missing))
    assert main(["--verbose", "print-config", "--config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: ")


def test_credentials_in_a_url_are_not_echoed(tmp_path, capsys):
    url = "https://alice:s3cr3tpass@example.invalid/log.csv"
    err = _fails(capsys, ["data", "stats", "--path", url, "--format", "csv"])
    assert "s3cr3tpass" not in err and "alice" not in err, err


def test_a_url_collapsed_by_pathlib_is_still_redacted():
    url = "s3://KEY:SECRET@bucket/x.csv"
    assert redact_text(str(Path(url))) == "s3:/***@bucket/x.csv"
    assert redact_text(url) == "s3://***@bucket/x.csv"


# -------------------------------------------------------------------------------- 8. config checks


@pytest.mark.parametrize(
    "setting, key",
    [
        ("meta.inner_lr=.nan", "meta.inner_lr"),
        ("meta.inner_lr=nan", "meta.inner_lr"),
        ("optim.lr=.inf", "optim.lr"),
        ("optim.lr=inf", "optim.lr"),
        ("model.adapters=[lowrank,bogus]", "model.adapters"),
        ("runtime.run_name=../x", "runtime.run_name"),
        ("runtime.run_name=a/b", "runtime.run_name"),
        ("runtime.run_name=..", "runtime.run_name"),
    ],
)
def test_bad_settings_fail_at_load_naming_the_key(setting, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config(None, [setting])


def test_config_adapter_names_match_the_models():
    from metarec_dist.config import ADAPTER_NAMES
    from metarec_dist.models.adapters import ADAPTERS

    assert set(ADAPTER_NAMES) == set(ADAPTERS)


def test_run_name_cannot_escape_storage_path(tmp_path, capsys):
    _fails(capsys, _train_args(tmp_path / "runs", "../escaped"), "runtime.run_name")
    assert not (tmp_path / "escaped").exists()


def test_json_report_is_written(run, tmp_path):
    out = tmp_path / "m.json"
    assert main([*_train_args(run.parent, "j"), "--json", str(out)]) == 0
    assert "checkpoint" in json.loads(out.read_text())
