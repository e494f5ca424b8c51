"""The reproduction script and the GPU sweep's ``evaluate_exports.py`` evaluate where their runs trained
(``runtime.use_gpu=true``: the GPU) or where ``--device`` says; no GPU here, so a GPU is refused before
anything trains, and where torch is told it sees one (patched) the device reaches training and the protocol,
which is stopped before it touches the device."""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trained import SMALL, SYNTHETIC, TINY

from metarec_dist.config import load_config
from metarec_dist.errors import UserError
from metarec_dist.eval import reproduce
from metarec_dist.eval.protocol import ColdStartProtocol

ROOT = Path(__file__).resolve().parents[2]
EXPORTS = ROOT / "docs" / "results" / "amazon-sports-screens" / "gpu19" / "evaluate_exports.py"


def _cfg(*settings: str):
    return load_config(TINY, list(settings))


def test_run_devices_without_a_gpu():
    cpu = torch.device("cpu")
    assert reproduce.training_device(_cfg()) is None
    assert reproduce.evaluation_device(_cfg(), None) == cpu
    assert reproduce.evaluation_device(_cfg(), "auto") == cpu
    with pytest.raises(UserError, match="--device cuda: no CUDA device is visible"):
        reproduce.evaluation_device(_cfg(), "cuda")


def test_run_devices_with_a_gpu(one_gpu):
    gpu = torch.device("cuda", 0)
    assert reproduce.training_device(_cfg("runtime.use_gpu=true")) == "cuda:0"  # as `metarec train`
    assert reproduce.evaluation_device(_cfg("runtime.use_gpu=true"), None) == gpu  # where it trained
    assert reproduce.evaluation_device(_cfg("runtime.use_gpu=true"), "cpu") == torch.device("cpu")
    assert reproduce.evaluation_device(_cfg(), "cuda") == gpu  # trained on the CPU, evaluated on the GPU
    assert reproduce.evaluation_device(_cfg(), None) == torch.device("cpu")


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--set", "runtime.use_gpu=true"], "runtime.use_gpu=true: torch "),
        (
            ["--device", "cuda"],
            "--device cuda: no CUDA device is visible (torch.cuda.is_available() is False)",
        ),
        (["--device", "tpu"], "--device 'tpu': expected one of auto, cpu, cuda, cuda:N"),
    ],
)
def test_no_gpu_is_one_line_before_anything_trains(tmp_path, capsys, extra, said):
    out = tmp_path / "out"
    assert reproduce.main(["--method", f"a={TINY}", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {said}") and err.count("\n") == 1, err
    assert not out.exists()


def test_gpu_runs_with_cpu_actors_are_refused_before_anything_trains(one_gpu, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--method", f"a={TINY}", "--out", str(out), "--set", "runtime.use_gpu=true"]
    assert reproduce.main([*args, "--set", "eval.workers=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: eval.workers 2: the evaluation actors run on the CPU") and "cuda:0" in err
    assert "--set eval.workers=1" in err and not out.exists()


def test_a_gpu_run_trains_and_is_evaluated_on_its_gpu(one_gpu, trained, tmp_path, monkeypatch):
    """``runtime.use_gpu=true``: the run trains on cuda:0 (it trained on the CPU whatever the config said)
    and its protocol scores there; ``--device cpu`` evaluates it on the CPU."""
    from metarec_dist.runtime import context

    run = trained()
    trained_on = []

    class Context:  # what train_one gives the trainer; stopped there
        def __init__(self, folder, keep, device=None):
            trained_on.append(device)
            raise UserError("training stopped")

    def stop(self, loaded, inner_lr):
        raise UserError(f"placed on {self.device}")

    monkeypatch.setattr(context, "LocalContext", Context)
    settings = (*SMALL, *SYNTHETIC, "runtime.use_gpu=true", "data.cache=false")
    cfg = reproduce.spec_config(reproduce.RunSpec("a", TINY, 0, False, settings), tmp_path / "out")
    with pytest.raises(UserError, match="training stopped"):
        reproduce.train_one(cfg, tmp_path / "out" / "runs" / "a-s0")
    assert trained_on == ["cuda:0"]
    monkeypatch.setattr(reproduce, "train_one", lambda cfg, run_dir, keep_first_stage: str(run.checkpoint))
    monkeypatch.setattr(ColdStartProtocol, "scorer", stop)
    spec = reproduce.RunSpec("a", TINY, 0, False, settings)
    with pytest.raises(UserError, match=r"^placed on cuda:0$"):
        reproduce.train_and_evaluate(spec, tmp_path / "out", [1, 3])
    on_cpu = reproduce.RunSpec("a", TINY, 0, False, settings, device="cpu")
    with pytest.raises(UserError, match=r"^placed on cpu$"):
        reproduce.train_and_evaluate(on_cpu, tmp_path / "out", [1, 3])


def test_reproduce_passes_device_to_every_spec():
    args = reproduce.build_parser().parse_args(
        ["--method", f"a={TINY}", "--device", "auto", "--seeds", "0,1"]
    )
    specs = reproduce.run_specs(args, [("a", TINY)], [0, 1])
    assert [s.device for s in specs] == ["auto", "auto"]


def test_evaluate_exports_refuses_cuda_without_a_gpu_in_one_line(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(EXPORTS),
            "--model",
            f"x={tmp_path}/x",
            "--out",
            str(tmp_path),
            "--device",
            "cuda",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert done.returncode == 2
    said = "--device cuda: no CUDA device is visible (torch.cuda.is_available() is False); use --device cpu"
    assert done.stderr.strip().splitlines() == [f"error: {said}"]


def test_evaluate_exports_on_auto_is_the_cpu_numbers(trained, tmp_path):
    """Here ``auto`` is the CPU: the per-user results and what they record are the default's."""
    from metarec_dist.cli import main

    assert main(["export", "--checkpoint", str(trained().folder), "--out", str(tmp_path / "m-s0")]) == 0
    spec = importlib.util.spec_from_file_location("evaluate_exports", EXPORTS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.evaluate("m", tmp_path / "m-s0", 0, tmp_path / "default", False, True, steps=1)
    module.evaluate(
        "m", tmp_path / "m-s0", 0, tmp_path / "auto", False, True, 1, module.resolve_device("auto")
    )
    default, auto = ((tmp_path / d / "per_user" / "m-s0.pkl").read_bytes() for d in ("default", "auto"))
    assert auto == default
    assert "device" not in pickle.loads(default)["m"][1]
