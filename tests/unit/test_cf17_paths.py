"""``runtime.deepspeed_override`` is found like ``train.pretrain`` (next to the config file, then in the
current folder), and ``metarec submit`` gives the job a path that exists in Ray's copy of the working dir."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from metarec_dist.cli import main
from metarec_dist.config import load_config

ROOT = Path(__file__).resolve().parents[2]
ZERO3 = ROOT / "configs" / "deepspeed" / "zero3-offload.json"
ADDRESS = "http://127.0.0.1:8265"


def _config_with_override(folder: Path, override: str) -> Path:
    (folder / "ds").mkdir(parents=True, exist_ok=True)
    (folder / "ds" / "z.json").write_text(ZERO3.read_text())
    path = folder / "run.yaml"
    path.write_text(f"runtime:\n  deepspeed: true\n  zero_stage: 3\n  deepspeed_override: {override}\n")
    return path


def test_an_override_is_found_next_to_the_config_then_in_the_current_folder(tmp_path, monkeypatch):
    conf = _config_with_override(tmp_path / "conf", "ds/z.json")
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert load_config(conf).runtime.deepspeed_override == str(tmp_path / "conf" / "ds" / "z.json")
    monkeypatch.chdir(tmp_path / "conf")
    (tmp_path / "conf" / "ds").rename(tmp_path / "conf" / "elsewhere")
    conf.write_text(conf.read_text().replace("ds/z.json", "elsewhere/z.json"))
    (tmp_path / "conf" / "sub").mkdir()
    moved = tmp_path / "conf" / "sub" / "run.yaml"
    conf.rename(moved)
    # not next to sub/run.yaml: the current folder's
    assert load_config(moved).runtime.deepspeed_override == str(tmp_path / "conf" / "elsewhere" / "z.json")


def test_a_missing_override_names_both_places_and_the_file_or_set_that_gave_it(tmp_path, monkeypatch, capsys):
    conf = _config_with_override(tmp_path / "conf", "nope.json")
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert main(["print-config", "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: runtime.deepspeed_override nope.json: file not found next to {conf} "
        f"({tmp_path / 'conf' / 'nope.json'}) nor in the current folder ({tmp_path / 'here' / 'nope.json'}); "
        "give a JSON file of DeepSpeed settings, e.g. configs/deepspeed/zero3-offload.json\n"
    )
    assert main(["print-config", "--config", str(conf), "--set", "runtime.deepspeed_override=gone.json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set runtime.deepspeed_override=gone.json: file not found next to "), err
    assert err.count("\n") == 1


class _Client:
    submitted: list[dict] = []

    def __init__(self, address: str):
        pass

    def submit_job(self, **job):
        _Client.submitted.append(job)
        return "raysubmit_1"


@pytest.fixture
def client(monkeypatch):
    import ray.job_submission

    _Client.submitted = []
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", _Client)
    return _Client


def _job_override(entrypoint: str) -> str:
    """The last --set runtime.deepspeed_override value of the job's command, as the job's YAML reads it."""
    import yaml

    words = shlex.split(entrypoint)
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    last = [s for s in sets if s.startswith("runtime.deepspeed_override=")][-1]
    return yaml.safe_load(last.split("=", 1)[1])


@pytest.mark.parametrize("given", ["ds/z.json", "ABSOLUTE"])
def test_submit_gives_the_job_a_path_inside_its_copy_of_the_working_dir(tmp_path, monkeypatch, client, given):
    """The config names the override beside itself (or by an absolute path on this machine): the job, run
    from a copy of the working dir elsewhere and from another current folder, still finds the file."""
    root = tmp_path / "repo"
    conf = _config_with_override(root / "configs", "ds/z.json")
    if given == "ABSOLUTE":
        conf.write_text(conf.read_text().replace("ds/z.json", str(root / "configs" / "ds" / "z.json")))
    monkeypatch.chdir(tmp_path)
    argv = ["submit", "--address", ADDRESS, "--config", str(conf), "--working-dir", str(root)]
    assert main([*argv, "--set", "runtime.storage_path=/mnt/shared/runs"]) == 0
    job = client.submitted[0]
    given_to_job = _job_override(job["entrypoint"])
    assert not Path(given_to_job).is_absolute()
    # Ray unpacks the working dir somewhere else and runs the entrypoint there.
    copy = tmp_path / "cluster" / "working_dir_files" / "pkg"
    copy.parent.mkdir(parents=True)
    (root).rename(copy)
    monkeypatch.chdir(copy)
    words = shlex.split(job["entrypoint"])
    config = words[words.index("--config") + 1]
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    cfg = load_config(config, sets)
    assert cfg.runtime.deepspeed_override == str(copy / "configs" / "ds" / "z.json")
    assert json.loads(Path(cfg.runtime.deepspeed_override).read_text())["zero_optimization"]


def test_submit_keeps_a_cluster_only_absolute_override_and_says_so(tmp_path, monkeypatch, client, capsys):
    monkeypatch.chdir(ROOT)
    on_cluster = "/opt/metarec/configs/deepspeed/zero3-offload.json"
    sets = ["runtime.storage_path=/mnt/shared/runs", "runtime.zero_stage=3"]
    sets.append(f"runtime.deepspeed_override={on_cluster}")
    argv = ["submit", "--address", ADDRESS, "--config", "configs/tiny.yaml"]
    assert main([*argv, *[a for s in sets for a in ("--set", s)]]) == 0
    assert _job_override(client.submitted[0]["entrypoint"]) == on_cluster
    assert "the job reads it at that path on the cluster" in capsys.readouterr().err


def test_submit_reads_a_broken_override_before_submitting(tmp_path, monkeypatch, client, capsys):
    root = tmp_path / "repo"
    conf = _config_with_override(root, "ds/z.json")
    (root / "ds" / "z.json").write_text("[1]")
    argv = ["submit", "--address", ADDRESS, "--config", str(conf), "--working-dir", str(root)]
    assert main([*argv, "--set", "runtime.storage_path=/mnt/shared/runs"]) == 2
    assert "not a JSON object of DeepSpeed settings" in capsys.readouterr().err
    assert client.submitted == []


@pytest.mark.parametrize("value", ["local", "rey", "{backend: local}"])
def test_submit_refuses_a_set_backend_other_than_ray(monkeypatch, client, capsys, value):
    monkeypatch.chdir(ROOT)
    key = "runtime" if value.startswith("{") else "runtime.backend"
    argv = ["submit", "--address", ADDRESS, "--config", "configs/tiny.yaml"]
    sets = ["--set", "runtime.storage_path=/mnt/shared/runs", "--set", f"{key}={value}"]
    assert main([*argv, *sets]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --set {key}={value}: metarec submit always runs the job on Ray"), err
    assert client.submitted == []
    # ray itself, given or not, is what the job runs
    for ray in ("ray", "'ray'", "{backend: ray, storage_path: /mnt/shared/runs}"):
        given = "runtime" if ray.startswith("{") else "runtime.backend"
        assert main([*argv, *sets[:2], "--set", f"{given}={ray}"]) == 0, capsys.readouterr().err


def test_submit_refuses_an_override_in_a_folder_that_is_not_uploaded(tmp_path, client, capsys):
    root = tmp_path / "repo"
    conf = _config_with_override(root / "configs", "../runs/z.json")
    (root / "runs").mkdir()
    (root / "runs" / "z.json").write_text(ZERO3.read_text())
    argv = ["submit", "--address", ADDRESS, "--config", str(conf), "--working-dir", str(root)]
    assert main([*argv, "--set", "runtime.storage_path=/mnt/shared/runs"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: runtime.deepspeed_override {root / 'runs' / 'z.json'}: under runs/"), err
    assert client.submitted == []
