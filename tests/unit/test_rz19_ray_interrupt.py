"""Ctrl-C of ``metarec train`` on Ray: the workers are stopped before the CLI says where a re-run resumes.
Ray Train ran on in its thread for a few seconds and could save another checkpoint after the message (and
after the run folder's lock and the users' scratch folder were released)."""

from __future__ import annotations

import pytest


def test_an_interrupt_stops_ray_before_it_goes_on(monkeypatch):
    import ray

    from metarec_dist.runtime import ray_launcher

    calls: list[str] = []
    monkeypatch.setattr(ray, "shutdown", lambda **kw: calls.append(f"shutdown {kw}"))

    def interrupted() -> None:
        calls.append("fit")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        try:
            ray_launcher.fit_until_stopped(interrupted)
        except KeyboardInterrupt:
            calls.append("message")  # what the CLI prints comes after the workers are gone
            raise
    assert calls == ["fit", "shutdown {'wait_for_processes': True}", "message"]


def test_a_run_that_ends_or_fails_keeps_ray_up(monkeypatch):
    """Ray stays for what follows (the summary; a failure's own handling, which names the worker's error)."""
    import ray

    from metarec_dist.runtime import ray_launcher

    calls: list[str] = []
    monkeypatch.setattr(ray, "shutdown", lambda **kw: calls.append("shutdown"))
    assert ray_launcher.fit_until_stopped(lambda: {"step": 4}) == {"step": 4}

    def failed() -> None:
        raise RuntimeError("a worker died")

    with pytest.raises(RuntimeError, match="a worker died"):
        ray_launcher.fit_until_stopped(failed)
    assert calls == []
