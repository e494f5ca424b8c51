"""The causal Transformer backbone, built from a ``transformers`` config and fed with ``inputs_embeds``.

We use the Hugging Face model classes rather than a hand-written block so that every architecture they
ship (GPT-2, Llama, ...) and their fused attention kernels come for free, and so that a backbone can start
from any local ``save_pretrained`` folder. Token embeddings are ours (item ids, not words): the backbone's
own input table is shrunk to one row and frozen.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig

from metarec_dist.config import ModelConfig


def _gpt2_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    return dict(
        n_embd=cfg.hidden_size,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        n_inner=cfg.ffn_size,
        n_positions=cfg.max_seq_len,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        initializer_range=cfg.init_std,
    )


def _llama_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    return dict(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        intermediate_size=cfg.ffn_size,
        max_position_embeddings=cfg.max_seq_len,
        attention_dropout=cfg.dropout,
        initializer_range=cfg.init_std,
    )


# arch name -> (transformers model_type, kwargs builder). Adding an architecture is one line here.
ARCHITECTURES = {"gpt2": ("gpt2", _gpt2_kwargs), "llama": ("llama", _llama_kwargs)}


def backbone_config(cfg: ModelConfig) -> PretrainedConfig:
    model_type, kwargs = ARCHITECTURES[cfg.arch]
    return AutoConfig.for_model(
        model_type,
        vocab_size=1,
        use_cache=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        **kwargs(cfg),
    )


def build_backbone(cfg: ModelConfig) -> nn.Module:
    """A ``transformers`` base model (no LM head); from ``cfg.pretrained_path`` when set."""
    if cfg.pretrained_path:
        try:
            model = AutoModel.from_pretrained(cfg.pretrained_path, use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"model.pretrained_path {cfg.pretrained_path!r}: cannot load a backbone: {exc}"
            ) from None
        if model.config.hidden_size != cfg.hidden_size:
            raise ValueError(
                f"model.pretrained_path has hidden_size {model.config.hidden_size}, "
                f"but model.hidden_size is {cfg.hidden_size}"
            )
    else:
        model = AutoModel.from_config(backbone_config(cfg), attn_implementation="sdpa")
    # Items come in through inputs_embeds; the word table is unused, so keep it out of the optimizer.
    model.get_input_embeddings().requires_grad_(False)
    return model


def run_backbone(backbone: nn.Module, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Final hidden states [B, L, d]. Sequences are left-padded, so positions are counted from the first
    real token: GPT-2's learned positions then see the same numbers whatever the padding."""
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    out = backbone(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids)
    return out.last_hidden_state
