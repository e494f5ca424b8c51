"""The evaluation harness on hand-computed cases: support masking, the relevant set, no leakage of query
items or test users, popularity from training users only, seed averaging and paired differences."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scorers import TableScorer

from metarec_dist.config import EvalConfig, load_config
from metarec_dist.data.split import UserSplits
from metarec_dist.eval.protocol import ColdStartProtocol, PopularityScorer, adaptation_grid
from metarec_dist.eval.stats import MethodResult, bootstrap_summary, mean_over_seeds, paired_diff

V = 25  # items 1..25; score column j is item j + 1
EVAL = EvalConfig(num_relevant=3, ks=[2, 4])


def run_scorer(scorer: TableScorer, users: list[np.ndarray], shots: list[int], eval_cfg: EvalConfig = EVAL):
    """The protocol's per-user metrics of ``scorer`` on ``users`` (held as the test split)."""
    splits = UserSplits(train=[], valid=[], test=users, num_items=V)
    return ColdStartProtocol(splits, shots, 5, eval_cfg).per_user(scorer, users)


# User A: support {1, 2}, relevant {3, 4, 5}; the model puts the support on top, then 3, 6, 4, 7, 8, 5.
# User B: support {1, 2}; its next items are a repeat of 1 (not relevant: already seen) and 7.
USERS = [np.array([1, 2, 3, 4, 5, 6]), np.array([1, 2, 1, 7])]


def _scorer_for(k: int) -> TableScorer:  # user A's scores
    a = {1: 10, 2: 9, 3: 8, 6: 7, 4: 6, 7: 5, 8: 4, 5: 3}
    return TableScorer({(1, 2): a}, V)


def test_metrics_by_hand_with_the_support_masked():
    res = run_scorer(_scorer_for(2), USERS[:1], [2])[2]
    idcg3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    # Ranking after masking the support: 3, 6, 4, 7, 8, 5, ...; relevant {3, 4, 5}.
    assert res["recall@2"][0] == pytest.approx(1 / 3)
    assert res["recall@4"][0] == pytest.approx(2 / 3)
    assert res["ndcg@2"][0] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert res["ndcg@4"][0] == pytest.approx((1 + 1 / math.log2(4)) / idcg3)
    assert res["mrr"][0] == pytest.approx(1.0)  # next item 3 is first once 1 and 2 are out
    assert res["hr@10"][0] == 1.0


def test_repeated_support_item_is_not_relevant_and_never_ranked():
    scorer = TableScorer({(1, 2): {1: 10, 2: 9, 3: 8, 7: 7.5}}, V)
    res = run_scorer(scorer, USERS[1:], [2])[2]
    # Relevant set = {7} (the repeat of 1 is dropped); ranking without the support: 3, 7 -> rank 2.
    assert res["recall@2"][0] == 1.0
    assert res["ndcg@2"][0] == pytest.approx(1 / math.log2(3))
    assert res["mrr"][0] == pytest.approx(0.5)


def test_only_the_first_k_items_ever_reach_the_model():
    """Fails if any item after the support (the relevant/query items) leaks into the model's input."""
    rng = np.random.default_rng(0)
    users = [rng.permutation(np.arange(1, V + 1))[: rng.integers(4, 20)] for _ in range(30)]
    for k in (1, 3):
        scorer = TableScorer({}, V)
        run_scorer(scorer, users, [k], EvalConfig(num_relevant=3, ks=[2]))
        assert sorted(scorer.seen) == sorted(tuple(u[:k].tolist()) for u in users if len(u) > k)


def test_users_of_the_three_splits_are_disjoint():
    from metarec_dist.data import prepare_data

    cfg = load_config(None, ["data.format=synthetic", "data.synthetic_users=90", "data.synthetic_items=30"])
    prepared = prepare_data(cfg.data)
    groups = {s: set(prepared.split_users(s).tolist()) for s in ("train", "valid", "test")}
    assert groups["test"] and groups["valid"] and groups["train"]
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["valid"]
    assert not groups["valid"] & groups["test"]
    splits = prepared.user_splits()
    assert len(splits.test) == len(groups["test"]) and len(splits.train) == len(groups["train"])
    assert splits.item_raw_ids == prepared.item_raw_ids and splits.num_items == prepared.num_items
    with pytest.raises(ValueError, match="--split"):
        ColdStartProtocol(splits, [1], 5, EVAL).users("train")  # training users are never cold-start users


