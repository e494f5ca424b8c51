"""Session 19 (raycluster19): ``metarec train`` with ``RAY_ADDRESS`` naming a port nothing listens on (a
head not started yet, a typo) waited for ever, Ray printing "Timed out while waiting for GCS" every 30 s
(killed after 150 s). It now stops at once with one line naming RAY_ADDRESS."""

from __future__ import annotations

import socket

import pytest

from metarec_dist.errors import UserError
from metarec_dist.runtime.ray_launcher import check_reachable


def test_an_address_nothing_listens_on_is_one_line(monkeypatch):
    from metarec_dist.runtime import ray_launcher

    monkeypatch.setattr(ray_launcher, "PROBE_S", 0.1)  # this server never says what it is
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        check_reachable(f"127.0.0.1:{port}")  # a head there: Ray joins it
        check_reachable(f"ray://localhost:{port}")
    with pytest.raises(UserError, match=rf"RAY_ADDRESS=127.0.0.1:{port}: no Ray cluster answers there"):
        check_reachable(f"127.0.0.1:{port}")


@pytest.mark.parametrize("address", ["auto", "ray://head", "127.0.0.1:notaport", "ray://[::1"])
def test_what_is_not_host_and_port_is_left_to_ray(address):
    check_reachable(address)  # Ray resolves "auto" and says what is wrong with a malformed address


def test_serve_with_an_address_nothing_listens_on_is_one_line(monkeypatch):
    """`metarec serve` joined through RAY_ADDRESS: the same one line before Ray is started or joined."""
    from metarec_dist.runtime import serving

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(UserError, match="no Ray cluster answers there"):
        serving.deploy(object(), {}, replicas=1, threads=1, max_body=1024, joined=True)
