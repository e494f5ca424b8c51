"""train.eval_adaptation: searched -- the periodic and final validations score every point of the adaptation
grid `metarec evaluate` searches, through the training engine in one pass per batch, and report each support
size at its best point; early stopping then keeps the weights best at the adaptation they are evaluated with
(the twenty-eighth session: the trained adaptation's best step lost 5-7% at K = 1 on MovieLens 100K).

The references are each grid point scored alone by the evaluation's own scorer (``AdaptingScorer`` at that
inner lr, the trained algorithm's parameters loaded), as `metarec evaluate` scores an exported model."""

from __future__ import annotations

import json

import pytest
import torch

from metarec_dist.config import with_overrides
from metarec_dist.eval.protocol import AdaptingScorer, Diverged, adaptation_grid
from metarec_dist.metrics.loggers import METRICS_FILE, JsonlLogger
from metarec_dist.runtime.context import LocalContext
from metarec_dist.train.trainer import VALID_KS, MetaTrainer

UNTRAINED = ["train.meta_steps=0", "meta.inner_lr=0.5", "train.eval_shots=[1,3]", "train.eval_users=12"]
SHOTS = (1, 3)


def trainer_for(tiny_cfg, synth_data, *settings: str) -> MetaTrainer:
    torch.manual_seed(0)
    return MetaTrainer(with_overrides(tiny_cfg, [*UNTRAINED, *settings]), LocalContext(None), synth_data)


def each_point_alone(trainer: MetaTrainer, users) -> dict[tuple[int, float], dict]:
    """Every grid point's per-user results, scored alone by the evaluation's scorer (diverged: left out)."""
    protocol = trainer.validation_protocol(list(SHOTS))
    state = trainer.algorithm.state_dict()
    out = {}
    for steps, lr in trainer.validation_points or []:
        scorer = AdaptingScorer(trainer.model, trainer.cfg.meta.algorithm, lr, state)
        try:
            out[steps, lr] = protocol.per_user(scorer, users, steps, ks=VALID_KS)
        except Diverged:
            continue
    return out


@pytest.mark.parametrize("algorithm", ["fomaml", "metasgd"])
def test_each_support_size_is_scored_at_its_best_grid_point(tiny_cfg, synth_data, algorithm):
    """Meta-SGD too: its learned rates (randomised here) scale with each candidate lr, as they do for an
    ``AdaptingScorer`` built at that lr."""
    torch.set_num_threads(1)
    trainer = trainer_for(
        tiny_cfg, synth_data, f"meta.algorithm={algorithm}", "train.eval_adaptation=searched"
    )
    if algorithm == "metasgd":
        with torch.no_grad():
            trainer.algorithm.inner_lr_log_scale.normal_(0.0, 0.5)
    meta = trainer.cfg.meta
    assert trainer.validation_points == adaptation_grid(meta.adaptation_steps, meta.inner_lr, finetune=False)
    got = trainer.validate()
    alone = each_point_alone(trainer, synth_data.valid[:12])
    assert len(alone) > 1
    plain = trainer_for(tiny_cfg, synth_data, f"meta.algorithm={algorithm}")
    if algorithm == "metasgd":
        plain.algorithm.load_state_dict(trainer.algorithm.state_dict())
    trained = plain.validate()  # the trained adaptation, as without the setting
    searched_higher = False
    for k in SHOTS:
        ndcg = {point: float(res[k]["ndcg@10"].mean()) for point, res in alone.items()}
        best = max(ndcg.values())
        first_best = next(point for point in trainer.validation_points if ndcg.get(point) == best)
        chosen = (int(got[f"val/adapt_steps@k{k}"]), got[f"val/adapt_lr@k{k}"])
        assert chosen == first_best  # ties: fewer steps, then the lower lr
        assert got[f"val/ndcg@10@k{k}"] == pytest.approx(best, abs=1e-9)
        assert got[f"val/recall@10@k{k}"] == pytest.approx(
            float(alone[chosen][k]["recall@10"].mean()), abs=1e-9
        )
        at_trained = ndcg[meta.adaptation_steps, meta.inner_lr]
        assert got[f"val/trained_ndcg@10@k{k}"] == pytest.approx(at_trained, abs=1e-9)
        assert trained[f"val/ndcg@10@k{k}"] == pytest.approx(at_trained, abs=1e-9)
        searched_higher |= best > at_trained + 1e-6
    assert searched_higher  # the search moved the criterion on this model: the setting decides something


