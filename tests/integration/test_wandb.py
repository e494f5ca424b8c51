"""W&B offline: the run is read back from its .wandb file (internal format: pinned wandb version)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wandb_reader import PINNED_WANDB, read_run_when  # noqa: E402

pytestmark = pytest.mark.integration


def _train(tmp_path, *extra):
    from metarec_dist.config import load_config
    from metarec_dist.train.launch import train_local

    cfg = load_config(
        "configs/tiny.yaml",
        [
            "model.hidden_size=16",
            "meta.meta_batch_size=8",
            "train.log_every=2",
            "data.synthetic_users=60",
            "data.cache=false",
            "logging.wandb=offline",
            f"runtime.storage_path={tmp_path}",
            "runtime.run_name=wb",
            "logging.project=metarec-test",
            *extra,
        ],
    )
    return train_local(cfg)


def test_offline_run_has_the_metrics_config_and_eval_table(tmp_path, monkeypatch):
    import wandb

    if wandb.__version__ != PINNED_WANDB:
        pytest.skip(f"the .wandb reader is written for wandb {PINNED_WANDB}")
    monkeypatch.setenv("WANDB_API_KEY", "sk-test-secret-value-123456")  # must never reach the run
    monkeypatch.delenv("WANDB_MODE", raising=False)
    result = _train(
        tmp_path, "train.meta_steps=4", f"data.cache_dir={tmp_path}/s3:user:sk-test-secret-value-123456"
    )
    files = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    run = read_run_when(
        files[0], lambda r: r["run_id"] is not None and any("val/ndcg@10@k3" in h for h in r["history"])
    )
    assert run["run_id"].startswith("wb-")
    steps = [h for h in run["history"] if "loss" in h]
    assert [h["meta_step"] for h in steps] == [2, 4]
    for key in (
        "support_loss_before",
        "support_loss_after",
        "query_loss",
        "adaptation_gain",
        "tasks_per_s",
        "tokens_per_s",
        "peak_memory_gb",
        "lr",
        "grad_norm",
    ):
        assert key in steps[-1], key
    assert steps[-1]["loss"] == pytest.approx(result["loss"], rel=1e-6)
    assert steps[-1]["adaptation_gain"] == pytest.approx(
        steps[-1]["support_loss_before"] - steps[-1]["support_loss_after"], rel=1e-5
    )
    final = [h for h in run["history"] if "val/ndcg@10@k3" in h]
    assert final and final[-1]["val/ndcg@10@k3"] == pytest.approx(result["val/ndcg@10@k3"], rel=1e-6)
    assert any(h.get("eval/cold_start_table/_type") == "table-file" for h in run["history"])
    assert any(h.get("eval/cold_start_table_ndcg_vs_k/_type") == "image-file" for h in run["history"])
    config = json.dumps(run["config"])
    assert run["config"]["meta"]["algorithm"] == "fomaml"
    assert "sk-test-secret-value-123456" not in config and "sk-test-secret" not in files[
        0
    ].read_bytes().decode("latin-1")


def test_resumed_training_continues_the_same_wandb_run(tmp_path):
    _train(tmp_path, "train.meta_steps=2", "checkpoint.every=2")
    result = _train(tmp_path, "train.meta_steps=4")
    assert result["resumed_from"] == 2
    runs = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    ids = {read_run_when(r, lambda run: run["run_id"] is not None)["run_id"] for r in runs}
    assert len(runs) == 2 and len(ids) == 1 and None not in ids


def test_redaction_of_secrets(monkeypatch):
    from metarec_dist.metrics.redact import MASK, redact

    monkeypatch.setenv("RAY_AUTH_TOKEN", "tok-abcdef-0123")
    cfg = {
        "a": {"api_key": "xyz", "path": "s3://AKIA:SECRET@bucket/x", "note": "token tok-abcdef-0123 here"},
        "lr": 0.1,
        "tokens": 0,
    }
    out = redact(cfg)
    assert (
        out["a"]["api_key"] == MASK
        and "SECRET" not in out["a"]["path"]
        and out["a"]["path"].endswith("bucket/x")
    )
    assert "tok-abcdef-0123" not in out["a"]["note"] and out["lr"] == 0.1
