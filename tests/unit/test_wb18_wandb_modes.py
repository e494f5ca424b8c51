"""W&B settings from the environment (W&B offline): a mode W&B does not know, its old mode names, and a
WANDB_DIR it cannot write to."""

from __future__ import annotations

from pathlib import Path

import pytest

from metarec_dist.errors import UserError


@pytest.fixture(autouse=True)
def _fresh_wandb():
    """W&B reads WANDB_DIR once per process (its settings singleton): each test starts a fresh one."""
    import wandb

    wandb.teardown()
    yield
    wandb.teardown()


def _logger(directory: Path | None, setting: str = "offline"):
    from metarec_dist.metrics.wandb_logger import WandbLogger, wandb_mode

    return WandbLogger(
        "wb18", None, "wb18", "wb18-0123abcd", {}, wandb_mode(setting), directory, setting=setting
    )


@pytest.mark.parametrize("setting", ["auto", "offline"])
def test_an_unknown_wandb_mode_is_one_line_naming_the_variable(monkeypatch, tmp_path, setting):
    """Was: "error: 1 validation error for Settings" and four more lines of pydantic's, naming no variable
    (also with logging.wandb=offline: W&B validates its environment first)."""
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(UserError) as caught:
        _logger(tmp_path, setting)
    text = str(caught.value)
    assert text.startswith("WANDB_MODE=bogus: not a W&B mode;") and "\n" not in text, text


def test_the_old_offline_name_is_recorded_as_offline_with_its_folder(monkeypatch, tmp_path):
    """WANDB_MODE=dryrun (W&B's old name for offline) was recorded as mode "dryrun" with no folder to sync."""
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    logger = _logger(tmp_path, "auto")
    logger.close()
    assert logger.record["mode"] == "offline"
    assert Path(logger.record["sync_dir"]).parent == tmp_path / "wandb"


def test_a_wandb_dir_w_and_b_cannot_write_is_said(monkeypatch, tmp_path, caplog):
    """No local run folder (cloud storage): W&B quietly wrote the offline run to a temporary folder instead
    of an unwritable WANDB_DIR (here: below a file; permissions do not stop root)."""
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "a-file" / "wandb-dir"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with caplog.at_level("WARNING", logger="metarec"):
        logger = _logger(None)
    logger.close()
    assert "a-file/wandb-dir is not writable here: W&B writes this run's offline files to" in caplog.text
    assert str(Path(logger.record["sync_dir"]).parent) in caplog.text
    import shutil

    shutil.rmtree(logger.record["sync_dir"], ignore_errors=True)  # W&B's fallback folder: this test's run


def test_a_writable_wandb_dir_is_not_warned_about(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with caplog.at_level("WARNING", logger="metarec"):
        logger = _logger(None)
    logger.close()
    assert Path(logger.record["sync_dir"]).is_relative_to(tmp_path / "wandb-dir")
    assert "not writable" not in caplog.text
