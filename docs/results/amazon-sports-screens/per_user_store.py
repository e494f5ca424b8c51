"""Per-user test results kept in the repository: a session's machine (and its ``runs/`` folder) may not be
there for the next session, and the paired intervals of a 3-seed mean need every seed's per-user values, not
only the published means. This keeps them beside the tables they back.

``evaluate_exports.py`` (and ``python -m metarec_dist.eval.reproduce``) leave
``<out>/per_user/<method>-s<seed>.pkl``: ``{label: (per_user, info)}`` with ``per_user`` = K -> metric ->
one value per test user. ``keep`` copies one into a compressed ``.npz`` (values exact, no pickle:
``numpy.load`` reads it without running code); ``load`` reads either form, so ``pair_repros.py`` pairs a
kept seed with a fresh one.

    python docs/results/amazon-sports-screens/per_user_store.py \\
        runs/cpu26/eval/per_user/cpu-b256-wd01-s1.pkl --dest docs/results/amazon-sports-screens/cpu26/per_user

and then an arm of ``pair_repros.py`` reads ``docs/results/amazon-sports-screens/cpu26:cpu-b256-wd01``.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

SEP = "|"  # label | K | metric; labels are method names such as "cpu-b256-wd01+cooc" (no "|")


Runs = dict[str, tuple[dict[int, dict[str, np.ndarray]], dict[str, Any]]]  # {label: (per_user, info)}


def load(stem: Path) -> Runs:
    """``<stem>.pkl`` if it is there, else the kept ``<stem>.npz``: ``{label: (per_user, info)}``."""
    pkl, npz = Path(f"{stem}.pkl"), Path(f"{stem}.npz")  # not with_suffix: a stem may hold a dot
    if pkl.is_file():
        return pickle.loads(pkl.read_bytes())
    if not npz.is_file():
        raise FileNotFoundError(f"no per-user results at {pkl} or {npz}: evaluate that seed first")
    return _read_npz(npz)


def _read_npz(npz: Path) -> Runs:
    runs: Runs = {}
    with np.load(npz, allow_pickle=False) as stored:
        infos = json.loads(str(stored["info"]))
        for key in stored.files:
            if key != "info":
                label, k, metric = key.split(SEP)
                runs.setdefault(label, ({}, infos[label]))[0].setdefault(int(k), {})[metric] = stored[key]
    return runs


def _flat(runs: Runs) -> dict[str, np.ndarray]:
    """``"label|K|metric"`` -> that label's per-user values at K."""
    return {
        SEP.join((label, str(k), metric)): np.asarray(values)
        for label, (per_user, _) in runs.items()
        for k, metrics in per_user.items()
        for metric, values in metrics.items()
    }


def keep(pkl: Path, dest: Path) -> Path:
    """Write ``pkl``'s results as ``dest/<same stem>.npz`` (atomically), check that it reads back equal, and
    return its path."""
    runs = pickle.loads(pkl.read_bytes())
    for label in runs:
        if SEP in label:
            raise ValueError(f"{pkl}: method label {label!r} contains {SEP!r}")
    arrays = _flat(runs)
    info = json.dumps({label: stored[1] for label, stored in runs.items()}, default=str)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{pkl.stem}.npz"
    tmp = dest / f".{pkl.stem}.tmp.npz"
    np.savez_compressed(tmp, info=np.array(info), **arrays)
    back = _flat(_read_npz(tmp))  # the written file itself, before it replaces anything
    if back.keys() != arrays.keys() or not all(np.array_equal(back[k], v) for k, v in arrays.items()):
        tmp.unlink()
        raise ValueError(f"{pkl}: the .npz written did not read back equal; nothing kept")
    tmp.replace(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description="keep per-user results (.pkl) as .npz in the repository")
    p.add_argument("pkl", nargs="+", type=Path)
    p.add_argument("--dest", type=Path, required=True)
    args = p.parse_args()
    for pkl in args.pkl:
        out = keep(pkl, args.dest)
        print(out, f"{out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
