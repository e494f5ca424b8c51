"""SIGTERM as Ctrl-C, for the commands that clean up after an interrupt (``metarec train``, ``evaluate``).

A scheduler's or ``kill``'s stop then unwinds through the same ``except KeyboardInterrupt`` as Ctrl-C: the
command says what it stopped and stops what it started, instead of vanishing (or, once Ray is up, ending in
Ray's own handler's stack dump). ``runtime/ray_launcher.py: init_ray`` puts this handler back over the one
``ray.init`` installs."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM raises KeyboardInterrupt in the main thread; the previous handler after."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers: main thread only
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
