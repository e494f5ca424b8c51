"""Side information in the model (issue 13 item 2): item content in the input tokens and the tied score
table, the user-feature token before BOS, the export round trip, ``recommend --user``, the text encoder."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from feature_data import feature_config  # noqa: E402
from trained import SMALL as TRAINED_SMALL  # noqa: E402

from metarec_dist import checkpoint as ckpt  # noqa: E402
from metarec_dist.cli import main  # noqa: E402
from metarec_dist.config import load_config  # noqa: E402
from metarec_dist.data import prepare_data  # noqa: E402
from metarec_dist.data.features import UNKNOWN, encode_user  # noqa: E402
from metarec_dist.meta import MetaLearner, build_algorithm  # noqa: E402
from metarec_dist.models.recommender import SeqRecommender  # noqa: E402
from metarec_dist.runtime.context import LocalContext  # noqa: E402
from metarec_dist.tasks.sampler import TaskSampler, prefix_batch  # noqa: E402
from metarec_dist.train.trainer import MetaTrainer  # noqa: E402

SMALL = [*TRAINED_SMALL, "train.eval_users=8"]  # the settings of the shared trained run
NEW = 7  # the item held out of training in the unseen-item tests


@pytest.fixture
def feat(tmp_path):
    cfg = feature_config(tmp_path, SMALL)
    return cfg, prepare_data(cfg.data).user_splits()


def _learner(model: SeqRecommender, cfg) -> MetaLearner:
    return MetaLearner(model, build_algorithm(cfg.meta, model))


def _valid_batch(data, model: SeqRecommender, users: int = 4, shots: int = 3):
    return prefix_batch(data.valid[:users], shots, 5, model.bos_id, data.user_features("valid")[:users])


def _genre_slot(model: SeqRecommender) -> int:
    return next(k for k, s in enumerate(model.layout.item) if s.name == "genres")


@pytest.mark.parametrize("mode", ["sum", "gated"])
def test_unseen_item_is_scored_by_its_content_not_its_id_row(feat, mode):
    cfg, data = feat
    cfg.model.item_content = mode
    torch.manual_seed(0)
    train = [s[s != NEW] for s in data.train]  # NEW never appears in training
    model = SeqRecommender.for_data(cfg.model, data.num_items, data.features, train).double().eval()
    learner = _learner(model, cfg)
    batch = _valid_batch(data, model)
    with torch.no_grad():
        base = learner.score(batch, 2)  # after two adaptation steps on the support
        model.item_emb.weight[NEW].normal_(std=3.0)  # NEW's (untrained) id row: no effect on any score
        torch.testing.assert_close(learner.score(batch, 2), base, rtol=0, atol=0)
        trained = int(train[0][0])
        model.item_emb.weight[trained].normal_(std=3.0)  # a trained item's id row does count
        moved = learner.score(batch, 2)
        assert not torch.allclose(moved[:, trained - 1], base[:, trained - 1])
        # NEW's genre decides its score: give it another genre
        genres = getattr(model.content, f"ids_{_genre_slot(model)}")
        before = moved[:, NEW - 1].clone()
        genres[NEW, 0] = 2 + (int(genres[NEW, 0]) - 2 + 1) % model.layout.item[_genre_slot(model)].num_ids
        assert not torch.allclose(learner.score(batch, 2)[:, NEW - 1], before)

    # and training never touches NEW's id row, while it trains the others
    model.train()
    sampler = TaskSampler(train, cfg.tasks, data.num_items, 0, 0, data.user_features("train"))
    loss = learner.meta_step(sampler.sample(8)).loss
    loss.backward()
    grad = model.item_emb.weight.grad
    assert grad[NEW].abs().max() == 0 and grad[trained].abs().max() > 0
    genre_grad = model.content.embs[_genre_slot(model)].weight.grad
    assert genre_grad is not None and genre_grad.abs().max() > 0


def test_item_id_dropout_uses_one_mask_per_forward(feat):
    cfg, data = feat
    cfg.model.item_id_dropout = 0.5
    torch.manual_seed(0)
    model = SeqRecommender.for_data(cfg.model, data.num_items, data.features, data.train).double()
    batch = _valid_batch(data, model)
    model.train()
    model.encode(batch.item_ids, batch.attention_mask, batch.user_features)
    keep = model._id_keep
    assert keep is not None and 0 < keep[1:-1].sum() < data.num_items and keep[0] == keep[-1] == 1
    # within the forward the table reads the same mask: dropped items are content only
    dropped = int(torch.nonzero(keep[1:-1] == 0)[0]) + 1
    content = model.content.content(torch.tensor([dropped]))[0]
    torch.testing.assert_close(model.item_table()[dropped - 1], content)
    model.eval()
    model.encode(batch.item_ids, batch.attention_mask, batch.user_features)
    assert model._id_keep is None  # evaluation: every trained item keeps its id


def test_user_token_makes_a_one_item_user_not_blank(feat):
    cfg, data = feat
    feats = data.user_features("valid")
    a, b = 0, next(i for i in range(1, len(feats)) if not np.array_equal(feats[i], feats[0]))
    seq = data.valid[0]
    torch.manual_seed(0)
    model = SeqRecommender.for_data(cfg.model, data.num_items, data.features, data.train).double().eval()
    batch = prefix_batch([seq, seq], 1, 5, model.bos_id, feats[[a, b]])
    with torch.no_grad():
        scores = _learner(model, cfg).score(batch, 0)
        assert not torch.allclose(scores[0], scores[1])  # same item, other profile: other scores
        # without user features the batch is read as an unknown user, not an error
        batch.user_features = None
        unknown = _learner(model, cfg).score(batch, 0)
        torch.testing.assert_close(unknown[0], unknown[1])

    cfg.model.user_prefix = False
    torch.manual_seed(0)
    plain = SeqRecommender.for_data(cfg.model, data.num_items, data.features, data.train).double().eval()
    assert plain.user_token is None
    with torch.no_grad():
        scores = _learner(plain, cfg).score(prefix_batch([seq, seq], 1, 5, plain.bos_id, feats[[a, b]]), 0)
    torch.testing.assert_close(scores[0], scores[1])


def test_sampler_batches_carry_each_users_feature_ids(feat):
    cfg, data = feat
    matrix = data.user_features("train")
    sampler = TaskSampler(data.train, cfg.tasks, data.num_items, 3, 0, matrix)
    arrays = sampler.sample_arrays(16)
    np.testing.assert_array_equal(arrays["user_features"], matrix[arrays["users"]])
    batch = TaskSampler(data.train, cfg.tasks, data.num_items, 3, 0, matrix).sample(16)
    assert torch.equal(batch.user_features, torch.from_numpy(matrix[arrays["users"]]))
    assert torch.equal(batch.slice(2, 5).user_features, batch.user_features[2:5])
    with pytest.raises(ValueError, match="user-feature rows"):
        TaskSampler(data.train, cfg.tasks, data.num_items, 0, 0, matrix[:-1])


def test_without_features_the_model_is_the_id_only_one(feat, tiny_cfg):
    cfg, data = feat
    torch.manual_seed(0)
    plain = SeqRecommender(tiny_cfg.model, 40, seed=1)
    torch.manual_seed(0)
    same = SeqRecommender.for_data(tiny_cfg.model, 40, None, [], seed=1)
    assert same.layout is None and same.content is None and same.user_token is None
    assert plain.state_dict().keys() == same.state_dict().keys()
    for k, v in plain.state_dict().items():
        assert torch.equal(v, same.state_dict()[k]), k
    # features declared in the data but switched off in the model: ids only
    cfg.model.item_content, cfg.model.user_prefix = "off", False
    off = SeqRecommender.for_data(cfg.model, data.num_items, data.features, data.train)
    assert off.layout is None and off.content is None and off.user_token is None


def test_encode_user_reads_stated_values_and_rejects_unknown_names(feat):
    _, data = feat
    user = data.features.user
    row = encode_user(user, {"age": "24", "occupation": "astronaut"})
    # age 24 -> bucket "< 25" (id 2); gender not stated -> unknown; an unseen occupation -> unknown
    assert row.tolist() == [2, UNKNOWN, UNKNOWN]
    assert encode_user(user, {"gender": "M"})[1] == user["gender"].vocab.index("M")
    with pytest.raises(KeyError, match="unknown user feature 'height'.*age, gender, occupation"):
        encode_user(user, {"height": "180"})


@pytest.fixture(scope="module")
def feature_run(trained):
    """The run of the ``feat`` settings (features on, the built-in defaults), trained once per session."""
    return trained("train.eval_users=8", features=True, base=None)


@pytest.fixture(scope="module")
def feature_export(feature_run, tmp_path_factory) -> Path:
    return ckpt.export(feature_run.checkpoint, tmp_path_factory.mktemp("feature-export") / "export")


def test_export_keeps_feature_vocabularies_and_gives_the_same_scores(feature_run, feature_export):
    cfg, data = feature_run.cfg, feature_run.data
    model = feature_run.trainer.model.eval()
    loaded = ckpt.load_exported(feature_export)
    layout = loaded.model.layout
    assert layout == model.layout
    assert {s.name: s.vocab for s in layout.user} == {n: f.vocab for n, f in data.features.user.items()}
    assert [s.name for s in layout.item] == ["genres", "year", "title"]
    assert layout.item[0].vocab == data.features.item["genres"].vocab
    for name, buf in model.named_buffers():
        assert torch.equal(loaded.model.get_buffer(name), buf), name
    batch = _valid_batch(data, model, users=6)
    with torch.no_grad():
        want = _learner(model, cfg).score(batch, 2)
        got = _learner(loaded.model, loaded.cfg).score(batch, 2)
    torch.testing.assert_close(got, want)


def test_recommend_with_user_features_shows_titles_and_rejects_unknown_names(feature_export, capsys):
    args = ["recommend", "--checkpoint", str(feature_export), "--items", "3,5", "--k", "3"]
    assert main([*args, "--user", "age=24,gender=M,occupation=astronaut"]) == 0
    out = capsys.readouterr()
    ranked = [ln for ln in out.out.splitlines() if ln.strip()[:2].rstrip(".").isdigit()]
    assert len(ranked) == 3 and all("Movie" in ln for ln in ranked)  # titles shown
    assert "occupation='astronaut': not in the training vocabulary" in out.err

    assert main([*args, "--user", "height=180"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --user: unknown user feature 'height'") and "Traceback" not in err
    assert main([*args, "--user", "age"]) == 2
    assert "expected comma-separated name=value pairs" in capsys.readouterr().err


def _tiny_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "movie", "of", "kind", *map(str, range(10))]
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def test_titles_through_a_frozen_text_encoder_are_encoded_once_and_cached(feat, tmp_path, monkeypatch):
    from metarec_dist.models import text_encoder

    cfg, data = feat
    cfg.model.text_encoder = str(_tiny_bert(tmp_path / "bert"))
    cache = tmp_path / "text-cache"
    torch.manual_seed(0)
    model = SeqRecommender.for_data(cfg.model, data.num_items, data.features, data.train, cache_dir=cache)
    slot = next(k for k, s in enumerate(model.layout.item) if s.kind == "title")
    assert model.layout.text_dim == 8 and model.layout.item[slot].num_ids == 0
    text = getattr(model.content, f"text_{slot}")
    assert text[0].abs().sum() == 0 and text[-1].abs().sum() == 0  # padding item and BOS: no text
    assert (text[1:-1].abs().sum(1) > 0).all()
    assert len(list(cache.glob("*.npy"))) == 1

    def no_encoding(*args):
        raise AssertionError("the titles were encoded again instead of read from the cache")

    monkeypatch.setattr(text_encoder, "_encode", no_encoding)
    torch.manual_seed(0)
    again = SeqRecommender.for_data(cfg.model, data.num_items, data.features, data.train, cache_dir=cache)
    assert torch.equal(getattr(again.content, f"text_{slot}"), text)

    # an item's title vector is part of its score
    model.eval()
    learner = _learner(model, cfg)
    batch = _valid_batch(data, model)
    with torch.no_grad():
        base = learner.score(batch, 0)
        text[NEW] = text[NEW + 1]
        assert not torch.allclose(learner.score(batch, 0)[:, NEW - 1], base[:, NEW - 1])

    cfg.model.text_encoder = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="model.text_encoder .*nowhere"):
        SeqRecommender.for_data(cfg.model, data.num_items, data.features, data.train, cache_dir=cache)


class _Recording:
    """A scorer that records the user-feature ids each batch carries (scores: item id, for every user)."""

    def __init__(self, num_items: int) -> None:
        self.num_items, self.seen = num_items, []

    def score(self, batch, steps=None):
        self.seen.append(batch.user_features.clone())
        return torch.arange(self.num_items, dtype=torch.float).expand(batch.num_tasks, -1)


def test_evaluation_batches_carry_the_evaluated_users_features(feat):
    from metarec_dist.eval.protocol import ColdStartProtocol

    cfg, data = feat
    cfg.eval.batch_users = 3
    protocol = ColdStartProtocol(data, [1, 3], 5, cfg.eval)
    scorer = _Recording(data.num_items)
    feats = data.user_features("test")
    protocol.per_user(scorer, data.test, user_features=feats)
    # every user is kept (10+ items each): per shot count, the batches hold the users in order
    per_shot = torch.cat(scorer.seen).reshape(2, len(data.test), -1)
    for rows in per_shot:
        assert torch.equal(rows, torch.from_numpy(feats))


def test_leave_one_out_with_the_user_token_fits_the_positions(feat, tmp_path):
    cfg, _ = feat
    cfg.data.protocol = "loo"
    data = prepare_data(cfg.data).user_splits()
    # the window is max_seq_len - 2 items: one position for BOS, one for the user token
    out = MetaTrainer(cfg, LocalContext(None), data).fit()
    assert 0 <= out["val/loo_ndcg@10"] <= 1


def _settings(cfg) -> dict:
    """All of a config but where its run and its data files are."""
    tree = cfg.to_dict()
    del tree["runtime"], tree["data"]["path"]
    return tree


def test_resume_with_features_equals_the_uninterrupted_run(feat, feature_run, tmp_path):
    cfg, data = feat
    whole = feature_run.trainer  # two steps in one go, of the same settings on the same data
    assert _settings(feature_run.cfg) == _settings(cfg) and cfg.train.meta_steps == 2
    cfg.train.meta_steps = 1
    MetaTrainer(cfg, LocalContext(tmp_path / "parts"), data).fit()
    cfg.train.meta_steps = 2
    resumed = MetaTrainer(cfg, LocalContext(tmp_path / "parts"), data)
    out = resumed.fit()
    assert out["resumed_from"] == 1
    want = whole.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, want[name], msg=name)


def test_a_bag_is_the_mean_of_its_non_padding_ids():
    from metarec_dist.models.features import _bag_mean, _embedding

    torch.manual_seed(0)
    emb = _embedding(6, 4, 0.5)
    ids = torch.tensor([[[2, 3, 0], [0, 0, 0]], [[5, 0, 0], [1, 4, 2]]])
    got = _bag_mean(emb, ids)
    w = emb.weight
    want = torch.stack(
        [torch.stack([(w[2] + w[3]) / 2, torch.zeros(4)]), torch.stack([w[5], (w[1] + w[4] + w[2]) / 3])]
    )
    torch.testing.assert_close(got, want)
    got.sum().backward()
    assert emb.weight.grad[0].abs().max() == 0  # the padding row never trains


def test_user_features_and_text_encoder_need_what_they_read(feat, tiny_cfg, tmp_path):
    import dataclasses

    from metarec_dist.eval.loading import LoadedModel
    from metarec_dist.eval.recommend import encode_user_features

    cfg, data = feat
    plain = LoadedModel(SeqRecommender(tiny_cfg.model, 40), tiny_cfg, {"num_items": 40}, tmp_path)
    with pytest.raises(ValueError, match="--user: this model reads no user features"):
        encode_user_features(plain, {"age": "24"})
    no_titles = dataclasses.replace(
        data.features, item={k: f for k, f in data.features.item.items() if f.kind != "title"}
    )
    cfg.model.text_encoder = str(tmp_path)
    with pytest.raises(ValueError, match="model.text_encoder is set, but the data declares no title"):
        SeqRecommender.for_data(cfg.model, data.num_items, no_titles, data.train)


def _tiny_gpt2(folder: Path) -> Path:
    """A decoder encoder as users have them locally: its tokenizer has no padding token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "movie": 1, "of": 2, "kind": 3, **{str(i): 4 + i for i in range(10)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")
    assert tokenizer.pad_token is None
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_embd=8, n_layer=1, n_head=2, n_positions=64)
    GPT2Model(config).save_pretrained(folder)
    return folder


