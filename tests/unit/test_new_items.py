"""Item cold start (``data.protocol: new_items``; ``metarec evaluate --protocol new_items|mixed``): the split,
that no training batch ever holds a held-out item, the protocols' candidate and relevant sets, the random and
content-kNN baselines, and the CLI's errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from trained import SMALL, TINY

from metarec_dist.cli import main
from metarec_dist.config import Config, load_config
from metarec_dist.data import DataError, data_stats, format_stats, prepare_data
from metarec_dist.data.config import DataConfig, FeatureSpec
from metarec_dist.data.features import EncodedFeature, FeatureTables
from metarec_dist.data.split import newest_items
from metarec_dist.eval.item_protocol import MixedProtocol, NewItemsProtocol
from metarec_dist.eval.new_items import (
    ContentKNNScorer,
    RandomScorer,
    evaluate_new_items,
    item_feature_matrix,
    new_item_targets,
)
from metarec_dist.eval.publish import publish
from metarec_dist.eval.stats import PRIMARY, SECONDARY, MethodResult
from metarec_dist.runtime.context import LocalContext
from metarec_dist.tasks.types import MetaBatch
from metarec_dist.train.trainer import MetaTrainer

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance"]
NUM_USERS, NUM_ITEMS = 60, 40


def new_items_run(movies: Path) -> list[str]:
    """The settings of a run on ``write_movies``' folder under the new-items protocol, genres as features."""
    return [
        "data.format=recbole",
        f"data.path={movies}",
        "data.protocol=new_items",
        "data.new_item_frac=0.5",
        "data.cache=false",
        "data.valid_frac=0.2",
        "data.test_frac=0.2",
        "data.item_features=[{name: genres, kind: token_seq, column: class}]",
    ]


