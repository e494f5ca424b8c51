"""The fusion with co-occurrence counts in an exported model: ``metarec export --fuse`` saves the training
users' counts and the weight chosen as ``metarec evaluate --fuse`` chooses it, ``metarec recommend`` on the
export ranks by the fused scores (checked against the formula written out), and a damaged or half fused
export is a one-line error."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from metarec_dist import checkpoint as ckpt
from metarec_dist.cli import main
from metarec_dist.eval.loading import load_model, load_prepared
from metarec_dist.eval.protocol import COOC_RECENCY, FUSION_EPS, AdaptingScorer
from metarec_dist.eval.recommend import load_catalogue
from metarec_dist.metrics.cooccurrence import ItemCooccurrence
from metarec_dist.metrics.ranking import mask_seen
from metarec_dist.tasks.sampler import prefix_batch

SEQS = [np.array([1, 2, 3, 4]), np.array([2, 3, 5]), np.array([1, 3, 2, 6, 7])]


def test_counts_round_trip_through_their_state_dict():
    cooc = ItemCooccurrence(SEQS, 8, horizon=2, recency=0.3)
    again = ItemCooccurrence.from_state_dict(cooc.state_dict(), 8, 2, 0.3)
    support = torch.tensor([[0, 1, 3], [2, 5, 6]])
    assert torch.equal(again.weighted(support), cooc.weighted(support))
    assert torch.equal(again.scores(support), cooc.scores(support))
    with pytest.raises(ValueError, match="do not fit a catalogue of 9 items"):
        ItemCooccurrence.from_state_dict(cooc.state_dict(), 9, 2, 0.3)
    with pytest.raises(ValueError, match="lack 'data'"):
        partial = {k: v for k, v in cooc.state_dict().items() if k != "data"}
        ItemCooccurrence.from_state_dict(partial, 8, 2, 0.3)


def printed_items(out: str) -> list[str]:
    """The raw ids of ``metarec recommend``'s ranked lines ("  1.       12  (0.123)")."""
    return re.findall(r"^\s*\d+\.\s+(\S+)", out, flags=re.M)


def by_hand(loaded, history: list[int], weight: float, steps: int, lr: float, k: int) -> list[int]:
    """Top ``k`` model ids: the adapted model's log-probabilities + weight * log(recency-weighted,
    row-normalised counts + eps), counted here from the run's training users, the history masked."""
    cfg = loaded.cfg
    splits = load_prepared(cfg).user_splits()
    counts = ItemCooccurrence(splits.train, splits.num_items, cfg.eval.num_relevant, COOC_RECENCY)
    recent = np.asarray(history[-cfg.tasks.support_max :])
    batch = prefix_batch([recent], len(recent), cfg.tasks.support_max, loaded.model.bos_id)
    model = AdaptingScorer(loaded.model, loaded.algorithm, lr, loaded.algorithm_state).score(batch, steps)
    weights = COOC_RECENCY ** np.arange(len(recent) - 1, -1, -1)
    prior = sum(w * counts.weighted(torch.tensor([[i]]))[0] for w, i in zip(weights, recent, strict=True))
    fused = torch.log_softmax(model.float(), -1)[0] + weight * torch.log(prior.float() + FUSION_EPS)
    fused = mask_seen(fused[None], torch.tensor([[i - 1 for i in history]]))[0]
    return [int(i) + 1 for i in torch.topk(fused, k).indices]


