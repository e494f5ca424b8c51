"""``metarec evaluate --device``: where the model adapts and scores. No GPU here: ``cuda`` is refused in one
line, ``auto`` is the CPU, the CPU numbers are the ones of the default, and a GPU device reaches every
protocol (torch.cuda patched to say there is one; the protocol stopped before it touches the device). The
``meta`` device stands in for a GPU where placement can be checked without computing on it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gpu_fixtures import NO_GPU

from metarec_dist.cli import main
from metarec_dist.config import load_config
from metarec_dist.errors import UserError
from metarec_dist.eval.device import check_workers, resolve_device
from metarec_dist.eval.distributed import InProcess
from metarec_dist.eval.loading import LoadedModel
from metarec_dist.eval.protocol import ColdStartProtocol
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.tasks.types import MetaBatch


def test_resolve_device_here():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")  # no GPU on this machine
    assert resolve_device(" CPU ") == torch.device("cpu")
    for wrong in ("gpu", "meta", "cuda:x", "", "mps"):
        with pytest.raises(UserError, match="expected one of auto, cpu, cuda, cuda:N"):
            resolve_device(wrong)
    with pytest.raises(UserError, match=r"--device cuda:0: no CUDA device is visible"):
        resolve_device("cuda:0")


def test_resolve_device_with_a_gpu(one_gpu):
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)  # with its index: comparable with cuda:0
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(UserError, match=r"--device cuda:2: torch sees 1 CUDA device\(s\), cuda:0 to cuda:0"):
        resolve_device("cuda:2")
    with pytest.raises(UserError, match="no GPU"):
        check_workers(torch.device("cuda", 0), 2)
    check_workers(torch.device("cpu"), 2)  # the actors are CPU ones: fine
    check_workers(torch.device("cuda", 0), 1)


def test_cuda_without_a_gpu_is_one_line_before_anything_is_read(capsys, tmp_path):
    """Refused before the checkpoint is even looked at (this one does not exist)."""
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nothing"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == NO_GPU and "Traceback" not in err


def test_cuda_with_workers_is_refused_before_ray_starts(one_gpu, capsys, tmp_path, monkeypatch):
    from metarec_dist.eval import distributed

    monkeypatch.setattr(distributed, "runner_for", lambda n: pytest.fail("Ray was started"))
    args = ["evaluate", "--checkpoint", str(tmp_path), "--device", "cuda", "--workers", "2"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --workers 2: the evaluation actors run on the CPU (one CPU each, no GPU)")
    assert "cuda:0" in err and "\n" not in err


@pytest.fixture(scope="module")
def runs(trained, tmp_path_factory):
    from test_new_items import new_items_run, write_movies

    movies = write_movies(tmp_path_factory.mktemp("data") / "movies")
    return {
        "a": trained().folder,
        "none": trained("meta.algorithm=none").folder,
        "loo": trained(
            "data.protocol=loo",
            "meta.algorithm=sasrec",
            "data.synthetic_users=60",
            "tasks.support_max=10",
            "tasks.query_size=5",
        ).folder,
        "new": trained(*new_items_run(movies)).folder,
    }


@pytest.mark.parametrize(
    ("run", "extra", "kind"),
    [
        ("a", ["--fuse"], "ColdStartProtocol"),  # the adaptation search, then the fusion's
        ("none", ["--finetune", "--baseline", "@a"], "ColdStartProtocol"),
        ("loo", [], "LeaveOneOutProtocol"),
        ("new", ["--protocol", "mixed", "--steps", "0"], "MixedProtocol"),
        ("new", ["--protocol", "new_items", "--steps", "1"], "NewItemsProtocol"),
    ],
)
def test_the_device_reaches_every_protocol(runs, run, extra, kind, one_gpu, monkeypatch, capsys):
    """``--device cuda`` reaches the protocol that places the model (and the ``--baseline``'s): stopped
    where the model would move to the GPU, which this machine lacks."""
    from metarec_dist.eval import cli

    built = []
    real = cli.model_protocol

    def spy(*args, **kwargs):
        protocol, source = real(*args, **kwargs)
        built.append(protocol.device)
        return protocol, source

    def stop(self, loaded, inner_lr):
        raise UserError(f"placed on {self.device} by {type(self).__name__}")

    monkeypatch.setattr(cli, "model_protocol", spy)
    monkeypatch.setattr(ColdStartProtocol, "scorer", stop)
    extra = [str(runs[x[1:]]) if x.startswith("@") else x for x in extra]  # @a: run a's folder
    assert main(["evaluate", "--checkpoint", str(runs[run]), "--device", "cuda", *extra]) == 2
    assert capsys.readouterr().err.strip().endswith(f"placed on cuda:0 by {kind}")
    assert built and all(d == torch.device("cuda", 0) for d in built)
    assert len(built) == 1 + ("--baseline" in extra)


def _doc(tmp_path: Path, name: str, *args: str) -> str:
    out = tmp_path / f"{name}.json"
    assert main(["evaluate", *args, "--json", str(out)]) == 0
    return out.read_text()


def test_cpu_and_auto_give_the_default_numbers(runs, tmp_path):
    """Byte for byte: the adaptation search, the fusion weight's and every metric of every method."""
    args = ["--checkpoint", str(runs["a"]), "--fuse", "--tune-users", "all"]
    default = _doc(tmp_path, "default", *args)
    assert _doc(tmp_path, "cpu", *args, "--device", "cpu") == default
    assert _doc(tmp_path, "auto", *args, "--device", "auto") == default
    assert "device" not in json.loads(default)  # recorded only off the CPU


def _setup(tmp: Path) -> tuple[LoadedModel, ColdStartProtocol]:
    cfg = load_config("configs/tiny.yaml", ["data.synthetic_users=60", "data.cache=false"])
    from metarec_dist.data import prepare_data

    splits = prepare_data(cfg.data).user_splits()
    model = SeqRecommender(cfg.model, splits.num_items, seed=0).eval()
    loaded = LoadedModel(model=model, cfg=cfg, meta={"num_items": splits.num_items}, source=tmp)
    return loaded, ColdStartProtocol(splits, [1, 3], cfg.tasks.support_max, cfg.eval)


class _Spy:
    """Scores from the batch's item ids, on the CPU, noting the device each batch came on."""

    def __init__(self, num_items: int) -> None:
        self.num_items, self.devices = num_items, set()

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        self.devices.add(batch.item_ids.device.type)
        g = torch.Generator().manual_seed(batch.num_tasks)
        return torch.rand(batch.num_tasks, self.num_items, generator=g)


def test_the_protocol_places_the_batches_and_the_model_on_its_device(tmp_path):
    loaded, protocol = _setup(tmp_path)
    on_meta = dataclasses.replace(protocol, device="meta")
    valid = protocol.splits.valid
    cpu_spy, meta_spy = _Spy(protocol.splits.num_items), _Spy(protocol.splits.num_items)
    want = protocol.per_user(cpu_spy, valid, runner=InProcess())
    got = on_meta.per_user(meta_spy, valid, runner=InProcess())
    assert cpu_spy.devices == {"cpu"} and meta_spy.devices == {"meta"}
    for k in want:  # the ranking runs where the scores are; the metrics come back as numpy arrays
        for name in want[k]:
            assert isinstance(got[k][name], np.ndarray)
            np.testing.assert_array_equal(got[k][name], want[k][name])
    # The baselines score on the CPU whatever the device: same numbers.
    base, base_meta = protocol.popularity("valid"), on_meta.popularity("valid")
    np.testing.assert_array_equal(base_meta.per_user[3]["ndcg@10"], base.per_user[3]["ndcg@10"])
    # The model goes where the protocol scores, its algorithm's parameters with it.
    scorer = on_meta.scorer(loaded, 0.5)
    assert loaded.model.fast_init.device.type == "meta"
    assert {p.device.type for p in scorer.learner.parameters()} == {"meta"}


def test_a_gpu_protocol_refuses_cpu_actors(tmp_path):
    """``eval.workers`` > 1 with a GPU device (a script's protocol, not through the CLI's checks)."""
    _, protocol = _setup(tmp_path)
    workers = dataclasses.replace(protocol.eval_cfg, workers=2)
    on_meta = dataclasses.replace(protocol, device="meta", eval_cfg=workers)
    with pytest.raises(UserError, match=r"^eval.workers 2: .* cannot score on meta; set eval.workers=1"):
        on_meta.per_user(_Spy(protocol.splits.num_items), protocol.splits.valid)


def test_a_runs_eval_workers_gives_way_on_a_gpu(tmp_path, capsys):
    from types import SimpleNamespace

    from metarec_dist.eval.cli import gpu_workers

    cfg = load_config("configs/tiny.yaml", ["eval.workers=3"])
    loaded = SimpleNamespace(cfg=cfg, source=tmp_path)
    assert gpu_workers(loaded, None, torch.device("cuda", 0)) == 1
    assert "eval.workers=3 would score on Ray actors, which have no GPU" in capsys.readouterr().err
    assert gpu_workers(loaded, None, torch.device("cpu")) is None  # the run's actors, as before
    assert gpu_workers(loaded, 2, torch.device("cpu")) == 2