def test_an_algorithm_that_does_not_adapt_validates_as_before(tiny_cfg, synth_data):
    """``none`` takes no inner step at test time without fine-tuning: its searched validation is its only
    point, step 0, and logs no choice."""
    trainer = trainer_for(tiny_cfg, synth_data, "meta.algorithm=none", "train.eval_adaptation=searched")
    assert trainer.validation_points is None
    plain = trainer_for(tiny_cfg, synth_data, "meta.algorithm=none")
    assert trainer.validate() == plain.validate()


def test_early_stopping_watches_the_searched_criterion(tiny_cfg, synth_data, tmp_path):
    """A short run validated at every step: each validation line in metrics.jsonl carries its choices, and
    early stopping's best criterion is the best mean of the searched NDCG@10 over the support sizes."""
    settings = [
        "train.meta_steps=4",
        "train.log_every=1",
        "train.eval_every=1",
        "train.early_stop_patience=4",
        "train.eval_adaptation=searched",
        "meta.algorithm=fomaml",
    ]
    cfg = with_overrides(tiny_cfg, [*UNTRAINED[1:], *settings])
    torch.manual_seed(0)
    logger = JsonlLogger(tmp_path / METRICS_FILE)
    out = MetaTrainer(cfg, LocalContext(None), synth_data, logger).fit()
    logger.close()
    lines = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    validated = {line["step"]: line for line in lines if "val/adapt_steps@k1" in line}
    assert sorted(validated)[:4] == [1, 2, 3, 4]
    criterion = {step: sum(line[f"val/ndcg@10@k{k}"] for k in SHOTS) / 2 for step, line in validated.items()}
    best_step = max(sorted(s for s in criterion if s <= 4), key=lambda s: (criterion[s], -s))
    assert out["early_stop/best_step"] == best_step
    assert out["early_stop/best_criterion"] == pytest.approx(criterion[best_step], abs=1e-9)


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        (["train.eval_adaptation=searched", "train.eval_steps=0"], "train.eval_steps fixes the validation"),
        (["train.eval_adaptation=best"], "train.eval_adaptation"),
    ],
)
def test_a_wrong_eval_adaptation_is_one_error_naming_the_setting(tiny_cfg, settings, said):
    with pytest.raises(ValueError, match=said):
        with_overrides(tiny_cfg, settings)


def test_recommend_and_serve_apply_what_the_final_validation_chose(trained, tmp_path):
    """A run validated at the searched adaptation is served at it: its final checkpoint and its plain export
    record the final validation's choice per support size, which recommend and serve apply without a record
    of their own (GET / says ``validated``); an export's own record (``--steps``) still wins."""
    from metarec_dist.cli import main
    from metarec_dist.eval.recommend import Recommender

    run = trained("meta.algorithm=fomaml", "train.eval_adaptation=searched")
    shots = sorted(k for k in run.cfg.eval.shots if k <= run.cfg.tasks.support_max)
    chosen = {k: (int(run.out[f"val/adapt_steps@k{k}"]), run.out[f"val/adapt_lr@k{k}"]) for k in shots}
    assert len(shots) > 1
    plain = Recommender.load(str(trained("meta.algorithm=fomaml").folder))
    assert plain.loaded.validated is None and plain.served_adaptation()["source"] == "trained"
    assert main(["export", "--checkpoint", str(run.folder), "--out", str(tmp_path / "e"), "--no-fuse"]) == 0
    for source in (run.folder, tmp_path / "e"):
        served = Recommender.load(str(source))
        for k in shots:
            assert served.setting(k) == chosen[k]
        assert served.setting(shots[0] - 1 if shots[0] > 1 else 0) == chosen[shots[0]]  # shorter: smallest K
        said = served.served_adaptation()
        assert said["source"] == "validated"
        assert said["per_shot"] == {str(k): list(chosen[k]) for k in shots}
    export = ["export", "--checkpoint", str(run.folder), "--out", str(tmp_path / "f"), "--no-fuse"]
    assert main([*export, "--steps", "2"]) == 0
    recorded = Recommender.load(str(tmp_path / "f"))
    assert recorded.setting(shots[-1]) == (2, run.cfg.meta.inner_lr)
    assert recorded.served_adaptation()["source"] == "export"
