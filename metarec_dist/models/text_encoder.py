"""Titles through a frozen ``transformers`` text encoder (``model.text_encoder: /local/folder``).

The encoder never trains: every title is encoded once (mean of the last hidden states over its tokens),
and the vectors are cached on disk, keyed by the encoder folder's files and the titles themselves, so a
resumed run, another rank or the next run reads them back instead of encoding again. The model learns only
a projection of these vectors (``models/features.py``). Nothing is downloaded: the folder is local.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from metarec_dist.data.features import FeatureTables
from metarec_dist.errors import UserError

log = logging.getLogger(__name__)

MAX_TOKENS = 64
BATCH = 64


def default_cache_dir() -> Path:
    env = os.environ.get("METAREC_CACHE_DIR")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "metarec") / "text"


def _fingerprint(folder: Path) -> list[list]:
    """The encoder folder's files (name, size, mtime): a changed encoder is a new cache entry."""
    return sorted(
        [str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns]
        for p in folder.rglob("*")
        if p.is_file()
    )


def cache_key(folder: Path, texts: list[str]) -> str:
    blob = json.dumps(
        {
            "encoder": str(folder.resolve()),
            "files": _fingerprint(folder),
            "max_tokens": MAX_TOKENS,
            "texts": texts,
        }
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def encode_texts(path: str, texts: list[str], cache_dir: Path | None = None) -> np.ndarray:
    """``[N, D]`` float32 mean-pooled vectors of ``texts`` (zeros for an empty text), cached."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        # A relative path is read from the current folder: a run evaluated from elsewhere misses it
        where = "" if folder.is_absolute() else f" (relative to the current folder {Path.cwd()})"
        raise UserError(
            f"model.text_encoder {path!r}: not a folder{where}; give the local folder that "
            "`save_pretrained` wrote, by an absolute path"
        )
    if not (folder / "config.json").is_file():  # else transformers fails on the tokenizer, misleadingly
        raise UserError(
            f"model.text_encoder {path!r}: no config.json, so not a `transformers` model folder; give the "
            "folder that `model.save_pretrained(...)` and `tokenizer.save_pretrained(...)` wrote"
        )
    cache = (cache_dir or default_cache_dir()) / f"{cache_key(folder, texts)}.npy"
    if cache.is_file():
        return np.load(cache)
    vectors = _encode(folder, texts)
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.stem}.", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, vectors)
        os.replace(tmp, cache)  # atomic: a concurrent rank reads a whole file or encodes itself
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return vectors


@torch.no_grad()
def _encode(folder: Path, texts: list[str]) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        encoder = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    except (OSError, ValueError) as exc:
        raise UserError(f"model.text_encoder {str(folder)!r}: cannot load a text encoder: {exc}") from None
    _ensure_pad_token(tokenizer, folder)
    log.info("encoding %d titles with %s", len(texts), folder)
    out = []
    for lo in range(0, len(texts), BATCH):
        batch = [t or "" for t in texts[lo : lo + BATCH]]
        tokens = tokenizer(batch, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        hidden = encoder(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
        empty = torch.tensor([not t.strip() for t in batch])
        out.append(pooled.masked_fill(empty[:, None], 0.0).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.config.hidden_size), np.float32)


def _ensure_pad_token(tokenizer, folder: Path) -> None:
    """Decoder tokenizers (GPT-2, Llama) have no padding token; the padded positions are masked out of the
    mean, so any token will do: the end-of-text or unknown token stands in."""
    if tokenizer.pad_token is not None:
        return
    stand_in = tokenizer.eos_token or tokenizer.unk_token
    if stand_in is None:
        raise UserError(
            f"model.text_encoder {str(folder)!r}: the tokenizer has no padding, end-of-text or unknown "
            "token to pad a batch of titles with; save it with a pad_token"
        )
    tokenizer.pad_token = stand_in


def encode_titles(path: str, features: FeatureTables, cache_dir: Path | None = None) -> dict[str, np.ndarray]:
    """Per title feature of the items, ``[V + 1, D]`` vectors (row 0, the padding item, is zero)."""
    titles = {name: f for name, f in features.item.items() if f.kind == "title"}
    if not titles:
        raise ValueError(
            "model.text_encoder is set, but the data declares no title feature (data.item_features with "
            "kind: title)"
        )
    return {name: encode_texts(path, [str(t) for t in f.values], cache_dir) for name, f in titles.items()}
