from __future__ import annotations

import pytest
import torch

from metarec_dist.config import load_config
from metarec_dist.models.backbone import build_backbone
from metarec_dist.models.recommender import SeqRecommender

TINY = ["model.hidden_size=16", "model.num_heads=2", "model.adapter_rank=2"]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_backbone_starts_from_a_local_pretrained_folder(tmp_path, arch):
    cfg = load_config(None, [*TINY, f"model.arch={arch}"])
    torch.manual_seed(0)
    pretrained = build_backbone(cfg.model)
    pretrained.save_pretrained(tmp_path / "bb")
    cfg2 = load_config(None, [*TINY, f"model.arch={arch}", f"model.pretrained_path={tmp_path / 'bb'}"])
    torch.manual_seed(1)
    model = SeqRecommender(cfg2.model, num_items=20)
    for (name, a), b in zip(
        pretrained.state_dict().items(), model.backbone.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def test_bad_pretrained_folder_is_a_clear_error(tmp_path):
    cfg = load_config(None, [*TINY, f"model.pretrained_path={tmp_path / 'nothing'}"])
    with pytest.raises(ValueError, match="model.pretrained_path"):
        SeqRecommender(cfg.model, num_items=20)


def test_scores_are_tied_to_the_item_table_and_init_fast_weights_change_nothing():
    cfg = load_config(None, [*TINY, "model.adapters=[lowrank,film,bias]"])
    model = SeqRecommender(cfg.model, num_items=30)
    h = torch.randn(4, 16)
    w = torch.zeros(4, model.head.size)  # lowrank B = 0, film = identity, bias = 0 -> plain tied scores
    w[:, : 16 * 2] = torch.randn(16 * 2)  # A can be anything while B is zero
    torch.testing.assert_close(model.score_all(h, w), h @ model.item_emb.weight[1:31].T)
    assert model.item_emb.weight.shape == (32, 16)  # pad + 30 items + BOS
    assert not model.backbone.get_input_embeddings().weight.requires_grad


def test_item_side_adapter_is_a_low_rank_update_of_the_item_table():
    """``itemlr``: scores ``h' (E + F U^T)^T`` with the slow item factor ``F`` (a model parameter) and the
    fast ``U``, after the user-side adapters; at ``U = 0`` nothing changes; chunks of the table read the
    matching rows of ``F``."""
    cfg = load_config(None, [*TINY, "model.adapters=[lowrank,itemlr]"])
    torch.manual_seed(0)
    model = SeqRecommender(cfg.model, num_items=30)
    d, r = 16, 2
    factors = model.item_factors.weight
    assert factors.shape == (30, r) and model.head.size == 2 * d * r + d * r
    h, w = torch.randn(4, d), torch.randn(4, model.head.size)
    a, b = w[:, : d * r].view(4, d, r), w[:, d * r : 2 * d * r].view(4, r, d)
    u = w[:, 2 * d * r :].view(4, d, r)
    hp = h + torch.einsum("td,tdr,tre->te", h, a, b)  # the user-side lowrank first
    table = model.item_emb.weight[1:31]
    per_task_table = table + torch.einsum("vr,tdr->tvd", factors, u)  # E_t = E + F U_t^T
    expected = torch.einsum("td,tvd->tv", hp, per_task_table)
    torch.testing.assert_close(model.score_all(h, w), expected)
    torch.testing.assert_close(model.score_range(model.user_state(h, w), 7, 19), expected[:, 7:19])
    w[:, 2 * d * r :] = 0  # U = 0: the user-side adapter alone
    torch.testing.assert_close(model.score_all(h, w), hp @ table.T)
    plain = SeqRecommender(load_config(None, TINY).model, num_items=30)
    assert plain.item_factors is None and not any("item_factors" in k for k in plain.state_dict())


def test_unknown_adapter_is_a_config_error():
    with pytest.raises(ValueError, match="model.adapters: unknown"):  # at load time, before any model
        load_config(None, [*TINY, "model.adapters=[lora]"])
