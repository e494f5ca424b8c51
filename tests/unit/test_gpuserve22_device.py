"""``metarec export --device`` (where ``--fuse`` / ``--choose-adaptation`` score the validation users) and
``metarec recommend --device`` (where the model adapts on the history and scores). No GPU here: ``cuda`` is
refused in one line before anything is read, ``cpu`` / ``auto`` give the default's files and rankings byte
for byte, and a GPU device reaches the code that places the model (torch.cuda patched to say there is one;
stopped where the model would move). The ``meta`` device stands in for a GPU where placement is checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gpu_fixtures import NO_GPU

from metarec_dist.cli import main
from metarec_dist.errors import UserError
from metarec_dist.eval.protocol import AdaptingScorer, ColdStartProtocol
from metarec_dist.eval.recommend import Recommender


@pytest.mark.parametrize(
    "command",
    [
        ["export", "--out", "{tmp}/out", "--fuse"],
        ["export", "--out", "{tmp}/out", "--choose-adaptation"],
        ["recommend", "--items", "1,2"],
    ],
)
def test_cuda_without_a_gpu_is_the_one_line_evaluate_says_before_anything_is_read(command, tmp_path, capsys):
    """The checkpoint does not exist: refused on the device first, as ``metarec evaluate`` refuses it."""
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    assert main([*args, "--checkpoint", str(tmp_path / "nothing"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == NO_GPU and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["export", "recommend"])
def test_a_wrong_device_is_one_line(command, tmp_path, capsys):
    args = [command, "--checkpoint", str(tmp_path), "--device", "gpu"]
    args += ["--out", str(tmp_path / "out")] if command == "export" else ["--items", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --device 'gpu': expected one of auto, cpu, cuda, cuda:N"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("how", [["--fuse"], ["--no-fuse", "--choose-adaptation"]])
def test_export_on_cpu_and_auto_writes_the_defaults_files(trained, tmp_path, how):
    """Byte for byte: the weights, the counts and the choices recorded (validation scores included)."""
    run = trained()
    outs = {}
    for name, extra in (("default", []), ("cpu", ["--device", "cpu"]), ("auto", ["--device", "auto"])):
        out = tmp_path / name
        assert main(["export", "--checkpoint", str(run.folder), "--out", str(out), *how, *extra]) == 0
        outs[name] = _files(out)
    assert outs["cpu"] == outs["default"] and outs["auto"] == outs["default"]
    assert ("cooccurrence.safetensors" in outs["default"]) == ("--fuse" in how)


@pytest.mark.parametrize("how", [["--fuse"], ["--no-fuse", "--choose-adaptation"]])
def test_export_device_reaches_the_validation_protocol(trained, tmp_path, one_gpu, monkeypatch, capsys, how):
    """``--device cuda``: the protocol that chooses on validation users places the model on cuda:0 (stopped
    there: this machine has no GPU), and nothing is exported."""

    def stop(self, loaded, inner_lr):
        raise UserError(f"placed on {self.device} by {type(self).__name__}")

    monkeypatch.setattr(ColdStartProtocol, "scorer", stop)
    out = tmp_path / "out"
    args = ["export", "--checkpoint", str(trained().folder), "--out", str(out), *how, "--device", "cuda"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == "error: placed on cuda:0 by ColdStartProtocol"
    assert not out.exists()


def test_export_device_unused_is_said(trained, tmp_path, one_gpu, capsys):
    """A plain export scores nothing: the device it was given is said to be unused."""
    out = tmp_path / "out"
    args = [
        "export",
        "--checkpoint",
        str(trained().folder),
        "--out",
        str(out),
        "--no-fuse",
        "--device",
        "cuda",
    ]
    assert main(args) == 0
    assert "note: --device cuda:0: this export scores no validation users" in capsys.readouterr().err


def _recommend(capsys, checkpoint: Path, *extra: str) -> str:
    capsys.readouterr()
    args = ["recommend", "--checkpoint", str(checkpoint), "--items", "1,2,3", "--k", "5", *extra]
    assert main(args) == 0
    return capsys.readouterr().out


def test_recommend_on_cpu_and_auto_is_the_defaults_ranking(trained, tmp_path, capsys):
    run = trained()
    assert main(["export", "--checkpoint", str(run.folder), "--out", str(tmp_path / "fused"), "--fuse"]) == 0
    for checkpoint in (run.folder, tmp_path / "fused"):
        default = _recommend(capsys, checkpoint)
        assert "top 5 after 3 items" in default and " on " not in default.splitlines()[0]
        assert _recommend(capsys, checkpoint, "--device", "cpu") == default
        assert _recommend(capsys, checkpoint, "--device", "auto") == default


def test_recommend_device_reaches_the_model(trained, one_gpu, monkeypatch, capsys):
    """``--device cuda`` moves the loaded model to cuda:0 (stopped there: no GPU here)."""

    def stop(self, device):
        raise UserError(f"moved to {device}")

    monkeypatch.setattr(Recommender, "to", stop)
    args = ["recommend", "--checkpoint", str(trained().folder), "--items", "1,2", "--device", "cuda"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == "error: moved to cuda:0"


def test_a_recommender_adapts_and_scores_where_its_model_is(trained, monkeypatch):
    """On ``meta`` (a GPU's stand-in): the model moves, and the history's batch reaches the scorer there."""
    recommender = Recommender.load(str(trained().folder), device="meta")
    assert recommender.device == torch.device("meta")
    assert {p.device.type for p in recommender.loaded.model.parameters()} == {"meta"}
    seen = []

    def score(self, batch, steps):
        seen.append((batch.item_ids.device.type, {p.device.type for p in self.learner.parameters()}))
        raise UserError("scored")

    monkeypatch.setattr(AdaptingScorer, "score", score)
    with pytest.raises(UserError, match="scored"):
        recommender(recommender.catalogue.raw_ids[:3], 5)
    assert seen == [("meta", {"meta"})]


def test_recommend_says_where_it_scored_off_the_cpu(trained, capsys):
    """The header names the device off the CPU (the CPU's header is unchanged: tested above)."""
    from metarec_dist.eval.cli import _show_recommendations
    from metarec_dist.eval.recommend import Recommendation

    recommender = Recommender.load(str(trained().folder), device="meta")
    raw = recommender.catalogue.raw_ids[:2]
    recs = [Recommendation(1, 3, recommender.catalogue.raw_ids[2], None, 0.5)]
    _show_recommendations(recommender, raw, None, recs, (3, 0.5))
    header = capsys.readouterr().out.splitlines()[0]
    assert header == "top 1 after 2 items (fomaml, 3 adaptation steps, lr 0.5, on meta):"
