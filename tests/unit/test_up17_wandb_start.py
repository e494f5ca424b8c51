"""A W&B run that cannot start: one line naming logging.wandb, never W&B's traceback; ``auto`` falls back
to offline (the run still trains)."""

from __future__ import annotations

import pytest

from metarec_dist.errors import UserError
from metarec_dist.metrics.wandb_logger import WandbLogger


def _logger(tmp_path, mode, setting):
    return WandbLogger("metarec-test", None, "up17", "up17-0000", {"a": 1}, mode, tmp_path / "wandb", setting)


def test_online_without_a_key_is_one_line_naming_the_setting(tmp_path, monkeypatch):
    """The real wandb, no key anywhere (HOME without a .netrc): its UsageError becomes a UserError."""
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "cfg"))
    with pytest.raises(UserError) as err:
        _logger(tmp_path, "online", "online")
    text = str(err.value)
    assert text.startswith("logging.wandb=online: W&B could not start the run (") and "\n" not in text
    assert "--set logging.wandb=offline" in text and err.value.__cause__ is None
    assert "; online logging needs WANDB_API_KEY" in text


def _unreachable(calls):
    import wandb

    real = wandb.init

    def init(**kwargs):
        calls.append(kwargs["mode"])
        if kwargs["mode"] != "offline":  # None: WANDB_MODE decides, here online
            raise wandb.errors.CommError("Failed to get resume status: context deadline exceeded\nretrying")
        return real(**kwargs)

    return init


def test_auto_with_a_key_but_no_network_logs_offline(tmp_path, monkeypatch):
    import wandb

    calls: list = []
    monkeypatch.setattr(wandb, "init", _unreachable(calls))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    logger = _logger(tmp_path, "online", "auto")
    try:
        logger.log({"loss": 1.0}, 1)
    finally:
        logger.close()
    assert calls == ["online", "offline"]
    assert len(list((tmp_path / "wandb" / "wandb").glob("offline-run-*-up17-0000"))) == 1


@pytest.mark.parametrize("env_mode", [None, "online"])
def test_forced_online_without_network_is_an_error_not_a_fallback(tmp_path, monkeypatch, env_mode):
    """logging.wandb=online, or auto with WANDB_MODE=online: the user asked for online logging."""
    import wandb

    calls: list = []
    monkeypatch.setattr(wandb, "init", _unreachable(calls))
    setting = "online" if env_mode is None else "auto"
    mode = "online" if env_mode is None else None
    if env_mode:
        monkeypatch.setenv("WANDB_MODE", env_mode)
        calls_mode = None
    else:
        monkeypatch.delenv("WANDB_MODE", raising=False)
        calls_mode = "online"
    with pytest.raises(UserError, match=r"context deadline exceeded\); online logging needs") as err:
        _logger(tmp_path, mode, setting)
    assert str(err.value).startswith("WANDB_MODE=online: " if env_mode else "logging.wandb=online: ")
    assert calls == [calls_mode]


def test_the_loggers_built_before_a_failed_wandb_start_are_closed(tmp_path, monkeypatch):
    """The progress bar (an ``extra`` logger) ends its line, so the error is not printed glued to it."""
    from types import SimpleNamespace

    from metarec_dist.metrics.loggers import build_logger

    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "cfg"))
    closed: list = []
    bar = SimpleNamespace(log=lambda m, s: None, close=lambda: closed.append(True))
    cfg = SimpleNamespace(wandb="online", project="p", entity=None, verbose=False)
    with pytest.raises(UserError):
        build_logger(cfg, "up17", str(tmp_path), {}, True, tmp_path / "run", (bar,))
    assert closed == [True]


def test_a_bad_project_name_names_logging_project(tmp_path, monkeypatch):
    """Offline too: W&B refuses the name before writing anything; the error says which setting."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    with pytest.raises(UserError) as err:
        WandbLogger("bad/name", None, "up17", "up17-0000", {}, "offline", tmp_path / "wandb", "offline")
    text = str(err.value)
    assert text.startswith("logging.wandb=offline: W&B could not start the run (Invalid project name")
    assert "set logging.project / logging.entity" in text and "\n" not in text
