"""``RAY_ADDRESS=ray://...``: the Ray client server's "SIGTERM handler is not set because current thread is
not the main thread" (a warning about the server's own thread, streamed to the client) was the first line
of every ``metarec evaluate --workers N`` run through it; dropped, and every other streamed line kept."""

from __future__ import annotations

import logging

from metarec_dist.runtime.ray_launcher import quiet_client_server


def test_the_client_servers_sigterm_warning_is_dropped_and_other_lines_kept():
    logger = logging.getLogger("ray.util.client.logsclient")  # where Ray prints what the server streams
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    before = list(logger.filters)
    try:
        quiet_client_server()
        quiet_client_server()  # joined twice in one process: one filter
        assert len(logger.filters) == len(before) + 1
        logger.warning("SIGTERM handler is not set because current thread is not the main thread.")
        logger.warning("a task failed")
    finally:
        logger.removeHandler(handler)
        for f in logger.filters[len(before) :]:
            logger.removeFilter(f)
    assert seen == ["a task failed"]
