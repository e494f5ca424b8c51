"""Free loopback ports for the processes a test starts (a Ray head and its components)."""

from __future__ import annotations

import socket


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now. The sockets stay open until all are drawn: drawn one at a
    time, a port just closed can come back (2 in 1,000 draws of 8), and Ray refuses a head given one port for
    two of its components."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
