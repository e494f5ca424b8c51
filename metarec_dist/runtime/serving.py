"""``metarec serve``: an exported model behind HTTP on Ray Serve.

Each replica is a Ray Serve deployment holding one :class:`~metarec_dist.eval.recommend.Recommender` (the
same code as ``metarec recommend``: adaptation on the user's history, the fusion with the co-occurrence
counts of a fused export, seen items never re-recommended). Requests:

- ``POST /recommend`` with JSON ``{"items": ["12", "55"], "user": {"age": "24"}, "k": 10}`` (``items``: raw
  ids, oldest first; ``user``: stated features, for a model trained with ``data.user_features``; either may
  be left out, not both) -> ``{"items": [{"rank", "item", "title", "score"}, ...]}``. A mistake in the
  request is HTTP 400 with ``{"error": "..."}`` saying which field.
- ``GET /`` -> what is served (algorithm, items, fusion weight, replicas).

A cluster this process starts listens on 127.0.0.1 only (``init_ray``), and so does the HTTP proxy unless
``--host`` says otherwise. On a multi-node cluster (``RAY_ADDRESS``) the export folder must be readable at
the same path on every node that runs a replica.
"""

from __future__ import annotations

import errno
import json
import logging
import signal
import socket
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("metarec")

APP_NAME = "metarec"
# The proxy must come up before Ray Serve's readiness check gives up on it (5 s by default): its worker
# imports Ray Serve, FastAPI and uvicorn at a low CPU priority, which on a busy 2-core machine took ~60 s.
SERVE_ENV = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "120"}
PROXY_WAIT_S = 600.0  # how long `metarec serve` waits for its first answer before giving up


def read_body(raw: bytes) -> Any:
    """A request body's JSON; ``ValueError`` if it is not JSON (or not UTF-8), or nested too deeply for
    the decoder (a ``RecursionError`` there would be an HTTP 500)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("the request body is not JSON this server reads: nested too deeply") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError("the request body is not JSON (UTF-8)") from None


def parse_request(body: Any) -> tuple[list[str], dict[str, str] | None, int]:
    """``(items, user, k)`` from a request's JSON; ``ValueError`` naming the field that is wrong."""
    if not isinstance(body, dict):
        raise ValueError('the request body must be a JSON object, e.g. {"items": ["12", "55"], "k": 10}')
    unknown = sorted(set(body) - {"items", "user", "k"})
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}: expected items, user, k")
    items, user, k = body.get("items", []), body.get("user"), body.get("k", 10)
    if not isinstance(items, list) or not all(_is_id(i) for i in items):
        raise ValueError('"items" must be a list of item ids (strings or integers), oldest first')
    if user is not None and (
        not isinstance(user, dict)
        or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in user.values())
    ):
        raise ValueError('"user" must be an object of feature values, e.g. {"age": "24", "gender": "M"}')
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f'"k" must be an integer, got {k!r}')
    if k < 1:
        raise ValueError(f'"k" must be >= 1, got {k}')
    if not items and not user:
        raise ValueError('give the user\'s history ("items") or, for a model with user features, "user"')
    # An empty user object states nothing: the same as none (a model without user features accepts it).
    return [str(i) for i in items], {n: str(v) for n, v in user.items()} if user else None, k


def _is_id(item: Any) -> bool:
    return isinstance(item, (str, int)) and not isinstance(item, bool)  # true is no item id


