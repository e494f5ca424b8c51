"""Issue 12 (items 1, 6, 8): nothing the user did not create is deleted, and user mistakes are one
``error:`` line naming the file or key, never a traceback (``--verbose`` keeps it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from trained import train_args

from metarec_dist.checkpoint import EXPORT_CONFIG, EXPORT_WEIGHTS, MANIFEST, find_checkpoint
from metarec_dist.cli import main
from metarec_dist.config import load_config
from metarec_dist.metrics.redact import redact_text

EXPORT_FILES = {EXPORT_CONFIG, EXPORT_WEIGHTS}


@pytest.fixture(scope="module")
def run(trained) -> Path:
    return trained().folder


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_fails(capsys, argv: list[str], *expected: str) -> str:
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
        assert_fails(capsys, ["export", "--checkpoint", str(run), "--out", str(out), *extra], "not empty")
    assert (out / "notes.txt").read_text() == "precious" and [p.name for p in out.iterdir()] == ["notes.txt"]


def test_export_says_what_its_checkpoint_argument_is_instead(run, tmp_path, capsys):
    export, out = tmp_path / "export", tmp_path / "out"
    assert main(["export", "--checkpoint", str(run), "--out", str(export)]) == 0
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    for given, said in [
        (tmp_path / "missing", "no such folder"),
        (tmp_path / "file", "is a file"),
        (export, "is already an exported model"),
        (tmp_path / "empty", "neither a checkpoint"),
        (find_checkpoint(run) / "engine", "neither a checkpoint"),
    ]:
        args = ["export", "--checkpoint", str(given), "--out", str(out)]
        err = assert_fails(capsys, args, f"--checkpoint {given}: {said}", "give a run folder")
        assert "incomplete" not in err
    assert not out.exists()


def test_export_onto_a_symbolic_link_says_so_and_leaves_it(run, tmp_path, capsys):
    (tmp_path / "real").mkdir()
    for target in ("real", "gone"):  # a link to a folder, a dangling link
        link = tmp_path / f"to-{target}"
        link.symlink_to(tmp_path / target)
        args = ["export", "--checkpoint", str(run), "--out", str(link)]
        assert_fails(capsys, args, f"--out {link}: is a symbolic link")
        assert link.is_symlink() and not any((tmp_path / "real").iterdir())


def test_export_into_the_current_folder_is_refused_even_when_empty(run, tmp_path, capsys, monkeypatch):
    # The export takes its folder's place; done to the shell's current folder it would leave the shell in a
    # deleted folder. An empty --out (an unset variable) is the current folder too.
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    for out in ("", ".", str(tmp_path / "here")):
        assert_fails(capsys, ["export", "--checkpoint", str(run), "--out", out], "is the current folder")
    assert not any((tmp_path / "here").iterdir()) and sorted(p.name for p in tmp_path.iterdir()) == ["here"]


def test_export_never_touches_the_checkpoint_its_run_or_a_parent(run, capsys, monkeypatch):
    before = _tree(run.parent)
    ckpt = find_checkpoint(run)
    monkeypatch.chdir(run.parent)
    for out in (ckpt, run, run.parent, Path("."), ckpt / "engine", ckpt / "new"):
        for extra in ([], ["--overwrite"]):
            assert_fails(capsys, ["export", "--checkpoint", str(run), "--out", str(out), *extra], str(out))
    assert _tree(run.parent) == before


def test_export_replaces_a_previous_export_only_with_overwrite(run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == EXPORT_FILES
    first = _tree(out)
    assert_fails(capsys, ["export", "--checkpoint", str(run), "--out", str(out)], "--overwrite")
    assert main(["export", "--checkpoint", str(run), "--out", str(out), "--overwrite"]) == 0
    assert _tree(out) == first  # same checkpoint, same export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temp or backup folder left


def test_the_next_export_removes_the_temp_folders_a_killed_export_left(run, tmp_path):
    import socket
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a process that is gone, as a kill -9'd export is
    out = tmp_path / "export"
    left = tmp_path / f".export.tmp-{socket.gethostname()}-{child.pid}-k1ll3d_x"
    left.mkdir()
    (left / EXPORT_WEIGHTS).write_bytes(b"half")
    theirs = tmp_path / ".export.notes"
    theirs.mkdir()
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".export.notes", "export"]


def test_export_into_an_empty_folder(run, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == EXPORT_FILES


def test_export_out_at_a_file_is_a_clear_error(run, tmp_path, capsys):
    target = tmp_path / "model.bin"
    target.write_text("keep me")
    assert_fails(capsys, ["export", "--checkpoint", str(run), "--out", str(target)], str(target), "is a file")
    assert_fails(capsys, ["export", "--checkpoint", str(run), "--out", str(target / "sub")], "is a file")
    assert target.read_text() == "keep me"


def _pruned_during_the_first_read(run: Path, live: Path, monkeypatch, how: str = "prune") -> Path:
    """``live``: a copy of ``run`` whose checkpoint (returned) is deleted, as a run training there does (a
    newer checkpoint saved, then the old one deleted), while the first export of it reads its shards.
    ``how``: "prune", ours (the manifest first); "ray", Ray Train's (a shard goes, the manifest stays)."""
    from metarec_dist import checkpoint as ckpt
    from metarec_dist.runtime import export as runtime_export

    shutil.copytree(run, live)
    old = find_checkpoint(live)
    real = runtime_export.consolidated_state_dict
    newer = old.with_name(f"step_{int(old.name.split('_')[1]) + 1:06d}")

    def prune_first(engine_dir):
        if not newer.exists():
            shutil.copytree(old, newer)
            if how == "prune":
                ckpt.prune(live, keep=1)
            else:
                shutil.rmtree(old / "engine")
        return real(engine_dir)

    monkeypatch.setattr(runtime_export, "consolidated_state_dict", prune_first)
    return old


