"""Where an evaluation runs its model: ``metarec evaluate --device``, the reproduction's runs, the GPU
sweep's ``evaluate_exports.py``.

``cpu`` (the default of ``metarec evaluate``: the numbers it always gave), ``cuda`` / ``cuda:N`` (one GPU;
refused in one line where torch sees none), or ``auto`` (the first GPU when torch sees one, else the CPU).
The protocol (``ColdStartProtocol.device``) builds each batch there and moves the model there; the ranking
runs where the scores are, and the per-user metrics come back to the CPU as numpy arrays. The training-free
baselines (popularity, co-occurrence, content kNN, random) score on the CPU whatever the device: their
numbers never depend on it.
"""

from __future__ import annotations

import torch

from metarec_dist.errors import UserError

CHOICES = ("auto", "cpu", "cuda", "cuda:N")


def resolve_device(text: str, flag: str = "--device") -> torch.device:
    """``text`` (one of ``CHOICES``) as a concrete device: ``auto`` -> ``cuda:0`` when torch sees a GPU,
    else ``cpu``; ``cuda`` -> the current GPU, with its index. A CUDA device torch cannot see, or another
    spelling, is a ``UserError`` naming ``flag``."""
    name = text.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's own "Expected one of cpu, cuda, ... device type at start of device string"
        device = None
    if device is None or device.type != "cuda":
        raise UserError(f"{flag} {text!r}: expected one of {', '.join(CHOICES)}")
    if not torch.cuda.is_available():
        raise UserError(
            f"{flag} {text}: no CUDA device is visible (torch.cuda.is_available() is False); use {flag} cpu"
        )
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= count:
        raise UserError(f"{flag} {text}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index)


def check_workers(
    device: torch.device, workers: int, named: str = "--workers", fix: str = "drop --workers"
) -> None:
    """``workers`` > 1 scores on Ray actors of one CPU each (``runtime/eval_pool.py``), which get no GPU: with
    a CUDA ``device`` it is refused (``named``: where the number was given; ``fix``: what to do) rather than
    run on the CPU under a ``cuda`` name. One process on one GPU scores ``eval.batch_users`` users at a
    time."""
    if device.type != "cpu" and workers > 1:
        raise UserError(
            f"{named} {workers}: the evaluation actors run on the CPU (one CPU each, no GPU), so they cannot "
            f"score on {device}; {fix} (one process scores on the GPU), or evaluate with --device cpu"
        )