def write_movies(folder: Path) -> Path:
    """A RecBole folder (``movies.inter`` / ``.item``) with a known item age: item i first appears at time
    ~10 * i, so the newest items are the highest ids; every user rates 10 items over time."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for u in range(1, NUM_USERS + 1):
        start = 5 * u
        items = rng.choice(np.arange(1, NUM_ITEMS + 1), size=10, replace=False)
        for j, i in enumerate(sorted(items, key=lambda i: i + rng.random() * 8)):
            rows.append((u, int(i), 4.0, max(start + 3 * j, 10 * int(i))))
    rows += [(u, 1, 5.0, 1) for u in (1, 2)]  # two users share the earliest interaction
    text = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    (folder / "movies.inter").write_text(text + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    items = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    for i in range(1, NUM_ITEMS + 1):
        genres = " ".join(sorted({GENRES[i % 5], GENRES[(i * 3) % 5]}))
        items += f"{i}\tMovie {i}\t{1990 + i % 7}\t{genres}\n"
    (folder / "movies.item").write_text(items)
    return folder / "movies.inter"


ITEM_FEATURES = [
    FeatureSpec("genres", "token_seq", column="class"),
    FeatureSpec("year", "float", column="release_year", boundaries=[1993.0]),
    FeatureSpec("title", "title", column="movie_title"),
]


def data_cfg(inter: Path, **kwargs) -> DataConfig:
    base = {
        "format": "recbole",
        "path": str(inter),
        "protocol": "new_items",
        "valid_frac": 0.2,
        "test_frac": 0.2,
        "cache": False,
        "item_features": ITEM_FEATURES,
    }
    return DataConfig(**{**base, **kwargs})


@pytest.fixture(scope="module")
def movies(tmp_path_factory) -> Path:
    return write_movies(tmp_path_factory.mktemp("data") / "movies")


def contains_new(seqs, new: np.ndarray) -> bool:
    return any(np.isin(s, new).any() for s in seqs)


# ------------------------------------------------------------------------------------------------ split


def test_newest_items_by_first_time_with_ties_by_id():
    first = np.array([5.0, 1.0, 9.0, 9.0, 3.0, 9.0])  # items 1..6
    assert newest_items(first, 0.5).tolist() == [3, 4, 6]
    assert newest_items(first, 0.34).tolist() == [4, 6]  # round(2.04) = 2: of the three tied at 9, ids 4, 6
    assert newest_items(first, 0.01).tolist() == [6]  # at least one item whenever a share is asked for
    with pytest.raises(DataError, match="data.new_item_frac"):
        newest_items(first, 0.95)


def test_split_is_deterministic_and_takes_new_items_out_of_training_only(movies, tmp_path):
    new = prepare_data(data_cfg(movies))
    again = prepare_data(data_cfg(movies, cache=True, cache_dir=str(tmp_path / "cache")))
    cached = prepare_data(data_cfg(movies, cache=True, cache_dir=str(tmp_path / "cache")))  # a cache hit
    old = prepare_data(data_cfg(movies, protocol="cold_start"))
    assert new.new_items is not None and len(new.new_items) == 4  # 10% of 40
    # The newest items by first interaction: in this data, the highest ids.
    assert new.new_items.tolist() == [37, 38, 39, 40]
    for other in (again, cached):
        assert np.array_equal(other.new_items, new.new_items)
        for split in ("train", "valid", "test"):
            assert all(map(np.array_equal, other.sequences(split), new.sequences(split)))
    splits = new.user_splits()
    assert np.array_equal(splits.new_items, new.new_items)
    assert not contains_new(splits.train, new.new_items)
    assert contains_new(old.sequences("train"), new.new_items)  # the check above can fail
    # Training users: the same users, the same order, only the new items removed.
    expected = [s[~np.isin(s, new.new_items)] for s in old.sequences("train")]
    assert all(map(np.array_equal, splits.train, expected))
    # Held-out users keep their whole history (the new items are their targets).
    for split in ("valid", "test"):
        assert all(map(np.array_equal, new.sequences(split), old.sequences(split)))
    assert contains_new(splits.test, new.new_items)
    assert new.raw_stats["new_items"] == 4
    assert "new items     4 held out of training" in format_stats(data_stats(new))


def test_new_item_frac_is_validated():
    with pytest.raises(ValueError, match=r"data.new_item_frac: only used with data.protocol=new_items"):
        DataConfig(new_item_frac=0.2)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match=r"data.new_item_frac must be in \(0, 1\)"):
            DataConfig(protocol="new_items", new_item_frac=bad)
    with pytest.raises(ValueError, match="data.protocol: unknown 'new-items'"):
        DataConfig(protocol="new-items")
    assert DataConfig(protocol="new_items").held_out_item_frac == 0.1
    assert DataConfig(protocol="new_items", new_item_frac=0.25).held_out_item_frac == 0.25


# ------------------------------------------------------------------------------------------- no leak


def _tiny_cfg(tmp_path: Path, inter: Path, *extra: str) -> Config:
    item_split = ["data.format=recbole", f"data.path={inter}", "data.protocol=new_items", "data.cache=false"]
    split = [
        "data.valid_frac=0.2",
        "data.test_frac=0.2",
        "logging.wandb=off",
        f"runtime.storage_path={tmp_path}",
    ]
    return load_config(TINY, [*SMALL, *item_split, *split, *extra])


def batch_items(batch: MetaBatch) -> np.ndarray:
    parts = [batch.item_ids, batch.support_targets, batch.query_targets]
    if batch.negatives is not None:
        parts.append(batch.negatives)
    return np.concatenate([p.reshape(-1).numpy() for p in parts])


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_no_training_batch_holds_a_held_out_item(movies, tmp_path, loss):
    """Many meta-batches from the trainer's own sampler (inputs, support and query targets and sampled
    negatives): not one held-out item. The same sampler over the cold-start split does hit them, so the check
    can fail."""
    extra = [f"model.loss={loss}", "model.num_negatives=30"] if loss == "sampled" else []
    cfg = _tiny_cfg(tmp_path, movies, *extra)
    data = prepare_data(cfg.data).user_splits()
    new = data.new_items
    assert new is not None
    assert not contains_new(data.train, new)
    sampler = MetaTrainer(cfg, LocalContext(), data).sampler
    seen = np.concatenate([batch_items(sampler.sample(64)) for _ in range(200)])
    assert not np.isin(seen, new).any()
    assert len(np.unique(seen[(seen > 0) & (seen <= data.num_items)])) == data.num_items - len(new)

    cold = dataclasses.replace(cfg.data, protocol="cold_start")
    leaky = dataclasses.replace(data, train=prepare_data(cold).user_splits().train, new_items=None)
    control = MetaTrainer(cfg, LocalContext(), leaky).sampler
    assert np.isin(np.concatenate([batch_items(control.sample(64)) for _ in range(50)]), new).any()


@pytest.mark.parametrize("unseen", ["auto", "include"])
def test_training_never_touches_the_rows_of_held_out_items(movies, tmp_path, unseen):
    """With the full softmax every catalogue item is a negative of every step. Under data.protocol new_items
    the held-out items are out of the loss as well as out of the batches (``model.unseen_items: auto`` ->
    ``exclude``), so their id rows keep their initial values exactly: the id-only model learns nothing about
    them. Before, they were trained as "never the answer" and all moved to one common direction, which
    ranked the new items in one fixed order for every user (docs/results/ml100k-features.md). ``include``
    (that old behaviour, and the cold-start default) moves them."""
    settings = ["model.loss=full", "train.meta_steps=3", "data.new_item_frac=0.5", "eval.shots=[1]"]
    cfg = _tiny_cfg(tmp_path, movies, *settings, f"model.unseen_items={unseen}")
    assert cfg.model.unseen_items == ("exclude" if unseen == "auto" else "include")
    assert load_config(TINY).model.unseen_items == "include"  # the cold-start recipe is unchanged
    data = prepare_data(cfg.data).user_splits()
    trainer = MetaTrainer(cfg, LocalContext(tmp_path / "run"), data)
    before = trainer.model.item_emb.weight.detach().clone()
    trainer.fit()
    after = trainer.model.item_emb.weight.detach()
    new = torch.as_tensor(data.new_items)
    old = torch.as_tensor(np.unique(np.concatenate(data.train)))
    assert not torch.allclose(after[old], before[old])  # training did train
    if unseen == "auto":
        torch.testing.assert_close(after[new], before[new], rtol=0, atol=0)
    else:
        assert (after[new] - before[new]).abs().amax(dim=1).min() > 0


# ------------------------------------------------------------------------------------------- protocols


class ByItemId:
    """Scores item column j as j (higher ids first): rankings that can be worked out by hand."""

    def __init__(self, num_items: int) -> None:
        self.num_items = num_items

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        return torch.arange(self.num_items, dtype=torch.float32).expand(batch.num_tasks, -1).clone()


def test_targets_support_is_the_first_old_items_and_relevant_the_new_ones_after_it():
    is_new = np.zeros(11, dtype=bool)
    is_new[[8, 9, 10]] = True
    seq = np.array([9, 1, 2, 10, 3, 8, 2, 4, 9])
    t = new_item_targets([seq, np.array([1, 8])], is_new, shots=2, num_relevant=3, mixed=False)
    assert t.keep == [0]  # the second user has one old item only
    assert t.support.tolist() == [[0, 1]]  # items 1, 2 (columns 0, 1): item 9 before them is skipped
    assert t.old[0].tolist() == [1, 2, 3, 2, 4]
    assert t.relevant.tolist() == [[9, 7, 8]]  # items 10, 8, 9: new, after item 2, distinct, in order
    assert t.next_item.tolist() == [9]
    mixed = new_item_targets([seq], is_new, shots=2, num_relevant=3, mixed=True)
    assert mixed.relevant.tolist() == [[9, 2, 7]]  # items 10, 3, 8: anything next but the support
    assert new_item_targets([seq], is_new, shots=6, num_relevant=3, mixed=False).keep == []


def test_new_items_ranks_only_the_held_out_items_and_mixed_ranks_all():
    num_items, new = 20, np.array([3, 5, 8, *range(11, 18)])  # ten new items
    # Old items 1, 2 are the support (K=2); then new item 5 and old item 9.
    seqs = [np.array([1, 2, 5, 9])]
    kw = {"shots": [2], "support_max": 4, "num_relevant": 2}
    only_new = evaluate_new_items(ByItemId(num_items), num_items, new, seqs, ks=(5, 10), **kw)[2]
    # Candidates by score: 17, 16, ..., 11, 8, 5, 3 -> item 5 (the only relevant one) ranks 9th; old items
    # 18, 19, 20 would outrank all of them but are no candidates.
    assert only_new["recall@5"].tolist() == [0.0] and only_new["recall@10"].tolist() == [1.0]
    assert only_new["ndcg@10"] == pytest.approx([1 / np.log2(10)])
    assert only_new["mrr"] == pytest.approx([1 / 9])
    mixed = evaluate_new_items(ByItemId(num_items), num_items, new, seqs, mixed=True, ks=(10, 12), **kw)[2]
    # All items but the support: 20, 19, ... -> relevant {5, 9}: 9 ranks 12th, 5 (the next item) 16th.
    assert mixed["recall@10"].tolist() == [0.0] and mixed["recall@12"].tolist() == [0.5]
    assert mixed["mrr"] == pytest.approx([1 / 16])
    # The top 10 (20, ..., 11) holds the new items 17, ..., 11: 7 of 10 slots.
    assert mixed["new@10"].tolist() == pytest.approx([0.7]) and mixed["any_new@10"].tolist() == [1.0]
    with pytest.raises(ValueError, match=r"only the 10 held-out items of 20, .* need at least 20: raise "):
        evaluate_new_items(ByItemId(num_items), num_items, new, seqs, ks=(20,), **kw)


class Constant:
    def __init__(self, num_items: int) -> None:
        self.num_items = num_items

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        return torch.zeros(batch.num_tasks, self.num_items)


def test_ties_never_put_a_new_item_in_the_top_10():
    """A scorer that cannot tell items apart earns no new items in the top 10 (and no set-metric hits)."""
    num_items, new = 30, np.array([10, 20, 30])
    seqs = [np.array([1, 2, 20, 4])]
    res = evaluate_new_items(Constant(num_items), num_items, new, seqs, [2], 4, mixed=True, ks=(10,))[2]
    assert res["new@10"].tolist() == [0.0] and res["any_new@10"].tolist() == [0.0]
    assert res["recall@10"].tolist() == [0.0]


class BySupport:
    """Scores that depend on each user's own window (so a batching mistake shows): item column j of a user
    whose window sums to s scores sin(s * (j + 1))."""

    def __init__(self, num_items: int) -> None:
        self.num_items = num_items

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        s = batch.item_ids.float().sum(dim=1, keepdim=True)
        return torch.sin(s * torch.arange(1, self.num_items + 1, dtype=torch.float32))


class Backwards:
    """A runner that scores the batches last to first (as actors finishing out of order would)."""

    def __init__(self) -> None:
        self.calls = 0

    def map(self, fn, payload, n):
        self.calls += 1
        return [fn(payload, i) for i in reversed(range(n))][::-1]


@pytest.mark.parametrize("mixed", [False, True])
def test_item_protocol_batches_give_the_same_users_wherever_and_however_cut(mixed):
    """The item protocols run as independent user batches (as the cold-start one): batches of 1 user scored
    last to first give the per-user arrays of one batch of 256 in order, value for value."""
    from metarec_dist.eval.distributed import run_batches
    from metarec_dist.eval.new_items import NewItemBatches

    rng = np.random.default_rng(0)
    num_items, new = 40, np.arange(29, 41)
    seqs = [rng.integers(1, num_items + 1, size=int(rng.integers(3, 15))) for _ in range(30)]
    args = (num_items, new, seqs, [1, 2, 3], 6, mixed)
    kw = {"ks": (5, 10)}
    cut = NewItemBatches.build(*args, batch_users=1, **kw)
    assert len(cut) == sum(len(t.keep) for t in cut.targets.values()) > 30
    # The seeded random baseline too: its noise is a function of the user, not of the batch order.
    for scorer in (BySupport(num_items), RandomScorer(num_items, seed=3)):
        whole = run_batches(NewItemBatches.build(*args, batch_users=256, **kw), scorer, 0)
        runner = Backwards()
        parts = run_batches(cut, scorer, 0, runner)
        assert runner.calls == 1 and whole.keys() == parts.keys() == {1, 2, 3}
        for k in whole:
            assert whole[k].keys() == parts[k].keys() and len(whole[k]["ndcg@10"]) > 5
            for name in whole[k]:
                np.testing.assert_array_equal(whole[k][name], parts[k][name], err_msg=f"K={k} {name}")


# ------------------------------------------------------------------------------------------- baselines


def _features() -> FeatureTables:
    # Items 1..4 (row 0 is padding): genres as a bag, year as a bucket; id 1 is "unknown", 0 padding.
    genres = EncodedFeature(
        "genres",
        "token_seq",
        ["[PAD]", "[UNK]", "Action", "Comedy", "Drama"],
        np.array([[0, 0], [2, 3], [3, 0], [4, 0], [1, 0]]),  # 1: Action Comedy, 2: Comedy, 3: Drama, 4: ?
    )
    year = EncodedFeature(
        "year", "float", ["[PAD]", "[UNK]", "old", "new"], np.array([0, 2, 3, 3, 3]), boundaries=[1990.0]
    )
    title = EncodedFeature("title", "title", [], np.array(["", "a", "b", "c", "d"], dtype=object))
    return FeatureTables(item={"genres": genres, "year": year, "title": title})


def test_content_knn_is_the_cosine_of_the_support_profile_worked_by_hand():
    x = item_feature_matrix(_features(), 4)
    # Columns: genres [PAD, UNK, Action, Comedy, Drama], year [PAD, UNK, old, new]; PAD/UNK stay 0.
    assert x.tolist() == [
        [0, 0, 1, 1, 0, 0, 0, 1, 0],
        [0, 0, 0, 1, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 1, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 0, 0, 1],
    ]
    # Support: items 1 and 2 -> profile Action 1, Comedy 2, old 1, new 1 (norm sqrt(7)).
    batch = MetaBatch(
        item_ids=torch.zeros(1, 4, dtype=torch.long),
        attention_mask=torch.ones(1, 4, dtype=torch.long),
        support_targets=torch.tensor([[0, 1, 2]]),
        query_targets=torch.zeros(1, 0, dtype=torch.long),
        task_ids=torch.zeros(1, dtype=torch.long),
    )
    scores = ContentKNNScorer(_features(), 4, tie_break=0.0).score(batch)[0]
    norm = np.sqrt(7)
    expected = [4 / (norm * np.sqrt(3)), 3 / (norm * np.sqrt(2)), 1 / (norm * np.sqrt(2)), 1 / norm]
    assert scores.tolist() == pytest.approx(expected, rel=1e-6)
    # The default breaks exact ties only: the order of distinct scores is kept, and the result is seeded.
    jittered = ContentKNNScorer(_features(), 4).score(batch)[0]
    assert jittered.tolist() == pytest.approx(expected, abs=2e-6)
    assert torch.equal(jittered.argsort(), scores.argsort())
    assert torch.equal(jittered, ContentKNNScorer(_features(), 4).score(batch)[0])


def test_content_knn_needs_a_non_text_item_feature():
    only_title = FeatureTables(item={"title": _features().item["title"]})
    with pytest.raises(ValueError, match="no item features besides text"):
        item_feature_matrix(only_title, 4)


def test_random_baseline_is_seeded(movies):
    cfg = load_config(TINY, ["eval.shots=[1,3]", "eval.n_boot=10"])
    splits = prepare_data(data_cfg(movies, new_item_frac=0.5)).user_splits()  # 20 new items: eval.ks up to 20
    protocol = NewItemsProtocol.build(splits, [1, 3], 5, cfg.eval)
    a, b, c = protocol.random(seed=0), protocol.random(seed=0), protocol.random(seed=1)
    for k in (1, 3):
        assert len(a.per_user[k]["ndcg@10"]) > 0
        for m in a.per_user[k]:
            assert np.array_equal(a.per_user[k][m], b.per_user[k][m])
    assert any(not np.array_equal(a.per_user[k]["mrr"], c.per_user[k]["mrr"]) for k in (1, 3))
    first = RandomScorer(5, 3).score(MetaBatch(*(torch.zeros(2, 1, dtype=torch.long),) * 4, torch.arange(2)))
    assert first.shape == (2, 5)


def test_protocols_share_users_and_need_held_out_items(movies):
    cfg = load_config(TINY, ["eval.shots=[1,3]"])
    splits = prepare_data(data_cfg(movies, new_item_frac=0.5)).user_splits()
    new = NewItemsProtocol.build(splits, [1, 3], 5, cfg.eval)
    mixed = MixedProtocol.build(splits, [1, 3], 5, cfg.eval)
    knn, rnd = new.baselines()
    assert (knn.name, rnd.name) == ("content-knn", "random")
    assert knn.info["features"] == ["genres", "year"] and knn.info["protocol"] == "new-items"
    for k in (1, 3):
        assert len(knn.per_user[k]["ndcg@10"]) == len(rnd.per_user[k]["ndcg@10"])
    names = [r.name for r in mixed.baselines()]
    assert names == ["content-knn", "random", "popularity"]
    cold = prepare_data(data_cfg(movies, protocol="cold_start")).user_splits()
    with pytest.raises(ValueError, match="data.protocol=new_items"):
        NewItemsProtocol.build(cold, [1], 5, cfg.eval)
    no_features = dataclasses.replace(splits, features=None)
    with pytest.raises(ValueError, match="declare data.item_features"):
        NewItemsProtocol.build(no_features, [1], 5, cfg.eval).content_knn()


# ------------------------------------------------------------------------------------------------- CLI


def _train_settings(root: Path, name: str) -> list[str]:
    run = ["logging.wandb=off", "eval.n_boot=20", "eval.shots=[1,3]"]
    return [*SMALL, *run, f"runtime.storage_path={root}", f"runtime.run_name={name}"]


def _train(root: Path, name: str, *settings: str) -> Path:
    args = ["train", "--config", TINY]
    for s in [*_train_settings(root, name), *settings]:
        args += ["--set", s]
    assert main(args) == 0
    return root / name


def test_cli_new_items_and_mixed_tables(movies, trained, tmp_path, capsys):
    run = trained(*new_items_run(movies)).folder
    out = tmp_path / "new.json"
    assert main(["evaluate", "--checkpoint", str(run), "--json", str(out), "--steps", "0"]) == 0
    doc = json.loads(out.read_text())
    assert doc["protocol"] == "new-items"
    assert list(doc["methods"]) == ["fomaml", "content-knn", "random"]
    users = {name: m["users"] for name, m in doc["methods"].items()}
    assert len({json.dumps(u, sort_keys=True) for u in users.values()}) == 1  # the same users for all
    out = tmp_path / "mixed.json"
    args = ["evaluate", "--checkpoint", str(run), "--protocol", "mixed", "--json", str(out), "--steps", "0"]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    assert list(doc["methods"]) == ["fomaml", "content-knn", "random", "popularity"]
    assert "new@10" in doc["methods"]["fomaml"]["metrics"]["1"]
    assert "New items in the top 10" in capsys.readouterr().out


def test_too_few_new_items_for_the_validation_fails_before_training(movies, tmp_path, capsys):
    """40 items at the default data.new_item_frac hold out 4: fewer than the validation's top 10. That used to
    surface in the final validation, after every step had run and before the final checkpoint."""
    args = ["train", "--config", TINY]
    settings = [*_train_settings(tmp_path, "few"), "data.format=recbole", f"data.path={movies}"]
    settings += ["data.protocol=new_items", "data.valid_frac=0.2", "data.test_frac=0.2", "data.cache=false"]
    for s in settings:
        args += ["--set", s]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error: data.new_item_frac: the new-items protocol ranks only the 4 held-out items of 40" in err
    assert "need at least 10: raise data.new_item_frac to 0.25 or more" in err and "Traceback" not in err
    assert "1/2" not in err and "2/2" not in err  # no step ran


def test_cli_new_items_errors(trained, capsys):
    no_features = trained(
        "data.protocol=new_items", "data.new_item_frac=0.4"
    ).folder  # synthetic: no features
    assert main(["evaluate", "--checkpoint", str(no_features), "--protocol", "new-items"]) == 2
    err = capsys.readouterr().err
    assert "declares no item features (data.item_features)" in err and "Traceback" not in err
    assert "--protocol new_items: " in err  # as --help spells it, whichever spelling was given
    cold = trained().folder
    assert main(["evaluate", "--checkpoint", str(cold), "--protocol", "mixed"]) == 2
    assert "retrain with --set data.protocol=new_items" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- publication


def _result(name: str, shift: float, new_share: bool = False) -> MethodResult:
    rng = np.random.default_rng(len(name))
    per_user = {}
    for k in (1, 3):
        metrics = {m: np.clip(rng.random(30) * 0.3 + shift, 0, 1) for m in (*PRIMARY, *SECONDARY)}
        if new_share:
            metrics.update({"new@10": np.full(30, 0.2), "any_new@10": np.ones(30)})
        per_user[k] = metrics
    return MethodResult(name, per_user, {})


def test_pairs_and_named_sections_share_one_page(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\nprose stays\n")
    cold = [_result("a", 0.1), _result("a+features", 0.2), _result("b", 0.1), _result("b+features", 0.1)]
    pairs = {"a+features": "a", "b+features": "b"}
    doc = publish(cold, None, 50, tmp_path / "cold.json", None, page, {}, pairs=pairs, section="cold")
    assert {n: p["baseline"] for n, p in doc["paired"].items()} == pairs
    assert doc["paired"]["a+features"]["diff"][1]["ndcg@10"]["diff"] > 0.05
    items = [_result("m", 0.1, True), _result("content-knn", 0.0, True)]
    publish(items, "content-knn", 50, tmp_path / "m.json", None, page, {}, section="mixed")
    text = page.read_text()
    assert "prose stays" in text and "a+features − a" in text and "New items in the top 10" in text
    assert "<!-- results:begin:cold" in text and "<!-- results:end:mixed -->" in text
    publish(
        cold[:2], None, 50, tmp_path / "cold.json", None, page, {}, pairs={"a+features": "a"}, section="cold"
    )
    again = page.read_text()
    assert again.count("<!-- results:begin:cold") == 1 and "b+features" not in again
    assert again.split("<!-- results:begin:mixed")[1] == text.split("<!-- results:begin:mixed")[1]
    with pytest.raises(ValueError, match="baseline 'zzz' is not among"):
        publish(cold, None, 50, tmp_path / "x.json", None, page, {}, pairs={"a": "zzz"})
    assert not (tmp_path / "cold.png").exists()  # no plot asked for


def test_reproduce_pairs_and_reuse_arguments(tmp_path):
    from metarec_dist.eval.reproduce import RunSpec, parse_pair, reused_checkpoint

    assert parse_pair("fomaml+features=fomaml") == ("fomaml+features", "fomaml")
    with pytest.raises(ValueError, match="expected METHOD=BASELINE"):
        parse_pair("fomaml")
    cfg = load_config(TINY, [])
    assert reused_checkpoint(tmp_path / "absent", cfg) is None  # nothing to reuse: train it
    spec = RunSpec("fomaml", TINY, 0, False, ("train.meta_steps=2",), "mixed")
    assert spec.all_overrides == ("train.meta_steps=2", "data.protocol=new_items")
    assert RunSpec("fomaml", TINY, 0, False).all_overrides == ()


def test_reproduce_reuses_a_finished_run_trained_with_loss_auto(tmp_path):
    """``--reuse-runs`` (the mixed protocol after new-items): the trainer records ``model.loss`` resolved,
    so a config saying ``auto`` must be compared resolved too, or a finished run is never reused (and is
    trained again, its folder replaced)."""
    from metarec_dist.eval.reproduce import reused_checkpoint

    run = _train(tmp_path, "r")
    cfg = load_config(TINY, _train_settings(tmp_path, "r"))
    assert cfg.model.loss == "auto"
    reused = reused_checkpoint(run, cfg)
    assert reused is not None and reused.endswith("step_000002")
    other = load_config(TINY, [*_train_settings(tmp_path, "r"), "meta.inner_lr=0.3"])
    assert reused_checkpoint(run, other) is None