def test_popularity_counts_training_users_only():
    train = [np.array([1, 1, 2]), np.array([2, 3])]
    test = [np.array([9, 5, 5, 9, 5])] * 3  # if test users were counted, 5 would lead (9 is support)
    splits = UserSplits(train=train, valid=[], test=test, num_items=V)
    pop = PopularityScorer(splits.train, V).scores
    assert pop[:3].tolist() == [2.0, 2.0, 1.0] and pop[8] == 0 and pop[4] == 0
    protocol = ColdStartProtocol(splits, [1], 1, EvalConfig(num_relevant=3, ks=[2]))
    res = protocol.popularity("test").per_user[1]
    assert res["recall@2"].tolist() == [0.0] * 3  # relevant {5}; the top two are items 1 and 2


def test_seed_average_spread_and_paired_difference_by_hand():
    seed0 = {3: {"ndcg@10": np.array([0.2, 0.4])}}
    seed1 = {3: {"ndcg@10": np.array([0.4, 0.6])}}
    avg = mean_over_seeds("m", [seed0, seed1])
    assert avg.per_user[3]["ndcg@10"].tolist() == pytest.approx([0.3, 0.5])
    row = bootstrap_summary(avg, n_boot=200)[3]["ndcg@10"]
    assert row["mean"] == pytest.approx(0.4) and row["seed_sd"] == pytest.approx(math.sqrt(0.02))
    base = MethodResult("b", {3: {"ndcg@10": np.array([0.2, 0.4])}})
    d = paired_diff(avg, base, n_boot=200)[3]["ndcg@10"]
    assert d["diff"] == pytest.approx(0.1) and d["lo"] == pytest.approx(0.1) and d["hi"] == pytest.approx(0.1)
    assert d["rel"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="different evaluation users"):
        paired_diff(avg, MethodResult("c", {3: {"ndcg@10": np.array([0.1])}}), n_boot=10)


def test_grid_holds_the_trained_values_and_no_adaptation():
    grid = adaptation_grid(trained_steps=4, trained_lr=0.3, finetune=False)
    assert (4, 0.3) in grid and (0, 0.3) in grid and len(grid) == len(set(grid))
    assert [g for g in grid if g[0] == 0] == [(0, 0.3)]
    assert (0, 0.5) in adaptation_grid(3, 0.5, finetune=True)


def test_tune_users_is_a_fixed_subset_of_validation_users(monkeypatch):
    """``eval.tune_users``: the grid runs on the same N validation users every time (none from test), in
    their split order; 0 or N >= the split means all of them."""
    valid = [np.array([i + 1, i + 2, i + 3]) for i in range(20)]
    splits = UserSplits(train=valid[:2], valid=valid, test=[np.array([24, 25])], num_items=V)

    def protocol(n):
        return ColdStartProtocol(splits, [1], 5, EvalConfig(num_relevant=3, ks=[10], tune_users=n))

    chosen = protocol(7).tune_users()
    firsts = [int(u[0]) for u in chosen]
    assert len(chosen) == 7 and firsts == sorted(set(firsts))
    assert firsts == [int(u[0]) for u in protocol(7).tune_users()]  # deterministic
    assert len(protocol(0).tune_users()) == len(protocol(50).tune_users()) == 20
    seen = []
    monkeypatch.setattr(ColdStartProtocol, "scorer", staticmethod(lambda loaded, lr: TableScorer({}, V)))
    real = ColdStartProtocol.per_user

    def spy(self, scorer, users, *args, **kwargs):
        seen.append([int(u[0]) for u in users])
        return real(self, scorer, users, *args, **kwargs)

    monkeypatch.setattr(ColdStartProtocol, "per_user", spy)
    best = protocol(7).tune(None, [(0, 0.5), (1, 0.5)])
    assert best.selected_on == "valid" and seen == [firsts, firsts]
    with pytest.raises(ValueError, match="eval.tune_users"):
        EvalConfig(tune_users=-1)