@pytest.mark.parametrize(("command", "how"), [("export", "prune"), ("recommend", "prune"), ("export", "ray")])
def test_a_run_folder_whose_checkpoint_is_pruned_while_read_reads_the_newest(
    run, tmp_path, capsys, monkeypatch, caplog, command, how
):
    live = tmp_path / "live"
    old = _pruned_during_the_first_read(run, live, monkeypatch, how)
    argv = {
        "export": ["export", "--checkpoint", str(live), "--out", str(tmp_path / "out")],
        "recommend": ["recommend", "--checkpoint", str(live), "--items", "1", "--k", "2"],
    }[command]
    with caplog.at_level("WARNING", logger="metarec"):
        assert main(argv) == 0, capsys.readouterr().err
    assert not (old / "engine").exists() and f"checkpoint {old} was deleted while it was read" in caplog.text
    if command == "export":
        assert {p.name for p in (tmp_path / "out").iterdir()} == EXPORT_FILES


def test_a_checkpoint_named_by_the_user_and_pruned_while_read_says_so(run, tmp_path, capsys, monkeypatch):
    old = _pruned_during_the_first_read(run, tmp_path / "live", monkeypatch)
    argv = ["export", "--checkpoint", str(old), "--out", str(tmp_path / "out")]
    assert_fails(capsys, argv, f"checkpoint {old} was deleted while it was read", "read the run folder")
    assert not (tmp_path / "out").exists()


def test_local_checkpoint_files_are_private(run):
    files = [p for p in find_checkpoint(run).rglob("*") if p.is_file()]
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {"0o600"}


# ---------------------------------------------------------------------------- 6. no tracebacks


@pytest.mark.parametrize("text", ["{}", "not json at all", '{"files": [1, 2]}', "\xff\xfe"])
def test_a_damaged_manifest_is_named(run, tmp_path, capsys, text):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(find_checkpoint(run), ckpt)
    (ckpt / MANIFEST).write_bytes(text.encode("latin-1"))
    assert_fails(
        capsys, ["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")], str(ckpt / MANIFEST)
    )
    assert not (tmp_path / "o").exists()


def test_storage_path_at_a_file_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "runs"
    blocker.write_text("")
    assert_fails(capsys, train_args(blocker, "x"), "runtime.storage_path", str(blocker), "is a file")
    assert_fails(capsys, train_args(blocker / "deeper", "x"), str(blocker), "is a file")