def test_recommend_on_an_export_fused_at_a_fixed_weight_ranks_by_the_fused_scores(trained, tmp_path, capsys):
    run = trained()
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run.folder), "--out", str(out), "--fuse-weight", "0.5"]) == 0
    assert {p.name for p in out.iterdir()} == {*ckpt.EXPORT_FILES, ckpt.EXPORT_COOC}
    meta = json.loads((out / ckpt.EXPORT_CONFIG).read_text())
    info = meta["fusion"]
    assert info["weight"] == 0.5 and info["selected_on"] == "fixed"
    said = capsys.readouterr().out  # what was exported, said
    assert f"exported step {meta['step']} ({meta['num_items']} items) to {out}" in said
    assert "co-occurrence counts at weight 0.5 (fixed by --fuse-weight)" in said
    loaded = load_model(out)
    steps, lr = loaded.fusion.steps, loaded.fusion.inner_lr
    catalogue = load_catalogue(loaded)
    differs = 0
    for seq in run.data.test[:6]:
        history = [int(i) for i in seq[:3]]
        raw = ",".join(catalogue.raw_ids[i - 1] for i in history)
        capsys.readouterr()
        assert main(["recommend", "--checkpoint", str(out), "--items", raw, "--k", "5"]) == 0
        printed = capsys.readouterr().out
        step_s = "step" if steps == 1 else "steps"
        how = f"{steps} adaptation {step_s}, lr {lr}, fused with the co-occurrence counts at weight 0.5"
        assert how in printed
        fused = by_hand(loaded, history, 0.5, steps, lr, 5)
        assert printed_items(printed) == [catalogue.raw_ids[i - 1] for i in fused]
        assert main(["recommend", "--checkpoint", str(out), "--items", raw, "--k", "5", "--no-fuse"]) == 0
        plain = capsys.readouterr().out
        assert "fused" not in plain
        alone = by_hand(loaded, history, 0.0, loaded.cfg.meta.adaptation_steps, loaded.cfg.meta.inner_lr, 5)
        assert printed_items(plain) == [catalogue.raw_ids[i - 1] for i in alone]
        differs += fused != alone
    assert differs  # the counts change some ranking: the test could tell fused from plain


def test_export_chooses_the_weight_and_adaptation_as_evaluate_fuse_does(trained, tmp_path):
    run = trained()
    out, report = tmp_path / "export", tmp_path / "fused.json"
    assert main(["export", "--checkpoint", str(run.folder), "--out", str(out), "--fuse"]) == 0
    assert main(["evaluate", "--checkpoint", str(run.folder), "--fuse", "--json", str(report)]) == 0
    evaluated = json.loads(report.read_text())["methods"]["fomaml+cooc"]["info"]["adaptation"]
    info = json.loads((out / ckpt.EXPORT_CONFIG).read_text())["fusion"]
    assert info["selected_on"] == "valid" and info["weight"] == evaluated["fusion"]["weight"]
    assert info["val_ndcg@10"] == pytest.approx(evaluated["fusion"]["val_ndcg@10"], abs=1e-6)  # JSON rounds
    assert (info["steps"], info["inner_lr"]) == (evaluated["steps"], evaluated["inner_lr"])


def test_eval_fuse_in_the_config_is_the_default_of_export_evaluate_and_recommend(trained, tmp_path, capsys):
    run = trained("eval.fuse=true")
    fused, plain, report = tmp_path / "fused", tmp_path / "plain", tmp_path / "r.json"
    assert main(["export", "--checkpoint", str(run.folder), "--out", str(fused)]) == 0
    assert main(["export", "--checkpoint", str(run.folder), "--out", str(plain), "--no-fuse"]) == 0
    assert (fused / ckpt.EXPORT_COOC).is_file() and not (plain / ckpt.EXPORT_COOC).exists()
    assert main(["evaluate", "--checkpoint", str(run.folder), "--json", str(report)]) == 0
    assert "fomaml+cooc" in json.loads(report.read_text())["methods"]
    capsys.readouterr()
    assert main(["recommend", "--checkpoint", str(run.folder), "--items", "1,2", "--k", "3"]) == 0
    assert "only an export carries" in capsys.readouterr().err  # a checkpoint has no counts: said, not silent
    # A fused export is an export: --overwrite replaces it, and the plain one leaves no stale counts.
    again = ["export", "--checkpoint", str(run.folder), "--out", str(fused), "--no-fuse", "--overwrite"]
    assert main(again) == 0
    assert not (fused / ckpt.EXPORT_COOC).exists() and load_model(fused).fusion is None


def test_fusion_mistakes_and_damage_are_one_line_errors(trained, tmp_path, capsys):
    from test_safety import assert_fails

    run = trained().folder
    out = tmp_path / "export"
    assert_fails(capsys, ["export", "--checkpoint", str(run), "--out", str(out), "--fuse-weight", "-1"], "-1")
    args = ["export", "--checkpoint", str(run), "--out", str(out), "--no-fuse", "--fuse-weight", "1"]
    assert_fails(capsys, args, "--no-fuse")
    assert not out.exists()  # nothing left behind by a failed export
    assert main(["export", "--checkpoint", str(run), "--out", str(out), "--fuse-weight", "1"]) == 0
    (out / ckpt.EXPORT_COOC).write_bytes(b"not safetensors")
    recommend = ["recommend", "--checkpoint", str(out), "--items", "1"]
    assert_fails(capsys, recommend, ckpt.EXPORT_COOC, "damaged")
    (out / ckpt.EXPORT_COOC).unlink()
    assert_fails(capsys, recommend, ckpt.EXPORT_COOC, "export the checkpoint again")


