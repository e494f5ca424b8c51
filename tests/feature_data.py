"""A small RecBole data set with side information whose features carry the taste structure of the
synthetic data (metarec_dist/data/synthetic.py): an item's genre is its taste group, a user's occupation
is the group of most of its items. Shared by the unit and integration tests of the model-side features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from metarec_dist.config import Config, load_config
from metarec_dist.data.synthetic import make_synthetic_sequences

GROUPS = 4
USER_FEATURES = [
    {"name": "age", "kind": "float", "boundaries": [25, 35, 45]},
    {"name": "gender", "kind": "token"},
    {"name": "occupation", "kind": "token"},
]
ITEM_FEATURES = [
    {"name": "genres", "kind": "token_seq", "column": "class"},
    {"name": "year", "kind": "float", "column": "release_year", "buckets": 3},
    {"name": "title", "kind": "title", "column": "movie_title"},
]


def write_feature_data(folder: Path, num_users: int = 80, num_items: int = 40, seed: int = 0) -> Path:
    """``folder/feat.inter`` (+ ``.user``, ``.item``); users first interact in id order (the newest users,
    the highest ids, are the test users of a time split)."""
    folder.mkdir(parents=True, exist_ok=True)
    seqs = make_synthetic_sequences(num_users, num_items, GROUPS, min_len=10, max_len=20, seed=seed)
    lines = [f"{u + 1}\t{i}\t{u * 1000 + t}\n" for u, s in enumerate(seqs) for t, i in enumerate(s.tolist())]
    (folder / "feat.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "".join(lines))
    users = []
    for u, s in enumerate(seqs):
        group = int(np.bincount((s - 1) % GROUPS, minlength=GROUPS).argmax())
        users.append(f"{u + 1}\t{18 + (u * 7) % 50}\t{'MF'[u % 2]}\tjob{group}\n")
    (folder / "feat.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\n" + "".join(users)
    )
    items = [
        f"{i}\tMovie {i} of kind {(i - 1) % GROUPS}\t{1950 + i}\tg{(i - 1) % GROUPS}\n"
        for i in range(1, num_items + 1)
    ]
    (folder / "feat.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + "".join(items)
    )
    return folder / "feat.inter"


def feature_config(tmp_path: Path, overrides: list[str] = (), base: str | None = None, **data) -> Config:
    """``base`` (a config file, or the defaults) with the feature data set as its ``data:`` section (the
    ``data`` keywords on top) and ``overrides``."""
    inter = write_feature_data(tmp_path / "feat")
    tree = yaml.safe_load(Path(base).read_text()) if base else {}
    tree["data"] = {
        "format": "recbole",
        "path": str(inter),
        "cache": False,
        "min_history": 1,
        "valid_frac": 0.15,
        "test_frac": 0.15,
        "user_features": USER_FEATURES,
        "item_features": ITEM_FEATURES,
        **data,
    }
    path = tmp_path / "features.yaml"
    path.write_text(yaml.safe_dump(tree))
    return load_config(path, list(overrides))
