"""``metarec serve``: an exported model behind HTTP on Ray Serve.

Each replica is a Ray Serve deployment holding one :class:`~metarec_dist.eval.recommend.Recommender` (the
same code as ``metarec recommend``: adaptation on the user's history, the fusion with the co-occurrence
counts of a fused export, seen items never re-recommended). Requests:

- ``POST /recommend`` with JSON ``{"items": ["12", "55"], "user": {"age": "24"}, "k": 10}`` (``items``: raw
  ids, oldest first; ``user``: stated features, for a model trained with ``data.user_features``; either may
  be left out, not both) -> ``{"items": [{"rank", "item", "title", "score"}, ...]}``, with ``"notes":
  [...]`` when a stated feature value is outside the training vocabulary (read as unknown; the note names
  known values, so that a typo is seen by the client, not in the server's log). A mistake in the request is
  HTTP 400 with ``{"error": "..."}`` saying which field.
- ``GET /`` -> what is served (algorithm, items, fusion weight, replicas).
- A body over ``--max-body-bytes`` (1 MiB by default) is HTTP 413 with ``{"error": ...}`` naming the limit,
  read to its end first (dropped) while within 16 MiB (``DRAIN_BYTES``), so that a client still sending it
  reads the 413 instead of a reset; refused as the body passes 16 MiB, or on a ``Content-Length`` over it.
  Another method on ``/recommend`` is 405, another path 404; a client gone before its body was read 499
  (Ray Serve's code for a client that disconnected; its replica's log had an ERROR traceback and a 500).
- A request not answered within ``--request-timeout-s`` (30 s by default) -- queued behind others at
  overload, or a client that stops sending its body -- is Ray Serve's own HTTP 408, a text body ``Request
  <id> timed out after 30.0s.`` (``http_options.request_timeout_s``, end to end in the proxy). That limit is
  the operator's: Ray Serve's proxy lets a client set its own with the header ``x-request-timeout-seconds``
  (0 or less: none), so the proxy of a cluster started here runs :class:`CapClientTimeout` first, which
  keeps that header only when it asks for no more (``proxy_middlewares``). Each replica also ends a request
  after the limit of its own (JSON 408): on a cluster joined with ``RAY_ADDRESS``, whose proxy this process
  does not start, a replica is then still not held past the limit.
- Answers are JSON in ASCII (``json_response``): an error may repeat the request's text, a lone surrogate
  (``"\\ud800"``) included.

The model is loaded once, by ``metarec serve`` itself, and handed to the replicas through Ray's object
store: every replica, one Ray Serve restarts after a crash included, serves the checkpoint announced at
start, even when the run folder it came from is still training and has deleted it since (a new model is a
new ``metarec serve``). On a multi-node cluster (``RAY_ADDRESS``) no node needs the export folder.

A cluster this process starts listens on 127.0.0.1 only (``init_ray``), and so does the HTTP proxy unless
``--host`` says otherwise.

``--gpus-per-replica F`` (default 0: the CPU) gives each replica ``F`` GPUs the Ray Serve way
(``ray_actor_options={"num_gpus": F}``; a fraction shares one GPU between replicas): Ray sets the replica's
``CUDA_VISIBLE_DEVICES``, and the replica moves its copy of the model to ``cuda`` there
(``Recommender.to``). A cluster without that many GPUs (``ray.cluster_resources()``) is refused in one line
before anything is deployed; a joined one short of them is warned about, as for CPUs (an autoscaler may add
GPU nodes). Unmeasured: no GPU on the machine this was written on.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import math
import signal
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metarec_dist.eval.recommend import Recommender

log = logging.getLogger("metarec")

APP_NAME = "metarec"
# The proxy must come up before Ray Serve's readiness check gives up on it (5 s by default): its worker
# imports Ray Serve, FastAPI and uvicorn at a low CPU priority, which on a busy 2-core machine took ~60 s.
SERVE_ENV = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "120"}
PROXY_WAIT_S = 600.0  # how long `metarec serve` waits for its first answer before giving up
# A request is a history of item ids: 1 MiB holds ~100,000 of them. Ray Serve (2.60) has no limit of its
# own, and json.loads of a 100 MB body held a replica for ~15 s and ~1 GB.
MAX_BODY_BYTES = 1 << 20
DRAIN_BYTES = 16 << 20  # a body over the limit but within this (declared or streamed) is read before its 413
# Ray Serve's own default is no timeout: at overload (300 clients, 2 replicas) requests queued with a p50 of
# 24.6 s and none failed, however long. A recommendation takes milliseconds, so a request still unanswered
# after 30 s sits in a queue that is not draining; 30 s is also under the 60 s after which common load
# balancers and HTTP clients give up on their own, so the client gets a 408 rather than a dropped connection.
REQUEST_TIMEOUT_S = 30.0


# Ray Serve's per-request hints to its proxy (ray.serve._private.constants, 2.60): a client's own timeout
# (over the operator's, or <= 0 for none), and "?1": keep running after the client has gone.
CLIENT_TIMEOUT_HEADER = b"x-request-timeout-seconds"
CLIENT_NO_DISCONNECT_HEADER = b"x-request-disconnect-disabled"
# How the limit and a proxy callback of the operator's own reach the proxy: environment variables, which the
# processes of a cluster started here inherit (the proxy calls the callback with no arguments).
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "metarec_dist.runtime.serving.proxy_middlewares"
LIMIT_ENV = "METAREC_SERVE_REQUEST_TIMEOUT_S"
OTHER_CALLBACK_ENV = "METAREC_SERVE_OTHER_PROXY_CALLBACK"


def capped_timeout_headers(headers: list[tuple[bytes, bytes]], limit: float) -> list[tuple[bytes, bytes]]:
    """An ASGI request's ``headers`` without the client's hints that would lift the operator's limit:
    ``x-request-timeout-seconds`` is kept (once, as Ray Serve reads the last) only when it is a number of
    seconds in (0, ``limit``]; ``x-request-disconnect-disabled`` is dropped."""
    own = [v for k, v in headers if k.lower() == CLIENT_TIMEOUT_HEADER]
    hints = (CLIENT_TIMEOUT_HEADER, CLIENT_NO_DISCONNECT_HEADER)
    kept = [(k, v) for k, v in headers if k.lower() not in hints]
    if own:
        try:
            asked = float(own[-1].decode("latin-1"))
        except ValueError:
            asked = math.nan
        if 0 < asked <= limit:  # a client may ask to give up sooner; nan, inf, <= 0 fail this
            kept.append((CLIENT_TIMEOUT_HEADER, own[-1]))
    return kept


class CapClientTimeout:
    """ASGI middleware for Ray Serve's proxy: the client's timeout header never lifts ``limit``."""

    def __init__(self, app: Any, limit: float) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            scope = {**scope, "headers": capped_timeout_headers(list(scope.get("headers", [])), self.limit)}
        await self.app(scope, receive, send)


def proxy_middlewares() -> list[Any]:
    """Called by Ray Serve's proxy (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``): the middlewares it
    runs, :class:`CapClientTimeout` at the limit `metarec serve` set, and then those of a callback the
    operator had set already."""
    import os

    from ray.serve._private.utils import call_function_from_import_path
    from starlette.middleware import Middleware

    limit = float(os.environ.get(LIMIT_ENV, REQUEST_TIMEOUT_S))
    other = os.environ.get(OTHER_CALLBACK_ENV)
    theirs = list(call_function_from_import_path(other) or []) if other else []
    return [*theirs, Middleware(CapClientTimeout, limit=limit)]  # the last one wraps the others: first


def cap_client_timeouts(limit: float) -> None:
    """Make the proxy of the cluster about to start cap the client's timeout header at ``limit``: the
    environment it inherits names ``proxy_middlewares`` (an operator's own callback still runs)."""
    import os

    current = os.environ.get(PROXY_CALLBACK_ENV)
    if current != PROXY_CALLBACK:  # ours already (a second call in this process): the operator's is kept
        if current:
            check_proxy_callback(current)
            os.environ[OTHER_CALLBACK_ENV] = current
        else:  # none: not one left from an earlier call, which the proxy would fail to import
            os.environ.pop(OTHER_CALLBACK_ENV, None)
    os.environ[PROXY_CALLBACK_ENV] = PROXY_CALLBACK
    os.environ[LIMIT_ENV] = repr(float(limit))


def check_proxy_callback(path: str) -> None:
    """Import the operator's proxy callback here, before Ray starts: a proxy that cannot import it never
    comes up, and `metarec serve` waited ``PROXY_WAIT_S`` (600 s) without a word. ``UserError`` naming the
    variable. (The proxy runs on this machine, in this environment: what imports here imports there.)"""
    from ray.serve._private.utils import import_attr

    from metarec_dist.errors import UserError

    try:
        callback = import_attr(path)
    except Exception as exc:  # noqa: BLE001 -- any failure to import it stalls the proxy alike
        why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserError(
            f"{PROXY_CALLBACK_ENV}={path[:200]!r} cannot be imported ({why}); fix or unset it"
        ) from None
    if not callable(callback):
        raise UserError(f"{PROXY_CALLBACK_ENV}={path[:200]!r} is not a function; fix or unset it")


class BodyTooLarge(ValueError):
    """A request body over the server's limit (HTTP 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request body is larger than this server's limit of {limit} bytes (metarec serve "
            "--max-body-bytes)"
        )


async def read_limited(request: Any, limit: int, drain: int = DRAIN_BYTES) -> bytes:
    """The body of a Starlette ``request``, at most ``limit`` bytes: ``BodyTooLarge`` on a
    ``Content-Length`` over it, or once the bytes streamed in pass it (a chunked body, a false length);
    ``ValueError`` on a ``Content-Length`` that is no number.

    A body over the limit is read (and dropped) before the refusal while it stays within ``drain`` bytes,
    as nginx reads on after its 413 (lingering close): answered with the body unread, the connection was
    closed under a client still sending it (uvicorn closes it after the answer when the client sent
    ``Connection: close``, as ``urllib`` does), which saw a broken pipe or a reset instead of the 413 (a
    1 MiB + 1 byte body, twice in the test suite on a loaded machine; a chunked 16 MiB body, 21 times in
    50). A declared length over ``drain`` is refused on its header alone, a streamed body as it passes
    ``drain``: reading more to be polite would cost more than the reset."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise ValueError(f"the request's Content-Length {length!r} is not a number of bytes")
        if int(length) > drain:  # declared over the bound: refused on the header alone
            raise BodyTooLarge(limit)
    # Within the bound, a body over the limit (declared, streamed or falsely declared) is read to its end and
    # dropped past the limit before the refusal.
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > drain:  # past the bound: refused now, the rest unread
            raise BodyTooLarge(limit)
    if size > limit:  # read to its end within the bound: the client gets the 413 it can read
        raise BodyTooLarge(limit)
    return b"".join(chunks)


def read_body(raw: bytes) -> Any:
    """A request body's JSON; ``ValueError`` if it is not JSON (or not UTF-8), or nested too deeply for
    the decoder (a ``RecursionError`` there would be an HTTP 500)."""
    if not raw.strip():
        raise ValueError('the request body is not JSON (UTF-8): it is empty; send e.g. {"items": ["12"]}')
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("the request body is not JSON this server reads: nested too deeply") from None
    except json.JSONDecodeError as exc:  # where: a trailing comma is easier found at "line 1 column 17"
        raise ValueError(f"the request body is not JSON (UTF-8): {exc}") from None
    except UnicodeDecodeError:
        raise ValueError("the request body is not JSON (UTF-8): it is not UTF-8 text") from None
    except ValueError as exc:  # an integer of more than 4,300 digits (less Python's hint for the server)
        raise ValueError(
            f"the request body is not JSON this server reads: {str(exc).split(';')[0]}"
        ) from None


def parse_request(body: Any) -> tuple[list[str], dict[str, str] | None, int]:
    """``(items, user, k)`` from a request's JSON; ``ValueError`` naming the field that is wrong."""
    from metarec_dist.eval.recommend import shorten

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
    if isinstance(k, bool) or not isinstance(k, int):  # said as JSON: null, true, "ten", not None, True
        raise ValueError(f'"k" must be an integer, got {shorten(json.dumps(k))}')
    if k < 1:
        raise ValueError(f'"k" must be >= 1, got {k}')
    if not items and not user:
        raise ValueError('give the user\'s history ("items") or, for a model with user features, "user"')
    # An empty user object states nothing: the same as none (a model without user features accepts it).
    return [str(i) for i in items], {n: str(v) for n, v in user.items()} if user else None, k


def _is_id(item: Any) -> bool:
    return isinstance(item, (str, int)) and not isinstance(item, bool)  # true is no item id


class RecommenderReplica:
    """One replica: the model (loaded once, by `metarec serve`); requests answered one at a time."""

    def __init__(self, recommender: Recommender, threads: int, device: Any = None) -> None:
        """``device``: where the replica adapts and scores (a ``torch.device``; None: the CPU, where the
        model was loaded)."""
        import torch

        from metarec_dist.eval.recommend import JSON_FIELDS

        torch.set_num_threads(threads)
        self.recommender = recommender if device is None else recommender.to(device)
        self.checkpoint = str(recommender.loaded.source)  # the checkpoint step, not its run folder
        self.lock = threading.Lock()  # one request at a time: the adapting model is not shared by threads
        self.fields = JSON_FIELDS  # errors name the request's JSON fields, not `metarec recommend`'s flags

    def describe(self) -> dict[str, Any]:
        loaded, fusion = self.recommender.loaded, self.recommender.fusion
        return {
            "checkpoint": self.checkpoint,
            "algorithm": loaded.algorithm,
            "num_items": int(loaded.meta["num_items"]),
            "fusion_weight": None if fusion is None else fusion.weight,
            "adaptation": self.recommender.served_adaptation(),  # what a request gets, not only the model
            **({} if self.recommender.device.type == "cpu" else {"device": str(self.recommender.device)}),
        }

    def answer(self, body: Any) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON) for one ``/recommend`` request."""
        try:
            items, user, k = parse_request(body)
            notes: list[str] = []  # answered to the client: its text in the replica's log was noise
            with self.lock:
                recs = self.recommender(items, k, user, self.fields, notes)
        except ValueError as exc:  # the user's mistake (unknown item, k too large, ...): said, not a 500
            return 400, {"error": str(exc)}
        out: dict[str, Any] = {
            "items": [{"rank": r.rank, "item": r.raw_id, "title": r.title, "score": r.score} for r in recs]
        }
        if notes:  # e.g. a feature value read as unknown: a typo the client should see
            out["notes"] = notes
        return 200, out


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


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Any:
    """A Starlette JSON response in ASCII (non-ASCII escaped): a request's text may hold a lone surrogate
    (``"\\ud800"`` is valid JSON), which an error repeating it could not encode as UTF-8 -- Starlette's
    ``JSONResponse`` then failed with HTTP 500."""
    from starlette.responses import Response

    body = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return Response(body, status_code, headers, media_type="application/json")


async def handle(
    replica: RecommenderReplica, request: Any, replicas: int, max_body: int, timeout_s: float | None = None
) -> Any:
    """The JSON response to one HTTP request (a Starlette ``Request``) to a replica; a 408 once it has taken
    ``timeout_s`` (a body still coming in: the replica's own bound, whatever the proxy was told)."""
    if timeout_s is None:
        return await route(replica, request, replicas, max_body)
    try:
        return await asyncio.wait_for(route(replica, request, replicas, max_body), timeout_s)
    except TimeoutError:
        message = f"the request was not answered within {timeout_s:g} s (metarec serve --request-timeout-s)"
        return json_response({"error": message}, status_code=408)


async def route(replica: RecommenderReplica, request: Any, replicas: int, max_body: int) -> Any:
    """``handle`` without its time limit."""
    path = request.url.path.rstrip("/")
    if path == "":
        if request.method in ("GET", "HEAD"):
            return json_response({**replica.describe(), "replicas": replicas})
        message = f"{request.method} /: GET / for the model"  # HEAD / answers too: listed in Allow
        return json_response({"error": message}, status_code=405, headers={"Allow": "GET, HEAD"})
    if path != "/recommend":
        return json_response({"error": "POST /recommend, or GET / for the model"}, status_code=404)
    if request.method != "POST":
        message = f"{request.method} /recommend: POST a JSON body to /recommend"
        return json_response({"error": message}, status_code=405, headers={"Allow": "POST"})
    from starlette.requests import ClientDisconnect

    try:
        body = read_body(await read_limited(request, max_body))
    except BodyTooLarge as exc:
        return json_response({"error": str(exc)}, status_code=413)
    except ValueError as exc:
        return json_response({"error": str(exc)}, status_code=400)
    except ClientDisconnect:  # gone before its body was read: Ray Serve's 499, not a 500 and a traceback
        return json_response({"error": "the client closed the connection before sending its body"}, 499)
    status, out = replica.answer(body)
    return json_response(out, status_code=status)


def build_app(
    model: Any,
    replicas: int,
    threads: int,
    max_body: int = MAX_BODY_BYTES,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    gpus: float = 0.0,
) -> Any:
    """The Ray Serve application: ``replicas`` copies of the model behind the ingress. ``model``: the
    ``Recommender``'s Ray object reference (``ray.put``), fetched by each replica, a restarted one too;
    each ends a request after ``request_timeout_s`` of its own (``handle``). ``gpus``: each replica's GPUs
    (``--gpus-per-replica``), where it moves the model (``replica_device``)."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    options = {"num_cpus": threads, "num_gpus": gpus}

    @serve.deployment(name="recommender", ray_actor_options=options)
    class RecommenderDeployment:
        def __init__(self, model: list[Any]) -> None:
            import ray

            bind_replica_grpc_to_loopback()
            self.replica = RecommenderReplica(ray.get(model[0]), threads, replica_device(gpus))

        async def __call__(self, request: Request) -> Response:
            return await handle(self.replica, request, replicas, max_body, request_timeout_s)

    # In a list: Ray Serve keeps the reference as it is (the object stays the driver's, alive while it is).
    return RecommenderDeployment.options(num_replicas=replicas).bind([model])


def replica_device(gpus: float) -> Any:
    """Where a replica given ``gpus`` GPUs scores: ``cuda`` (the first GPU of those Ray made visible to it,
    ``eval/device.py``'s ``resolve_device``) or, with none, None (the CPU)."""
    import os

    from metarec_dist.errors import UserError
    from metarec_dist.eval.device import resolve_device

    if gpus <= 0:
        return None
    try:
        return resolve_device("cuda")
    except UserError:  # Ray's GPU, but not one this torch can use (a CPU-only build?)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise UserError(
            f"--gpus-per-replica {gpus:g}: Ray gave this replica GPU(s) (CUDA_VISIBLE_DEVICES={visible}) but "
            "torch sees no CUDA device in it (a CPU-only torch?); drop --gpus-per-replica"
        ) from None


def check_local_gpu(gpus: float) -> None:
    """``--gpus-per-replica`` on the cluster started here: its replicas run this machine's torch, so where
    torch sees no GPU they could never use one (a CPU-only torch: the replica's error; no GPU: Ray's count
    of none, refused only after Ray started, about 10 s)."""
    import torch

    from metarec_dist.errors import UserError

    if gpus > 0 and not torch.cuda.is_available():
        raise UserError(
            f"--gpus-per-replica {gpus:g}: torch {torch.__version__} sees no CUDA GPU on this machine, where "
            "the Ray cluster started here runs the replicas; drop --gpus-per-replica to serve on the CPU, or "
            "join a Ray cluster with GPUs (RAY_ADDRESS)"
        )


def check_cluster_gpus(replicas: int, gpus: float, present: float, joined: bool) -> None:
    """``--replicas`` x ``--gpus-per-replica`` against the GPUs of the Ray cluster (``present``:
    ``ray.cluster_resources()["GPU"]``): none there, or (a cluster started here) fewer than asked, is a
    ``UserError``, before anything is deployed (Ray Serve would wait for them without a word); a joined
    cluster short of them is warned about (an autoscaler may add GPU nodes)."""
    from metarec_dist.errors import UserError

    if gpus <= 0:
        return
    asked = replicas * gpus
    where = "the Ray cluster at RAY_ADDRESS" if joined else "the Ray cluster started here (this machine)"
    what = f"--replicas {replicas} x --gpus-per-replica {gpus:g} ask for {asked:g} GPU(s)"
    if present <= 0:
        raise UserError(f"{what}; {where} has none; drop --gpus-per-replica to serve on the CPU")
    if asked <= present + 1e-6:  # Ray counts GPU fractions to 1e-4: 3 x 0.1 fits 0.3
        return
    if not joined:
        raise UserError(f"{what}; {where} has {present:g}; lower --replicas or --gpus-per-replica")
    log.warning("%s but %s has %g: Ray Serve waits until it has them; Ctrl-C otherwise", what, where, present)


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


def load_served(checkpoint: str, fuse: bool) -> Recommender:
    """The model every replica serves, loaded here, once, before Ray starts: a damaged export (a truncated
    model.safetensors, a broken config) is then one ``UserError`` line, not Ray Serve's "Deploying
    application metarec failed" traceback that, with the workers' logs quiet, does not say why; and a run
    folder's newest checkpoint is read once (``read_newest``: a run training there may delete it under the
    read) and then needs no file any more."""
    from metarec_dist.eval.recommend import Recommender

    return Recommender.load(checkpoint, fuse=fuse)


def serve_model(
    checkpoint: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    fuse: bool = True,
    threads: int = 1,
    ready: Any = None,
    max_body: int = MAX_BODY_BYTES,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    gpus_per_replica: float = 0.0,
) -> None:
    """Deploy ``checkpoint`` and serve until interrupted (Ctrl-C or SIGTERM), then shut Serve down.
    ``ready``: called with the URL once the application answers (the CLI prints it). ``max_body``: the
    largest request body in bytes (413 above it). ``request_timeout_s``: Ray Serve's end-to-end limit on a
    request (408 past it). ``gpus_per_replica``: each replica's GPUs (0: it serves on the CPU)."""
    import os

    check_serve_args(port, replicas, threads, max_body, request_timeout_s, gpus_per_replica)
    check_not_ray_client(os.environ.get("RAY_ADDRESS"))
    joined = bool(os.environ.get("RAY_ADDRESS"))
    if not joined:  # joined with RAY_ADDRESS, the proxy listens on that cluster
        check_port_free(host, port)
        check_replicas_fit(replicas, threads, os.cpu_count() or 1)
        check_local_gpu(gpus_per_replica)
    for key, value in SERVE_ENV.items():
        os.environ.setdefault(key, value)
    if not joined:  # a joined cluster's proxy is not started here: its replicas still end a request in time
        cap_client_timeouts(request_timeout_s)
    from metarec_dist.runtime import ray_launcher

    # SIGTERM (`kill`, `docker stop`, systemd) is Ctrl-C until the application is deployed: it unwinds
    # through the clean-up below ("interrupted", status 130) instead of killing this process with the Ray
    # cluster it was starting left running. From the deployment on, the server may answer (Ray Serve routes
    # to each replica once it is up, before `serve.run` returns, and before `wait_until_answering` sees it):
    # a SIGTERM is then the server's normal stop, as once serving (the loop below ends; status 0).
    stop, serving, deployed = threading.Event(), threading.Event(), threading.Event()

    def on_sigterm(*_: Any) -> None:
        if not deployed.is_set():
            raise KeyboardInterrupt
        first = not stop.is_set()
        stop.set()
        if first and not serving.is_set():
            raise StopRequested  # out of the wait for the replicas and the first answer (once)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        # Loaded here first: a wrong path or a damaged model is one line now, not a replica failing in Ray.
        recommender = load_served(str(Path(checkpoint).expanduser().resolve()), fuse)
        http = {"host": host, "port": port, "request_timeout_s": request_timeout_s}
        url = f"http://{host}:{port}"
        try:
            source = deploy(
                recommender, http, replicas, threads, max_body, joined, deployed, gpus_per_replica
            )
            del recommender  # the replicas' copy is in the object store
            wait_until_answering(url)
            serving.set()  # in this block: a SIGTERM before it is a StopRequested caught here
        except StopRequested:
            log.warning("stopped (SIGTERM) while the application at %s was starting", url)
            return
        log.info("serving %s at %s (POST %s/recommend)", source, url, url)
        if ready is not None:
            ready(url)
        try:
            while not stop.wait(1.0):  # a timed wait: Ctrl-C reaches this thread at once
                pass
        except KeyboardInterrupt:
            pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
        try:
            stop_serving(joined)
        finally:
            ray_launcher.shutdown_ray()
            signal.signal(signal.SIGTERM, previous)


class StopRequested(BaseException):
    """A SIGTERM once the application is deployed and before ``serve_model`` counts itself serving: the
    server's normal stop, raised to leave the wait for its start (a ``BaseException``, as Ctrl-C is: no
    ``except Exception`` on the way swallows it)."""


def check_not_ray_client(address: str | None) -> None:
    """``UserError`` for ``RAY_ADDRESS=ray://...``: Ray Serve does not run through a Ray client (Ray's
    "won't fix", ray-project/ray#43357). Measured with Ray 2.60 against a real head: the model, handed to
    the replicas as a client's object reference, failed every replica's start ("'NoneType' object has no
    attribute 'call_retain'") and `metarec serve` ended ~20 s later in "Deploying application metarec
    failed" with a traceback."""
    from metarec_dist.errors import UserError

    if address and address.strip().lower().startswith("ray://"):
        raise UserError(
            f"RAY_ADDRESS={address}: metarec serve does not run through a Ray client (ray://; Ray Serve "
            "does not support it); run metarec serve on a node of the cluster with RAY_ADDRESS=HOST:6379 "
            "(the head's GCS address)"
        )


def check_serve_args(
    port: int,
    replicas: int,
    threads: int,
    max_body: int,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    gpus: float = 0.0,
) -> None:
    """The command line's numbers, refused before anything starts."""
    import math

    from metarec_dist.errors import UserError

    if replicas < 1:
        raise UserError(f"--replicas must be >= 1, got {replicas}")
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    if not 0 < port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    if max_body < 1:
        raise UserError(f"--max-body-bytes must be >= 1, got {max_body}")
    # 0 or less is "no timeout" to Ray Serve, and inf never ends: refused, since the flag is there to bound.
    if not (math.isfinite(request_timeout_s) and request_timeout_s > 0):
        raise UserError(f"--request-timeout-s must be a number of seconds > 0, got {request_timeout_s:g}")
    # Ray's own rule for resources: a fraction of one GPU (shared), or whole GPUs.
    if not (math.isfinite(gpus) and gpus >= 0 and (gpus <= 1 or float(gpus).is_integer())):
        raise UserError(
            "--gpus-per-replica must be 0 (the CPU), a fraction of one GPU (0.5: two replicas share it) or "
            f"a whole number of GPUs, got {gpus:g}"
        )


MAX_REPLICAS_PER_CORE = 4  # each replica is a process holding torch and the model (~0.3-0.5 GB)


def check_replicas_fit(replicas: int, threads: int, cores: int) -> None:
    """Refuse, before Ray starts, more replica threads than ``MAX_REPLICAS_PER_CORE`` per core of this
    machine: the cluster started here is given the CPUs they ask for, so Ray starts them all, and 1,000
    replicas on 2 cores were 1,000 processes starting (memory, minutes) before the first answer."""
    from metarec_dist.errors import UserError

    most = MAX_REPLICAS_PER_CORE * cores
    if replicas * threads > most:
        raise UserError(
            f"--replicas {replicas} x --threads {threads} is {replicas * threads} CPUs on a machine with "
            f"{cores} cores; at most {most} (more replicas than cores only queue behind each other)"
        )


def warn_if_cluster_too_small(replicas: int, threads: int, cpus: float) -> None:
    """On a joined cluster each replica reserves ``threads`` CPUs: more than the cluster has stay pending
    (until an autoscaler adds nodes, or forever), and Ray Serve waits for them without a word. Said before
    that wait."""
    if replicas * threads > cpus:
        log.warning(
            "--replicas %d x --threads %d reserve %d CPUs but the cluster at RAY_ADDRESS has %g: Ray Serve "
            "waits until it has them (an autoscaler adding nodes); Ctrl-C and lower --replicas otherwise",
            replicas,
            threads,
            replicas * threads,
            cpus,
        )


def deploy(
    recommender: Any,
    http: dict[str, Any],
    replicas: int,
    threads: int,
    max_body: int,
    joined: bool,
    deployed: threading.Event | None = None,
    gpus: float = 0.0,
) -> str:
    """Start Ray (unless ``joined``) and Ray Serve with ``http`` (its ``http_options``: host, port, request
    timeout) and deploy ``recommender`` through the object store; return the checkpoint it was loaded from
    (the step a run folder resolved to). Joined to a cluster whose Serve already runs, Ray Serve keeps that
    Serve's options (and says so: its "will not be applied" line is kept there). ``deployed`` is set as the
    application is handed to Ray Serve: from then on a replica that is up may answer."""
    import os

    import ray
    from ray import serve

    from metarec_dist.runtime import ray_launcher

    ray_launcher.check_ray_address()  # nothing answering at RAY_ADDRESS: one line, not Ray's endless retries
    # A cluster started here gets a CPU per replica thread even beyond the cores: replicas that do not
    # fit would stay pending and the deployment would never finish (they oversubscribe the cores).
    try:
        ray_launcher.init_ray(num_cpus=max(os.cpu_count() or 1, replicas * threads))
    except SystemExit as exc:  # SIGTERM inside ray.init, whose own handler exits with the signal
        if exc.code == signal.SIGTERM:
            raise KeyboardInterrupt from None
        raise
    if joined:
        warn_if_cluster_too_small(replicas, threads, ray.cluster_resources().get("CPU", 0.0))
    else:
        # Ray Serve's INFO lines ("Connecting to existing Serve app ... New http_options ... will not be
        # applied", after the serve.start that applied them) say less than the one "serving at" line. On
        # a cluster joined, where Serve may run with other options, that line is true: kept.
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
    check_cluster_gpus(replicas, gpus, ray.cluster_resources().get("GPU", 0.0), joined)
    try:
        serve.start(http_options=http)
    except TimeoutError:  # Ray Serve waits 60 s for its proxy; the controller keeps starting it
        log.warning("the Ray Serve HTTP proxy is slow to start (a busy machine?); still waiting for it")
    except ray.exceptions.RayTaskError as exc:
        raise proxy_bind_error(exc, http) from None
    source = recommender.loaded.source  # the checkpoint step a run folder resolved to
    model = ray.put(recommender)  # the replicas' copy
    app = build_app(model, replicas, threads, max_body, http["request_timeout_s"], gpus)
    if deployed is not None:
        deployed.set()
    try:
        serve.run(app, name=APP_NAME, route_prefix="/")
    except RuntimeError as exc:  # "Deploying application metarec failed": the replicas' reason is in status
        raise replica_user_error(serve) or exc from None
    return source


def replica_user_error(serve: Any) -> Exception | None:
    """The ``UserError`` a replica raised while starting (e.g. ``replica_device``: a GPU torch cannot use),
    from the deployment's status message, where Ray Serve keeps the replica's traceback; ``serve.run`` says
    only "Failed to update the deployments ['recommender']" (measured on a head started with --num-gpus=1
    and a CPU-only torch: a traceback after 24 s). None when the replicas failed otherwise."""
    from metarec_dist.errors import UserError

    app = serve.status().applications.get(APP_NAME)
    messages = [d.message for d in app.deployments.values()] if app is not None else []
    prefix = f"{UserError.__module__}.{UserError.__name__}: "
    for line in "\n".join(messages).splitlines():
        if line.strip().startswith(prefix):
            return UserError(line.strip()[len(prefix) :])
    return None


def proxy_bind_error(exc: Exception, http: dict[str, Any]) -> Exception:
    """A ``UserError`` for Ray Serve's HTTP proxy failing to bind ``--host``/``--port``, else ``exc``. On a
    joined cluster the port is not checked here first (the proxy runs on the cluster's nodes): a port in
    use there was a ``RayTaskError`` traceback from the proxy actor (measured: 9 s after the start)."""
    from metarec_dist.errors import UserError

    if "Failed to bind to address" not in f"{exc} {getattr(exc, 'cause', '')}":
        return exc
    return UserError(
        f"--host {http['host']} --port {http['port']}: Ray Serve's HTTP proxy on the cluster cannot listen "
        "there (the port is in use on that node); give another --port"
    )


def stop_serving(joined: bool) -> None:
    """Stop the application: its replicas finish the requests they hold (Ray Serve's graceful shutdown).

    On a cluster this process started, the rest of Serve (controller, proxy) goes with the cluster in
    ``shutdown_ray`` (``serve.shutdown()`` there printed, on every Ctrl-C, the failed-task line that
    :func:`shutdown_serve` explains). Joined to a cluster (``RAY_ADDRESS``), Serve goes too unless it still
    serves other applications there (:func:`shutdown_serve`)."""
    import ray
    from ray import serve

    if not ray.is_initialized():  # stopped before Ray started (serve.delete would start it)
        return
    try:
        serve.delete(APP_NAME)
    except Exception as exc:  # noqa: BLE001 -- never deployed (a failed start): the cluster goes anyway
        log.debug("serve.delete: %s", exc)
    if not joined:
        return
    try:
        shutdown_serve()
    except Exception as exc:  # noqa: BLE001 -- the controller unreachable, a time-out: said, not a traceback
        log.warning("Ray Serve was not shut down on the cluster at RAY_ADDRESS: %s", str(exc).splitlines()[0])


# Ray Serve's own wait for its controller to exit (ServeControllerClient.shutdown's timeout_s, 2.60).
CONTROLLER_EXIT_S = 30.0


def shutdown_serve(timeout_s: float = CONTROLLER_EXIT_S, poll_s: float = 0.2) -> None:
    """``serve.shutdown()`` on a joined cluster, without the failed-task line it printed every time.

    ``serve.shutdown()`` (Ray 2.60) calls the controller's ``graceful_shutdown`` and waits for that call
    never to return: the controller shuts the proxies and replicas down and then ``ray.kill``s itself. The
    controller is an actor with ``max_task_retries=-1``, so Ray's core worker in this process takes the call
    cut short by that kill for a retriable failure and says so on the terminal: "(raylet) Task
    ServeController.graceful_shutdown failed. There are infinite retries remaining ... killed by
    `ray.kill`". Here the controller is told to shut down with ``graceful_shutdown(wait=False)``, which
    returns once the flag is set, and its end is awaited as Ray Serve awaited it before 2.6: until its
    name is gone from the cluster (``ray.get_actor`` raises ``ValueError``). No call is in flight when it
    dies. Applications other than ours (another user's, on a shared cluster) keep Serve running: said,
    and left alone."""
    import time

    import ray
    from ray import serve
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
    from ray.serve.context import _disconnect, _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return
    others = sorted(name for name in serve.status().applications if name != APP_NAME)
    client.shutdown_cached_handles()  # their routers poll the controller: no call left to fail
    _disconnect()
    if others:
        log.info("Ray Serve keeps running on the cluster for its other applications: %s", ", ".join(others))
        return
    ray.get(client._controller.graceful_shutdown.remote(wait=False), timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        except ValueError:  # the controller is gone, and with it Serve's proxies and replicas
            return
        time.sleep(poll_s)
    log.warning("Ray Serve's controller did not exit within %g s; it goes on shutting Serve down", timeout_s)