def test_a_decoder_text_encoder_without_a_pad_token_encodes_titles(tmp_path):
    from metarec_dist.models.text_encoder import encode_texts

    folder = _tiny_gpt2(tmp_path / "gpt2")
    vectors = encode_texts(str(folder), ["movie of kind 3", "movie 1", ""], cache_dir=tmp_path / "cache")
    assert vectors.shape == (3, 8)
    assert (np.abs(vectors[:2]).sum(1) > 0).all() and not vectors[2].any()  # padding does not leak in
    alone = encode_texts(str(folder), ["movie 1"], cache_dir=tmp_path / "cache")
    np.testing.assert_allclose(alone[0], vectors[1], atol=1e-5)


def test_a_folder_that_is_not_a_model_is_named_as_such(tmp_path):
    from metarec_dist.errors import UserError
    from metarec_dist.models.text_encoder import encode_texts

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")
    with pytest.raises(UserError, match=r"model.text_encoder .*notes.*: no config.json, so not a"):
        encode_texts(str(tmp_path / "notes"), ["a title"], cache_dir=tmp_path / "cache")


def test_a_text_encoder_with_nothing_to_encode_is_a_config_error(tmp_path):
    title = ["data.format=csv", "data.path=log.csv", "data.item_features_path=items.csv"]
    encoder = f"model.text_encoder={tmp_path}"
    with pytest.raises(
        ValueError, match="model.text_encoder: it encodes item titles, and data.item_features"
    ):
        load_config(None, [encoder])
    with pytest.raises(ValueError, match="model.text_encoder: .*model.item_content=off"):
        load_config(
            None, [encoder, *title, "data.item_features=[{name: t, kind: title}]", "model.item_content=off"]
        )
    cfg = load_config(None, [encoder, *title, "data.item_features=[{name: t, kind: title}]"])
    assert cfg.model.text_encoder == str(tmp_path)


def test_a_missing_relative_text_encoder_path_names_the_folder_it_was_read_from(tmp_path, monkeypatch):
    from metarec_dist.errors import UserError
    from metarec_dist.models.text_encoder import encode_texts

    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        UserError, match=rf"'enc/bert': not a folder \(relative to the current folder {tmp_path}\)"
    ):
        encode_texts("enc/bert", ["a title"], cache_dir=tmp_path / "cache")
