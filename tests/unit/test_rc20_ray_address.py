"""Session 20 (rayaddr20): two ``RAY_ADDRESS`` values that made ``metarec train`` / ``evaluate --workers`` /
``serve`` hang inside ``ray.init`` (Ray printing "Timed out while waiting for GCS" every 30 s, measured
against a real head on 127.0.0.1 with Ray 2.60):

- ``RAY_ADDRESS=auto`` with the head started by ``ray start --head --node-ip-address=127.0.0.1`` (and
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, docs/cluster.md): Ray read ``127.0.0.1:PORT`` from its
  ``ray_current_cluster`` file and swapped it for the machine's address, where nothing listens. It is now
  resolved as Ray does and joined on loopback.
- ``RAY_ADDRESS=127.0.0.1:8265``, the dashboard / Jobs HTTP port: the port answers, so the reachability
  check passed. An HTTP server there is now one line naming the GCS address to use instead.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from metarec_dist.errors import UserError
from metarec_dist.runtime import ray_launcher

# What a gRPC server (the GCS, the Ray client server) sends first: an HTTP/2 SETTINGS frame (as captured
# from a Ray 2.60 GCS answering an HTTP/1.0 request).
GRPC_SETTINGS = b"\x00\x00\x18\x04\x00\x00\x00\x00\x00\x00\x04\x00@\x00\x00"


class _Dashboard(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<html>Ray Dashboard</html>")

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def http_server() -> Iterator[int]:
    """An HTTP server on a free loopback port, as the head's dashboard is; yields the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Dashboard)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def grpc_like_server() -> Iterator[int]:
    """A server that greets each connection as a gRPC server does; yields the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(GRPC_SETTINGS)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_temp(monkeypatch, tmp_path) -> Path:
    """Ray's temp folder (``$RAY_TMPDIR/ray``) of its own, and no GCS process found running on the machine
    (another cluster of this user would otherwise be what ``auto`` falls back to)."""
    from ray._private import services

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: frozenset())
    (tmp_path / "ray").mkdir()
    return tmp_path / "ray"


def started_head_at(ray_temp: Path, address: str) -> None:
    """What ``ray start --head`` records for ``ray.init(address="auto")``."""
    (ray_temp / "ray_current_cluster").write_text(address)


@pytest.mark.parametrize(
    ("recorded", "joined"),
    [
        ("127.0.0.1:6391", ("127.0.0.1:6391", "127.0.0.1")),
        # a head on the machine's address (no RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0): joined as Ray joins it
        ("10.0.0.5:6379", ("10.0.0.5:6379", "192.0.2.2")),
    ],
)
def test_auto_joins_the_head_that_ray_start_recorded(monkeypatch, ray_temp, recorded, joined):
    import ray
    from ray._private import ray_constants, services

    started_head_at(ray_temp, recorded)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(services, "node_ip_address_from_perspective", lambda address=None: "192.0.2.2")
    calls = []
    monkeypatch.setattr(
        ray,
        "init",
        lambda address, **kw: calls.append((address, services.resolve_ip_for_localhost("127.0.0.1"))),
    )
    ray_launcher.init_ray()
    # Ray's own resolution of a loopback head ("auto" -> 192.0.2.2:6391) is where nothing listens.
    assert calls == [joined]


def test_auto_with_no_cluster_started_here_is_one_line(monkeypatch, ray_temp):
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    with pytest.raises(
        UserError, match=r"^RAY_ADDRESS=auto: no Ray cluster was started on this machine .*:6379"
    ):
        ray_launcher.check_ray_address()


def test_auto_naming_a_stopped_head_is_one_line(monkeypatch, ray_temp):
    port = free_port()
    started_head_at(ray_temp, f"127.0.0.1:{port}")
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    with pytest.raises(
        UserError, match=rf"^RAY_ADDRESS=auto \(127.0.0.1:{port}\): no Ray cluster answers there"
    ):
        ray_launcher.check_ray_address()


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "localhost:{port}", "ray://127.0.0.1:{port}"])
def test_the_dashboard_port_is_one_line_naming_the_gcs_address(monkeypatch, form):
    with grpc_like_server() as port:  # the control: a GCS / Ray client server (gRPC) is left to Ray
        monkeypatch.setenv("RAY_ADDRESS", form.format(port=port))
        ray_launcher.check_ray_address()
    with http_server() as port:
        address = form.format(port=port)
        monkeypatch.setenv("RAY_ADDRESS", address)
        with pytest.raises(UserError, match=r"dashboard / Ray Jobs port .* GCS address HOST:6379") as said:
            ray_launcher.check_ray_address()
    assert str(said.value).startswith(f"RAY_ADDRESS={address}: an HTTP server answers there")
    assert "\n" not in str(said.value)


def test_auto_naming_the_dashboard_port_is_one_line(monkeypatch, ray_temp):
    with http_server() as port:
        started_head_at(ray_temp, f"127.0.0.1:{port}")
        monkeypatch.setenv("RAY_ADDRESS", "auto")
        with pytest.raises(UserError, match=rf"^RAY_ADDRESS=auto \(127.0.0.1:{port}\): an HTTP server"):
            ray_launcher.check_ray_address()


def test_an_http_address_is_one_line(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    with pytest.raises(
        UserError, match=r"^RAY_ADDRESS=http://127.0.0.1:8265: an HTTP address, .* GCS address"
    ):
        ray_launcher.check_ray_address()


@pytest.mark.parametrize(
    ("address", "fix"),
    [
        ("ray://127.0.0.1:6379", r"--ray-client-server-port \(10001 by default\)"),  # the GCS port: no client
        (
            "127.0.0.1:6392",
            r"the head's GCS address \(ray start --head --port, 6379 by default\)",
        ),  # a raylet
    ],
)
def test_ray_giving_up_on_the_server_there_is_one_line(monkeypatch, address, fix):
    """Both are gRPC servers, as a GCS or Ray client server is: Ray gave up after 20-30 s with a bare
    ``ConnectionError`` traceback (measured against a real head)."""
    import ray

    def not_what_it_says(address, **kw):
        raise ConnectionError(f"Failed to connect to Ray cluster at {address}")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", not_what_it_says)
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(
        UserError, match=rf"^RAY_ADDRESS={address}: no Ray cluster answers there as expected .*{fix}"
    ):
        ray_launcher.init_ray()


# Session 21 (ray21): RAY_ADDRESS=auto with other clusters running on the machine printed Ray's "Found
# multiple active Ray instances ... Connecting to latest cluster at ..." twice (``auto`` is resolved for the
# reachability check and again to join). Now one line of ours, naming the file the address came from, and
# whether that cluster is among those running (a stale record is not).
@pytest.mark.parametrize("stale", [False, True])
def test_auto_among_several_clusters_is_said_once(monkeypatch, ray_temp, caplog, capfd, stale):
    from ray._private import services

    monkeypatch.setattr(ray_launcher, "_SAID_OTHER_CLUSTERS", set(), raising=False)
    with grpc_like_server() as port:
        recorded = f"127.0.0.1:{port}"
        started_head_at(ray_temp, recorded)
        others = {"127.0.0.1:6391", "127.0.0.1:6392"}
        running = frozenset(others if stale else {*others, recorded})
        monkeypatch.setattr(services, "find_gcs_addresses", lambda: running)
        monkeypatch.setenv("RAY_ADDRESS", "auto")
        ray_launcher.check_ray_address()
        assert ray_launcher.joined_address() == recorded  # as init_ray resolves it again
    messages = [r.getMessage() for r in caplog.records] + capfd.readouterr().err.splitlines()
    assert not [m for m in messages if "Found multiple active Ray instances" in m]
    said = [m for m in messages if "Ray clusters run on this machine" in m]
    assert len(said) == 1
    assert f"joining {recorded}, the one the latest `ray start` recorded in {ray_temp}" in said[0]
    assert ("which is not one of them" in said[0]) == stale


# Session 21 (ray21): RAY_ADDRESS=ray://HOST:<GCS port>, or a raylet's port, took Ray's own time-outs before
# the one-line error (measured against a real head: 30 s and 20 s); a Ray client port without ray:// was
# joined as a GCS. One gRPC call of the service the address asks for now tells in milliseconds.
@contextmanager
def grpc_server(client: bool = False, gcs: bool = False) -> Iterator[int]:
    """A gRPC server on a free loopback port serving the Ray client's ``ClusterInfo`` and/or the GCS's
    ``GetClusterId`` (neither: a raylet, as seen from a client); yields the port."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc, ray_client_pb2, ray_client_pb2_grpc

    class Client(ray_client_pb2_grpc.RayletDriverServicer):
        def ClusterInfo(self, request, context):  # noqa: N802 (gRPC's name)
            return ray_client_pb2.ClusterInfoResponse(json="{}")

    class Gcs(gcs_service_pb2_grpc.NodeInfoGcsServiceServicer):
        def GetClusterId(self, request, context):  # noqa: N802 (gRPC's name)
            return gcs_service_pb2.GetClusterIdReply()

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    if client:
        ray_client_pb2_grpc.add_RayletDriverServicer_to_server(Client(), server)
    if gcs:
        gcs_service_pb2_grpc.add_NodeInfoGcsServiceServicer_to_server(Gcs(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


@pytest.mark.parametrize(
    ("scheme", "serves", "said"),
    [
        ("ray://", {"gcs": True}, "the server there is no Ray client server; the client port is the head's"),
        ("ray://", {}, "the server there is no Ray client server; the client port is the head's"),
        ("", {}, r"the server there is no Ray GCS \(a raylet's port\?\); give the head's GCS address"),
        ("", {"client": True}, r"that is a Ray client server; set RAY_ADDRESS=ray://127\.0\.0\.1:\d+ "),
    ],
)
def test_a_port_of_another_ray_server_is_one_line_at_once(monkeypatch, scheme, serves, said):
    with grpc_server(**serves) as port:
        address = f"{scheme}127.0.0.1:{port}"
        monkeypatch.setenv("RAY_ADDRESS", address)
        with pytest.raises(UserError, match=rf"^RAY_ADDRESS={address}: {said}"):
            ray_launcher.check_ray_address()


@pytest.mark.parametrize(("scheme", "serves"), [("ray://", {"client": True}), ("", {"gcs": True})])
def test_the_ray_server_the_address_asks_for_passes(monkeypatch, scheme, serves):
    with grpc_server(**serves) as port:
        monkeypatch.setenv("RAY_ADDRESS", f"{scheme}127.0.0.1:{port}")
        ray_launcher.check_ray_address()  # nothing said: ray.init joins it
