"""Session 20: W&B run ids and offline folders of runs started together.

Two runs with different run names launched at once (offline) got one W&B run id when their names were
alike in their first 48 characters (a sweep's long names differing in a seed at the end) or alike but
for characters W&B ids lack ('lr0.1' and 'lr0-1'): the id kept 48 characters and hashed only the storage
path, so both logged to one W&B run (online at the same time, or merged by `wandb sync`), and with cloud
storage (no run folder: one WANDB_DIR) could share an offline folder. A name kept whole keeps its id.

W&B's own part: two sessions of one run id in one folder in the same second (a resume right after a start,
a restarted worker) are written to ``offline-run-<second>-<id>`` and ``...-<id>-1`` (wandb 0.31); the
summary's `wandb sync` line missed the second."""

from __future__ import annotations

import hashlib

from metarec_dist.config import load_config
from metarec_dist.metrics.wandb_logger import run_id
from metarec_dist.run_folder import storage_root
from metarec_dist.train.summary import wandb_lines


def test_run_names_alike_in_their_first_48_characters_or_but_for_a_dot_get_their_own_ids():
    stem = "sweep-coldstart-ml100k-fomaml-hidden64-lr0-001-seed"  # 51 characters
    assert run_id(f"{stem}0", "/runs") != run_id(f"{stem}1", "/runs")  # before: both ...-s-<hash of /runs>
    assert run_id("lr0.1", "/runs") != run_id("lr0-1", "/runs")
    assert run_id(f"{stem}0", "/runs") != run_id(f"{stem}0", "/other")
    assert run_id(f"{stem}0", "/runs").startswith(stem[:48] + "-")
    assert len(run_id("x" * 200, "/runs")) <= 64  # W&B's limit


def test_a_name_kept_whole_keeps_its_id():
    """Ids of runs before this change, which a resume goes on logging to."""
    assert run_id("wb18", "/runs") == "wb18-" + hashlib.sha1(b"/runs").hexdigest()[:8]


def test_the_sync_line_names_a_session_w_and_b_suffixed_in_the_same_second(tmp_path):
    cfg = load_config(
        None, ["logging.wandb=offline", f"runtime.storage_path={tmp_path}", "runtime.run_name=r"]
    )
    rid = run_id("r", storage_root(cfg.runtime))
    names = [
        f"offline-run-20261204_181739-{rid}",
        f"offline-run-20261204_181739-{rid}-1",  # W&B's name for the second session of that second
        f"offline-run-20261204_181739-{rid}-2",
        f"offline-run-20261204_190000-{rid}",
    ]
    for name in [*names, "offline-run-20261204_181739-other-0123abcd"]:
        (tmp_path / "r" / "wandb" / name).mkdir(parents=True)
    lines = wandb_lines(cfg, str(tmp_path / "r"))
    expected = " ".join(str(tmp_path / "r" / "wandb" / n) for n in names)
    assert lines[-1] == f"W&B sync:   wandb sync {expected}"  # before: the -1 and -2 sessions missing