def test_trainer_validation_is_the_evaluation_protocol(tiny_cfg, synth_data):
    """The trainer's periodic validation and ``metarec evaluate`` score through the same protocol code: the
    engine at its trained steps gives the same numbers as the evaluation scorer at those steps."""
    from metarec_dist.eval.protocol import AdaptingScorer
    from metarec_dist.runtime.context import LocalContext
    from metarec_dist.train.trainer import MetaTrainer

    trainer = MetaTrainer(tiny_cfg, LocalContext(None), synth_data)
    trainer.fit()
    out = trainer.validate([1, 3])
    meta, users = tiny_cfg.meta, synth_data.valid[: tiny_cfg.train.eval_users]
    protocol = ColdStartProtocol(synth_data, [1, 3], tiny_cfg.tasks.support_max, tiny_cfg.eval)
    scorer = AdaptingScorer(trainer.model, meta.algorithm, meta.inner_lr)
    res = protocol.per_user(scorer, users, meta.adaptation_steps, ks=(10,))
    for k in (1, 3):
        for m in ("ndcg@10", "recall@10"):
            assert out[f"val/{m}@k{k}"] == pytest.approx(float(res[k][m].mean()), abs=1e-6)
    assert [r["users"] for r in out["eval/cold_start_table"]] == [len(res[k]["ndcg@10"]) for k in (1, 3)]


def test_eval_does_not_import_train():
    """train imports eval (its validation is the protocol), never the reverse; only the reproduction
    driver, which trains the runs it compares, reaches for the trainer."""
    import ast
    from pathlib import Path

    import metarec_dist.eval

    for path in Path(metarec_dist.eval.__file__).parent.glob("*.py"):
        if path.name == "reproduce.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith("metarec_dist.train") for n in names), f"{path.name} imports {names}"


def test_training_budget_counts_real_tokens(tiny_cfg, synth_data):
    """The equal-tokens comparison's unit: non-padding window positions of the run's own tasks, between
    one support item (+ BOS + one query item) and the full padded window per task."""
    from metarec_dist.eval.reproduce import training_budget
    from metarec_dist.train.trainer import tokens_per_task

    budget = training_budget(tiny_cfg, synth_data.train, synth_data.num_items, probe_batches=3)
    tasks = tiny_cfg.train.meta_steps * tiny_cfg.meta.meta_batch_size
    assert budget["tasks"] == tasks and budget["meta_steps"] == tiny_cfg.train.meta_steps
    assert 3 * tasks < budget["tokens"] < tokens_per_task(tiny_cfg) * tasks
    longer = dataclasses.replace(tiny_cfg, tasks=dataclasses.replace(tiny_cfg.tasks, support_min=4))
    assert (
        training_budget(longer, synth_data.train, synth_data.num_items, probe_batches=3)["tokens"]
        > budget["tokens"]
    )


def test_reproduce_reuses_only_identical_runs(tmp_path):
    """``--reuse`` takes an earlier run's per-user results only for the same method, config and overrides."""
    import pickle

    from metarec_dist.eval.reproduce import RunSpec, reusable

    spec = RunSpec("fomaml", "configs/coldstart.yaml", 1, False, ("data.split=random",))
    assert reusable(spec, tmp_path) is None
    (tmp_path / "per_user").mkdir()
    info = {"seed": 1, "config": spec.config, "overrides": list(spec.overrides)}
    runs = {"fomaml": ({3: {"ndcg@10": np.array([0.5])}}, info)}
    (tmp_path / "per_user" / "fomaml-s1.pkl").write_bytes(pickle.dumps(runs))
    assert reusable(spec, tmp_path)["fomaml"][1] == info
    assert reusable(dataclasses.replace(spec, overrides=()), tmp_path) is None
    assert reusable(dataclasses.replace(spec, config="configs/ml100k.yaml"), tmp_path) is None
    from metarec_dist.eval.reproduce import collect

    other = RunSpec("sasrec", "configs/coldstart-sasrec.yaml", 1, False, ())
    assert list(collect([spec, other], tmp_path)) == ["fomaml"]  # what exists, nothing trained
    with pytest.raises(ValueError, match="--collect: no per-user results"):
        collect([other], tmp_path)


def test_a_fine_tuned_method_keeps_its_own_label():
    """reproduce labels methods freely (``--method sasrec-conv=...``): +finetune goes on the label, and only
    for an algorithm that does not adapt by default."""
    from metarec_dist.eval.protocol import method_name

    assert method_name("sasrec", True, "sasrec-conv") == "sasrec-conv+finetune"
    assert method_name("sasrec", False, "sasrec-conv") == "sasrec-conv"
    assert method_name("fomaml", True, "fz-fomaml") == "fz-fomaml"
    assert method_name("none", True) == "none+finetune"


