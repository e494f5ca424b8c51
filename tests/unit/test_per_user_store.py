"""Per-user results kept in the repository (``per_user_store.py``): the ``.npz`` holds every value of the
evaluation's pickle exactly, ``pair_repros.py`` pairs a kept seed as it pairs a fresh one, and a missing
seed is named with what to do."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCREENS = Path(__file__).resolve().parents[2] / "docs" / "results" / "amazon-sports-screens"
sys.path.insert(0, str(SCREENS))
import per_user_store  # noqa: E402  (a results script, not a package module)


def _runs(seed: int, shift: float) -> dict:
    rng = np.random.default_rng(seed)
    per_user = {k: {"ndcg@10": rng.random(50) + shift, "recall@10": rng.random(50)} for k in (1, 3)}
    return {"m": (per_user, {"adaptation": [1, 0.25], "seed": seed}), "m+cooc": (per_user, {"fusion": 0.5})}


def _write(folder: Path, stem: str, runs: dict) -> Path:
    path = folder / "per_user" / f"{stem}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(runs))
    return path


def test_kept_npz_round_trips_exactly(tmp_path):
    runs = _runs(0, 0.0)
    kept = per_user_store.keep(_write(tmp_path / "fresh", "m-s0", runs), tmp_path / "kept")
    assert kept == tmp_path / "kept" / "m-s0.npz"
    back = per_user_store.load(tmp_path / "kept" / "m-s0")
    assert set(back) == {"m", "m+cooc"}
    for label, (per_user, info) in runs.items():
        assert back[label][1] == info
        for k, metrics in per_user.items():
            for metric, values in metrics.items():
                np.testing.assert_array_equal(back[label][0][k][metric], values)
                assert back[label][0][k][metric].dtype == values.dtype


def test_load_prefers_the_pickle_and_names_a_missing_seed(tmp_path):
    _write(tmp_path, "m-s0", _runs(0, 0.0))
    per_user_store.keep(_write(tmp_path / "other", "m-s0", _runs(1, 5.0)), tmp_path / "per_user")
    assert per_user_store.load(tmp_path / "per_user" / "m-s0")["m"][1]["seed"] == 0
    with pytest.raises(FileNotFoundError, match=r"m-s7\.pkl or .*m-s7\.npz: evaluate that seed first"):
        per_user_store.load(tmp_path / "per_user" / "m-s7")


def test_pair_repros_pairs_a_kept_seed_with_a_fresh_one(tmp_path):
    for seed in (0, 1):
        _write(tmp_path / "fresh", f"m-s{seed}", _runs(seed, 0.0))
        pkl = _write(tmp_path / "old", f"b-s{seed}", {"b": _runs(seed + 10, 0.0)["m"]})
        per_user_store.keep(pkl, tmp_path / "kept" / "per_user")
    out = tmp_path / "pairs.json"
    cmd = [
        sys.executable,
        str(SCREENS / "pair_repros.py"),
        "--json",
        str(out),
        "--seeds",
        "0,1",
        "--n-boot",
        "50",
    ]
    cmd += ["--arm", f"a={tmp_path / 'fresh'}:m", "--arm", f"b={tmp_path / 'kept'}:b", "--pair", "a=b"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    doc = json.loads(out.read_text())  # values rounded to 6 places
    a = np.mean([_runs(s, 0.0)["m"][0][3]["ndcg@10"] for s in (0, 1)])
    b = np.mean([_runs(s + 10, 0.0)["m"][0][3]["ndcg@10"] for s in (0, 1)])
    assert doc["methods"]["b"]["metrics"]["3"]["ndcg@10"]["mean"] == pytest.approx(b, abs=1e-6)
    assert doc["paired"][0]["diff"]["3"]["ndcg@10"]["diff"] == pytest.approx(a - b, abs=1e-6)


def test_keep_refuses_a_file_that_does_not_read_back_equal(tmp_path, monkeypatch):
    read = per_user_store._read_npz

    def altered(npz):
        runs = read(npz)
        runs["m"][0][1]["ndcg@10"][0] += 1.0
        return runs

    monkeypatch.setattr(per_user_store, "_read_npz", altered)
    with pytest.raises(ValueError, match=r"m-s0\.pkl: the \.npz written did not read back equal"):
        per_user_store.keep(_write(tmp_path, "m-s0", _runs(0, 0.0)), tmp_path / "kept")
    assert list((tmp_path / "kept").iterdir()) == []  # nothing kept, no temporary left