def test_json_that_cannot_be_written_fails_before_training(tmp_path, capsys):
    """A --json under a file, or a folder, fails before training; a missing folder is created by the write
    (as `metarec evaluate --json` does)."""
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "such" / "m.json"
    assert_fails(
        capsys, [*train_args(tmp_path, "x"), "--json", str(target)], "--json", "is a file, not a folder"
    )
    assert not (tmp_path / "x").exists()  # nothing was trained
    assert_fails(capsys, [*train_args(tmp_path, "x"), "--json", str(tmp_path)], "is a folder")
    made = tmp_path / "no" / "such" / "m.json"
    assert main([*train_args(tmp_path, "x"), "--json", str(made)]) == 0
    assert json.loads(made.read_text())["step"] == 2


def test_an_os_error_about_a_file_is_one_line_and_verbose_keeps_the_traceback(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert_fails(capsys, ["print-config", "--config", str(missing)], str(missing))
    assert main(["--verbose", "print-config", "--config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: ")


def test_credentials_in_a_url_are_not_echoed(tmp_path, capsys):
    url = "https://alice:s3cr3tpass@example.invalid/log.csv"
    err = assert_fails(capsys, ["data", "stats", "--path", url, "--format", "csv"])
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
    assert_fails(capsys, train_args(tmp_path / "runs", "../escaped"), "runtime.run_name")
    assert not (tmp_path / "escaped").exists()


def test_json_report_is_written(tmp_path):
    out = tmp_path / "m.json"
    assert main([*train_args(tmp_path, "j", "train.meta_steps=1"), "--json", str(out)]) == 0
    assert "checkpoint" in json.loads(out.read_text())


# ------------------------------------------------------------------------ 8. smaller ones


def _catalogue(run: Path) -> list[str]:
    from metarec_dist.eval.loading import load_model
    from metarec_dist.eval.recommend import load_catalogue

    return load_catalogue(load_model(str(run))).raw_ids


def test_a_history_holding_the_whole_catalogue_says_nothing_is_left(run, capsys):
    items = ",".join(_catalogue(run))
    assert_fails(
        capsys, ["recommend", "--checkpoint", str(run), "--items", items], "nothing left to recommend"
    )


def test_a_history_longer_than_the_support_gets_a_note(run, capsys):
    items = _catalogue(run)[:8]  # tasks.support_max=5 in SMALL (tests/trained.py)
    assert main(["recommend", "--checkpoint", str(run), "--items", ",".join(items), "--k", "3"]) == 0
    out = capsys.readouterr()
    assert "the history has 8 items" in out.err and "most recent 5" in out.err
    assert "top 3 after 8 items" in out.out


def test_n_boot_zero_is_an_error_not_the_default(run, capsys):
    assert_fails(capsys, ["evaluate", "--checkpoint", str(run), "--n-boot", "0"], "--n-boot must be >= 1")


def test_zero_evaluation_workers_is_an_error(run, capsys):
    assert_fails(capsys, ["evaluate", "--checkpoint", str(run), "--workers", "0"], "--workers must be >= 1")


def _read_csv(path: Path, text: str, *settings: str):
    from metarec_dist.data import prepare_data

    path.write_text(text)
    cfg = load_config(None, ["data.format=csv", f"data.path={path}", "data.cache=false", *settings])
    return prepare_data(cfg.data)


def test_duplicate_header_names_are_an_error_naming_the_column(tmp_path):
    with pytest.raises(ValueError, match=r"line 1 \(the header\).*'user_id'.*more than once") as err:
        _read_csv(tmp_path / "dup.csv", "user_id,item_id,user_id\n1,2,3\n")
    assert str(tmp_path / "dup.csv") in str(err.value)


@pytest.mark.parametrize("big", ["9223372036854775808", "99999999999999999999"])
def test_ids_beyond_int64_name_file_line_and_column(tmp_path, big):
    text = f"user_id,item_id,timestamp\n1,2,3\n{big},3,4\n"
    with pytest.raises(ValueError, match=r"line 3, column 'user_id'.*too large.*string_ids=true") as err:
        _read_csv(tmp_path / "big.csv", text)
    assert str(tmp_path / "big.csv") in str(err.value)


def test_ids_beyond_int64_in_a_string_column_name_the_line(tmp_path):
    from metarec_dist.data import prepare_data

    path = tmp_path / "big.jsonl"
    path.write_text(
        '{"user_id": "1", "item_id": 2, "timestamp": 3}\n{"user_id": "99999999999999999999", "item_id": 3, '
        '"timestamp": 4}\n'
    )
    cfg = load_config(None, ["data.format=jsonl", f"data.path={path}", "data.cache=false"])
    with pytest.raises(ValueError, match=r"big\.jsonl: line 2, column 'user_id'.*too large"):
        prepare_data(cfg.data)


def test_a_ray_training_failure_is_unwrapped_to_the_users_error():
    from ray.exceptions import RayTaskError
    from ray.train import ControllerError, WorkerGroupError

    from metarec_dist.errors import UserError
    from metarec_dist.runtime.ray_launcher import user_error_in

    mistake = UserError("checkpoint /runs/x/checkpoint_step_000005: shard engine/state/a.pt is missing")
    task = RayTaskError("train_fn", "Traceback (most recent call last): ...", mistake)
    wrapped = WorkerGroupError("rank 1 failed", {0: RuntimeError("peer gone"), 1: task})
    assert user_error_in(wrapped) is mistake
    disk = NotADirectoryError(20, "Not a directory", "/runs/file")
    assert user_error_in(ControllerError(disk)) is disk
    assert user_error_in(WorkerGroupError("crash", {0: RuntimeError("segfault")})) is None


class _Refusing:
    """A stand-in Ray Jobs API that answers every request with one HTTP status (a real HTTP server). With
    ``body``: it refuses only the submission (POST) with it, after Ray's client has checked the version and
    found the working dir's package already uploaded (GETs answered 200)."""

    def __init__(self, status: int, body: bytes | None = None):
        import http.server
        import threading

        import ray

        version = json.dumps({"ray_version": ray.__version__, "version": "1"}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                self.send_response(200 if body else status)
                self.end_headers()
                self.wfile.write(version if body else b"Unauthorized" if status == 401 else b"Forbidden")

            def do_POST(self):  # noqa: N802
                self.send_response(status)
                self.end_headers()
                self.wfile.write(body or (b"Unauthorized" if status == 401 else b"Forbidden"))

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"http://127.0.0.1:{self.server.server_port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# A submitted job's run folder must be absolute (metarec_dist/runtime/jobs.py: check_job_storage).
_JOB_STORAGE = ["--set", "runtime.storage_path=/mnt/shared/metarec-runs"]


@pytest.mark.parametrize("status", [401, 403])
def test_submit_says_the_token_was_refused(status, capsys):
    api = _Refusing(status)
    try:
        err = assert_fails(
            capsys,
            ["submit", "--address", api.address, "--config", "configs/tiny.yaml", *_JOB_STORAGE],
            "token",
        )
    finally:
        api.close()
    assert "refused the token" in err and "cannot reach" not in err


def _server_traceback(message: str) -> bytes:
    """What Ray's dashboard answers a refused submission with: the traceback of the job agent's refusal
    inside the head's own (job_head.py: ``text=traceback.format_exc()``)."""
    import traceback

    try:
        try:
            raise ValueError(message)
        except ValueError:
            inner = traceback.format_exc()
        raise RuntimeError(f"Request failed with status code 400: {inner}.")
    except RuntimeError:
        return traceback.format_exc().encode()


@pytest.mark.parametrize(
    ("job_id", "message", "expected"),
    [
        (
            "metarec-1",
            "Job with submission_id metarec-1 already exists. Please use a different submission_id.",
            "error: job id metarec-1 already exists on the cluster; choose another --job-id",
        ),
        (
            None,
            "bad pip spec",
            "error: the Ray Jobs API at {address} refused the job: HTTP 500: ValueError: bad pip spec",
        ),
    ],
)
def test_a_refused_submission_is_one_line(job_id, message, expected, capsys):
    api = _Refusing(500, _server_traceback(message))
    args = ["submit", "--address", api.address, "--config", "configs/tiny.yaml", *_JOB_STORAGE]
    try:
        assert main(args + (["--job-id", job_id] if job_id else [])) == 2
    finally:
        api.close()
    # Ray's client logs its upload above the error line (under capsys also a "Logging error" to an earlier
    # test's closed stream, not ours): the error is the last line, and the server's traceback is nowhere.
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == expected.format(address=api.address) and "status code 500" not in err, err


@pytest.mark.parametrize("address", ["127.0.0.1:8265", "localhost:6379", "ray://127.0.0.1:10001"])
def test_submit_without_an_http_scheme_fails_at_once(address, capsys):
    import time

    start = time.monotonic()
    err = assert_fails(capsys, ["submit", "--address", address, "--config", "configs/tiny.yaml"], address)
    assert "http://127.0.0.1:8265" in err and time.monotonic() - start < 10  # not Ray's 35 s GCS wait


def test_a_damaged_export_config_is_named(run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    (out / EXPORT_CONFIG).write_text("{not json")
    assert_fails(capsys, ["recommend", "--checkpoint", str(out), "--items", "1"], str(out / EXPORT_CONFIG))


def test_damaged_export_weights_are_named(run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    weights, config = out / EXPORT_WEIGHTS, out / EXPORT_CONFIG
    recommend = ["recommend", "--checkpoint", str(out), "--items", "1"]
    meta = json.loads(config.read_text())
    config.write_text(json.dumps({**meta, "num_items": meta["num_items"] + 1}))  # another catalogue
    err = assert_fails(capsys, recommend, str(weights), "does not match", "export the checkpoint again")
    assert err.count("\n") == 1  # load_state_dict's list of mismatches, on the one line
    config.write_text(json.dumps(meta))
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    assert_fails(capsys, recommend, str(weights), "damaged")


@pytest.mark.parametrize("damage", [{"item_raw_ids": 5}, {"item_titles": {"x": "A title"}}])
def test_damaged_item_ids_or_titles_in_an_export_are_named(run, tmp_path, capsys, damage):
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    meta = json.loads((out / EXPORT_CONFIG).read_text())
    (out / EXPORT_CONFIG).write_text(json.dumps({**meta, **damage}))
    args = ["recommend", "--checkpoint", str(out), "--items", "1"]
    assert_fails(capsys, args, str(out), "item ids or titles", "export the checkpoint again")


def test_an_export_gets_the_users_usual_permissions_unlike_a_checkpoint(run, tmp_path):
    """An export is made to be shared (served by another account, copied): folder and files follow the umask,
    not the 0700 / 0600 of a temp folder and safetensors' writes; the checkpoint stays private."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = Path(tmp_path) / "export"
        assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == dict.fromkeys(EXPORT_FILES, 0o644)
    weights = next(find_checkpoint(run).rglob("*.safetensors"))
    assert stat.S_IMODE(weights.stat().st_mode) & 0o077 == 0


@pytest.mark.parametrize("where", ["folder", "under_a_file"])
def test_evaluate_json_that_cannot_be_written_fails_before_the_evaluation(
    run, tmp_path, capsys, monkeypatch, where
):
    from metarec_dist.eval import loading

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded for an output that cannot be written")

    monkeypatch.setattr(loading, "load_model", no_load)
    (tmp_path / "notes.txt").write_text("keep me")
    target, said = {
        "folder": (tmp_path, "is a folder"),
        "under_a_file": (tmp_path / "notes.txt" / "eval.json", "is a file, not a folder"),
    }[where]
    assert_fails(capsys, ["evaluate", "--checkpoint", str(run), "--json", str(target)], "--json", said)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_export_into_a_folder_that_is_not_writable_fails_before_reading_the_checkpoint(
    run, tmp_path, capsys, monkeypatch
):
    from metarec_dist import errors
    from metarec_dist.runtime import export as runtime_export

    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(errors, "_can_write", lambda folder: folder != locked)  # root may write anywhere

    def no_read(engine_dir):
        raise AssertionError("the checkpoint was consolidated for an output that cannot be written")

    monkeypatch.setattr(runtime_export, "consolidated_state_dict", no_read)
    out = locked / "exported"
    assert_fails(capsys, ["export", "--checkpoint", str(run), "--out", str(out)], f"{locked} is not writable")
    assert list(locked.iterdir()) == []