class StepScorer:
    """Puts each user's next three items (the users below hold consecutive ids) on top when ``steps`` is the
    one that suits the support size shown, at the bottom otherwise: shared and per-K choices differ."""

    def __init__(self, best_steps: dict[int, int]) -> None:
        self.best_steps = best_steps

    def score(self, batch, steps: int | None = None) -> torch.Tensor:
        rows = []
        for ids in batch.item_ids.tolist():
            shown = [i for i in ids if i not in (0, V + 1)]
            row = torch.zeros(V)
            for item in range(shown[-1] + 1, shown[-1] + 4):
                row[item - 1] = 5.0 if self.best_steps[len(shown)] == steps else -5.0
            rows.append(row)
        return torch.stack(rows)


@pytest.mark.parametrize("mode", ["shared", "per_shot"])
def test_adaptation_chosen_per_support_size(monkeypatch, mode):
    """``eval.adaptation: per_shot``: each K gets the validation-best setting for that K alone, and the test
    rows of each K equal the full protocol's rows at that K's setting (same users, same windows); ``shared``
    keeps one setting for every K, chosen on the mean over K."""
    users = [np.arange(s, s + 8) for s in (1, 9, 5)]
    splits = UserSplits(train=users[:1], valid=users, test=users[::-1], num_items=V)
    protocol = ColdStartProtocol(splits, [1, 3], 5, EvalConfig(num_relevant=3, ks=[10], adaptation=mode))
    scorer = StepScorer({1: 0, 3: 5})  # K = 1 wants no step, K = 3 five
    monkeypatch.setattr(ColdStartProtocol, "scorer", staticmethod(lambda loaded, lr: scorer))
    chosen = protocol.tune(None, [(0, 0.5), (1, 0.5), (5, 0.5)])
    assert (chosen.steps, chosen.inner_lr) == (0, 0.5)  # the shared choice: a tie at 0.5, fewer steps win
    results = protocol.adapted_per_user(None, chosen, splits.test)
    at = {s: protocol.per_user(scorer, splits.test, s) for s in (0, 5)}
    if mode == "shared":
        assert chosen.per_shot is None and "per_shot" not in chosen.as_dict() and chosen.val_score == 0.5
        assert results[3]["ndcg@10"].tolist() == at[0][3]["ndcg@10"].tolist() == [0, 0, 0]
        return
    assert chosen.per_shot == {1: (0, 0.5, 1.0), 3: (5, 0.5, 1.0)} and chosen.val_score == 1.0
    for k, s in ((1, 0), (3, 5)):
        for metric, values in results[k].items():
            assert values.tolist() == at[s][k][metric].tolist(), (k, metric)
    assert results[1]["ndcg@10"].tolist() == results[3]["ndcg@10"].tolist() == [1, 1, 1]
    assert chosen.as_dict()["per_shot"]["3"] == {"steps": 5, "inner_lr": 0.5, "val_ndcg@10": 1.0}
    with pytest.raises(ValueError, match="eval.adaptation must be one of shared, per_shot"):
        EvalConfig(adaptation="per_k")


def test_reproduce_writes_inside_out_unless_told_where(tmp_path):
    """An exploratory run (no --json / --plot / --markdown) must not rewrite a published page in docs/."""
    from metarec_dist.eval.publish import markers, write_section
    from metarec_dist.eval.reproduce import output_paths

    out = tmp_path / "out"
    assert output_paths(out, None, None, None) == (
        out / "results.json",
        out / "ndcg_vs_k.png",
        out / "results.md",
    )
    assert output_paths(out, "a.json", "", "") == (Path("a.json"), None, None)
    assert output_paths(out, None, "p.png", "docs/x.md") == (
        out / "results.json",
        Path("p.png"),
        Path("docs/x.md"),
    )

    begin, end = markers("s")
    page = tmp_path / "page.md"
    page.write_text(f"prose before\n{begin}\nold table\n{end}\nprose after\n")
    write_section(page, f"{begin}\nnew table\n{end}", "s")
    text = page.read_text()
    assert text == f"prose before\n{begin}\nnew table\n{end}\nprose after\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".page")] == []  # no temp file left