@pytest.mark.parametrize("weight", ["nan", "inf", "1e300"])
def test_a_fuse_weight_that_makes_the_scores_nan_or_infinite_is_refused(trained, tmp_path, capsys, weight):
    from test_safety import assert_fails

    out = tmp_path / "export"
    args = ["export", "--checkpoint", str(trained().folder), "--out", str(out), f"--fuse-weight={weight}"]
    assert_fails(capsys, args, "--fuse-weight must be a number from 0")
    assert not out.exists()


@pytest.fixture
def fused_export(trained, tmp_path):
    out = tmp_path / "fused"
    args = ["export", "--checkpoint", str(trained().folder), "--out", str(out), "--fuse-weight", "1"]
    assert main(args) == 0
    return out


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"fusion": [1, 2]}, "'fusion' is a list"),
        ({"weight": -1}, "got -1"),
        ({"weight": float("nan")}, "got nan"),
        ({"steps": -3}, "must be >= 0"),
        ({"per_shot": [[1, 0.1]]}, "'per_shot' is a list"),
        ({"per_shot": {"1": [-1, 0.1]}}, "must be >= 0"),
        ({"recency": float("nan")}, "recency"),
        ({"horizon": 0}, "horizon"),
    ],
)
def test_a_damaged_fusion_block_is_a_user_error_naming_the_files(fused_export, change, said):
    from metarec_dist.errors import UserError
    from metarec_dist.eval.fusion import load_fusion

    meta = json.loads((fused_export / ckpt.EXPORT_CONFIG).read_text())
    meta.update(change) if "fusion" in change else meta["fusion"].update(change)
    with pytest.raises(UserError, match=ckpt.EXPORT_CONFIG) as err:
        load_fusion(fused_export, meta)
    assert said in str(err.value) and "export the checkpoint again" in str(err.value)


def test_counts_of_the_wrong_shape_are_a_damaged_export(fused_export):
    from safetensors.torch import load_file, save_file

    from metarec_dist.errors import UserError
    from metarec_dist.eval.fusion import load_fusion

    state = load_file(str(fused_export / ckpt.EXPORT_COOC))
    state["data"] = state["data"][:, None].contiguous()
    save_file(state, str(fused_export / ckpt.EXPORT_COOC))
    meta = json.loads((fused_export / ckpt.EXPORT_CONFIG).read_text())
    with pytest.raises(UserError, match="not one-dimensional"):
        load_fusion(fused_export, meta)


def test_a_run_without_validation_users_says_what_to_pass_instead(trained, tmp_path, capsys):
    from test_safety import assert_fails

    run = str(trained("data.valid_frac=0").folder)
    export = ["export", "--checkpoint", run, "--out", str(tmp_path / "export")]
    assert_fails(capsys, [*export, "--fuse"], "no validation users", "--no-fuse")
    assert main([*export, "--no-fuse"]) == 0
    assert_fails(capsys, ["evaluate", "--checkpoint", run], "no validation users", "--steps")
    fixed = ["evaluate", "--checkpoint", run, "--steps", "1", "--inner-lr", "0.1"]
    assert_fails(capsys, [*fixed, "--fuse"], "no validation users", "--no-fuse")
    assert main(fixed) == 0


def test_counts_with_float_offsets_are_a_damaged_export(fused_export):
    from safetensors.torch import load_file, save_file

    from metarec_dist.errors import UserError
    from metarec_dist.eval.fusion import load_fusion

    state = load_file(str(fused_export / ckpt.EXPORT_COOC))
    state["indptr"] = state["indptr"].double() + 0.5  # would be truncated to other rows, silently
    save_file(state, str(fused_export / ckpt.EXPORT_COOC))
    meta = json.loads((fused_export / ckpt.EXPORT_CONFIG).read_text())
    with pytest.raises(UserError, match="not integer arrays"):
        load_fusion(fused_export, meta)