class RecommenderReplica:
    """One replica: the model loaded once; requests answered one at a time."""

    def __init__(self, checkpoint: str, fuse: bool, threads: int) -> None:
        import torch

        from metarec_dist.eval.recommend import JSON_FIELDS, Recommender

        torch.set_num_threads(threads)
        self.recommender = Recommender.load(checkpoint, fuse=fuse)
        self.checkpoint = checkpoint
        self.lock = threading.Lock()  # one request at a time: the adapting model is not shared by threads
        self.fields = JSON_FIELDS  # errors name the request's JSON fields, not `metarec recommend`'s flags

    def describe(self) -> dict[str, Any]:
        loaded, fusion = self.recommender.loaded, self.recommender.fusion
        return {
            "checkpoint": self.checkpoint,
            "algorithm": loaded.algorithm,
            "num_items": int(loaded.meta["num_items"]),
            "fusion_weight": None if fusion is None else fusion.weight,
        }

    def answer(self, body: Any) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON) for one ``/recommend`` request."""
        try:
            items, user, k = parse_request(body)
            with self.lock:
                recs = self.recommender(items, k, user, self.fields)
        except ValueError as exc:  # the user's mistake (unknown item, k too large, ...): said, not a 500
            return 400, {"error": str(exc)}
        return 200, {
            "items": [{"rank": r.rank, "item": r.raw_id, "title": r.title, "score": r.score} for r in recs]
        }


def bind_replica_grpc_to_loopback() -> None:
    """Keep a replica's inter-deployment gRPC server on 127.0.0.1 when the cluster is this machine only.

    Ray Serve (2.60) starts it on ``[::]:0`` -- every interface, plaintext -- whatever the node address, so a
    cluster that ``init_ray`` keeps on loopback would still have a port anyone on the network reaches. When
    the node address is loopback, the address is rewritten for this replica process (called from the
    replica's constructor, before Ray Serve starts that server); on a real multi-node cluster it is left
    as Ray Serve wants it, for the other nodes. tests/integration/test_serve.py lists every listening socket.
    """
    import ipaddress

    import ray
    from ray.serve._private import replica

    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "loopback_only", False):
        return
    if not ipaddress.ip_address(ray.util.get_node_ip_address()).is_loopback:
        return

    def loopback_only(server: Any, address: str) -> Any:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        return original(server, address)

    loopback_only.loopback_only = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = loopback_only


def build_app(checkpoint: str, fuse: bool, replicas: int, threads: int) -> Any:
    """The Ray Serve application: ``replicas`` copies of the model behind the ingress."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    @serve.deployment(name="recommender", ray_actor_options={"num_cpus": threads})
    class RecommenderDeployment:
        def __init__(self) -> None:
            bind_replica_grpc_to_loopback()
            self.replica = RecommenderReplica(checkpoint, fuse, threads)

        async def __call__(self, request: Request) -> JSONResponse:
            path = request.url.path.rstrip("/")
            if request.method == "GET" and path == "":
                return JSONResponse({**self.replica.describe(), "replicas": replicas})
            if path != "/recommend" or request.method != "POST":
                return JSONResponse({"error": "POST /recommend, or GET / for the model"}, status_code=404)
            try:
                body = read_body(await request.body())
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            status, out = self.replica.answer(body)
            return JSONResponse(out, status_code=status)

    return RecommenderDeployment.options(num_replicas=replicas).bind()


def wait_until_answering(url: str, timeout_s: float = PROXY_WAIT_S) -> None:
    """Return once ``GET url/`` answers (the proxy and a replica are both up); ``RuntimeError`` after
    ``timeout_s``. ``serve.run`` returns when the replicas are ready, which can be before the proxy is."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url + "/", timeout=10):
                return
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() > deadline:
                message = f"Ray Serve did not answer at {url} within {timeout_s:.0f} s: {exc}"
                raise RuntimeError(message) from exc
            time.sleep(1.0)


def check_port_free(host: str, port: int) -> None:
    """``UserError`` when something already listens on ``host:port``.

    Checked before Ray starts: a second `metarec serve` on a taken port would otherwise start its own
    cluster, whose proxy cannot bind, and then find the first server answering the readiness check -- and
    claim to serve a model it does not. SO_REUSEADDR as uvicorn sets it: a port left in TIME_WAIT by a
    stopped server is free to it, a listening one is not (Linux)."""
    from metarec_dist.errors import UserError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise UserError(f"--host {host}: not an address this machine resolves ({exc.strerror})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(
                    f"--port {port} on {host} is in use (another metarec serve?); stop it or pass another "
                    "--port"
                ) from None
            # Not this machine's address (EADDRNOTAVAIL), a privileged port (EACCES): say which.
            raise UserError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None


def check_loads(checkpoint: str, fuse: bool) -> None:
    """Load the model once here, as every replica will: a damaged export (a truncated model.safetensors,
    a broken config) is then the replica's one-line ``UserError`` now, not Ray Serve's "Deploying
    application metarec failed" traceback that, with the workers' logs quiet, does not say why."""
    from metarec_dist.eval.recommend import Recommender

    Recommender.load(checkpoint, fuse=fuse)  # dropped at once: the replicas hold their own copies


def serve_model(
    checkpoint: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    fuse: bool = True,
    threads: int = 1,
    ready: Any = None,
) -> None:
    """Deploy ``checkpoint`` and serve until interrupted (Ctrl-C or SIGTERM), then shut Serve down.
    ``ready``: called with the URL once the application answers (the CLI prints it)."""
    import os

    from metarec_dist.errors import UserError

    if replicas < 1:
        raise UserError(f"--replicas must be >= 1, got {replicas}")
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    if not 0 < port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    if not os.environ.get("RAY_ADDRESS"):  # joined with RAY_ADDRESS, the proxy listens on that cluster
        check_port_free(host, port)
    # Resolved here first: a wrong path is one line now, not a replica failing inside Ray.
    from metarec_dist.eval.loading import resolve_checkpoint

    checkpoint = str(resolve_checkpoint(checkpoint).resolve())
    check_loads(checkpoint, fuse)
    for key, value in SERVE_ENV.items():
        os.environ.setdefault(key, value)
    from ray import serve

    from metarec_dist.runtime.ray_launcher import init_ray, shutdown_ray

    # A cluster started here gets a CPU per replica thread even beyond the cores: replicas that do not fit
    # would stay pending and the deployment would never finish (asking for them oversubscribes the cores).
    init_ray(num_cpus=max(os.cpu_count() or 1, replicas * threads))
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        try:
            serve.start(http_options={"host": host, "port": port})
        except TimeoutError:  # Ray Serve waits 60 s for its proxy; the controller keeps starting it
            log.warning("the Ray Serve HTTP proxy is slow to start (a busy machine?); still waiting for it")
        serve.run(build_app(checkpoint, fuse, replicas, threads), name=APP_NAME, route_prefix="/")
        url = f"http://{host}:{port}"
        wait_until_answering(url)
        log.info("serving %s at %s (POST %s/recommend)", Path(checkpoint).name, url, url)
        if ready is not None:
            ready(url)
        try:
            while not stop.wait(1.0):  # a timed wait: Ctrl-C reaches this thread at once
                pass
        except KeyboardInterrupt:
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            serve.shutdown()
        finally:
            shutdown_ray()
