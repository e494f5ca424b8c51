"""The driver side of a Ray run: connect or start a cluster, hand the user files to Ray Data, run Ray Train.

The driver finds (or prepares) the per-user Parquet files and passes lazy Ray datasets over them; it reads
no rows when the data is cached. Each worker reads its own shard and builds its tasks (``ray_data.py``).
Every port of a locally started cluster binds to 127.0.0.1 and the cluster requires Ray's token
(tests/integration/test_local_cluster_binding.py checks both).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarec_dist.config import Config
from metarec_dist.errors import UserError
from metarec_dist.runtime.quiet import DropMessages

if TYPE_CHECKING:
    from metarec_dist.data.config import DataConfig

log = logging.getLogger("metarec")


def init_ray(verbose: bool = False, num_cpus: int | None = None, dashboard: bool = False) -> None:
    """Connect to ``RAY_ADDRESS`` when set, else start a local cluster that listens on 127.0.0.1 only and
    requires Ray's token (see :func:`_loopback_node_ip`); the dashboard is off unless asked for."""
    import ray

    if ray.is_initialized():
        return
    sigterm = signal.getsignal(signal.SIGTERM)
    _init(verbose, num_cpus, dashboard)
    _restore_sigterm(sigterm)


def _init(verbose: bool, num_cpus: int | None, dashboard: bool) -> None:
    import ray

    quiet = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.WARNING}
    address = joined_address()
    if address:
        if is_loopback_address(address):
            _join_on_loopback()
        _join(address, quiet)
        return
    local_cluster_defaults()
    _loopback_node_ip()
    started = ray.init(
        num_cpus=num_cpus,
        include_dashboard=dashboard,
        dashboard_host="127.0.0.1",
        _node_ip_address="127.0.0.1",
        **quiet,
    )
    if dashboard and started.dashboard_url:  # Ray's own "View the dashboard at" line is quieted with the rest
        print(f"Ray dashboard: http://{started.dashboard_url}", file=sys.stderr)


def _join(address: str, quiet: dict[str, Any]) -> None:
    """``ray.init(address)``; Ray giving up on a server there that is not what the address says is one
    line, not a bare ``ConnectionError`` traceback: one :func:`check_ray_service` could not tell in time
    (Ray's own time-outs: ~30 s for ``ray://``, ~20 s for a GCS address)."""
    import ray

    if address.startswith("ray://"):
        quiet_client_server()
    try:
        ray.init(address=address, **quiet)
    except ConnectionError as exc:
        fix = CLIENT_PORT_FIX if address.startswith("ray://") else GCS_PORT_FIX
        raise UserError(
            f"RAY_ADDRESS={address}: no Ray cluster answers there as expected ({exc}); {fix}"
        ) from None


# The Ray client server joins the cluster for each client from a thread, and Ray warns there that it cannot
# install its SIGTERM handler; the warning is sent to the client and printed before any output of a ray://
# run (`metarec evaluate --workers N`, `train`), though it concerns the server's process only.
CLIENT_SERVER_NOISE = re.compile(r"^SIGTERM handler is not set because current thread is not the main thread")


def quiet_client_server() -> None:
    """Drop the Ray client server's ``CLIENT_SERVER_NOISE`` from the logs it streams to this process."""
    logger = logging.getLogger("ray.util.client.logsclient")
    if not any(isinstance(f, DropMessages) and f.pattern is CLIENT_SERVER_NOISE for f in logger.filters):
        logger.addFilter(DropMessages(CLIENT_SERVER_NOISE))


def check_ray_address() -> None:
    """Before ``init_ray``: a ``RAY_ADDRESS`` nothing answers at, or an HTTP server (the dashboard's port)
    answers at, is one line (:func:`check_reachable`); ``auto`` is checked as the address it stands for."""
    given = os.environ.get("RAY_ADDRESS")
    if given:
        check_reachable(joined_address() or given, given=given)


def joined_address() -> str | None:
    """``RAY_ADDRESS`` as ``ray.init`` is to join it; ``auto`` resolved here as Ray resolves it
    (``services.get_ray_address_from_environment``: the address the latest ``ray start`` on this machine
    wrote to ``ray_current_cluster`` in Ray's temp folder, else a GCS process found running here).

    Left to Ray, ``auto`` naming a head on 127.0.0.1 (``ray start --head --node-ip-address=127.0.0.1`` with
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, docs/cluster.md) was swapped for the machine's own address,
    where nothing listens, and ``ray.init`` retried for ever; resolved, it joins on loopback (``_init``)."""
    address = os.environ.get("RAY_ADDRESS")
    if address != "auto":
        return address or None
    from ray._private import services

    # Ray warns "Found multiple active Ray instances ..." at every resolution, and ``auto`` is resolved for
    # the reachability check and again to join: the same lines twice. Dropped; said once, here.
    drop = DropMessages(re.compile(r"^Found multiple active Ray instances"))
    services.logger.addFilter(drop)
    try:
        resolved = services.get_ray_address_from_environment("auto", None)
    except ConnectionError:
        raise UserError(
            "RAY_ADDRESS=auto: no Ray cluster was started on this machine (no `ray start --head` recorded in "
            "Ray's temp folder, no GCS process running); start one, set RAY_ADDRESS=HOST:6379 (the head's "
            "GCS address), or unset RAY_ADDRESS for a local cluster metarec starts"
        ) from None
    finally:
        services.logger.removeFilter(drop)
    warn_of_other_clusters(resolved, sorted(services.find_gcs_addresses()))
    return resolved


_SAID_OTHER_CLUSTERS: set[tuple[str, ...]] = set()


def warn_of_other_clusters(resolved: str, running: list[str]) -> None:
    """Once per process: ``RAY_ADDRESS=auto`` chose ``resolved`` among several clusters ``running`` here
    (GCS processes found on this machine): the one the latest ``ray start`` recorded, which may be one that
    is stopped since (the reachability check then fails on it). Say which, and how to choose."""
    if len(running) < 2 or (resolved, *running) in _SAID_OTHER_CLUSTERS:
        return
    _SAID_OTHER_CLUSTERS.add((resolved, *running))
    from ray._private.utils import get_ray_address_file

    stale = "" if resolved in running else ", which is not one of them (stopped since?)"
    log.warning(
        "RAY_ADDRESS=auto: %d Ray clusters run on this machine (%s); joining %s, the one the latest `ray "
        "start` recorded in %s%s; set RAY_ADDRESS=HOST:PORT to join another",
        len(running),
        ", ".join(running),
        resolved,
        get_ray_address_file(None),
        stale,
    )


def check_reachable(address: str, timeout_s: float = 5.0, given: str | None = None) -> None:
    """``UserError`` when nothing listens at ``RAY_ADDRESS`` (``HOST:PORT``, ``ray://HOST:PORT``), or an
    HTTP server does (:func:`check_not_http`): Ray itself retries for ever there, printing GCS time-outs
    every 30 s (measured with Ray 2.60). Addresses without a port are left to Ray. ``given``: what
    ``RAY_ADDRESS`` says when ``address`` is what it resolved to (``auto``)."""
    import socket

    shown = address if given in (None, address) else f"{given} ({address})"
    if address.startswith(("http://", "https://")):
        raise UserError(http_address_error(shown, "an HTTP address"))
    host, port = _host_and_port(address)
    if not host or port is None:
        return
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            check_not_http(conn, shown)
    except OSError as exc:
        raise UserError(
            f"RAY_ADDRESS={shown}: no Ray cluster answers there ({exc.strerror or exc}); start its head "
            "(ray start --head, docs/cluster.md), or unset RAY_ADDRESS for a local cluster metarec starts"
        ) from None
    check_ray_service(address, host, port, shown)


def _host_and_port(address: str) -> tuple[str | None, int | None]:
    """A malformed address or port is None: ``ray.init`` says what is wrong with it."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(address if "://" in address else f"//{address}")
        host = parts.hostname
    except ValueError:
        return None, None
    try:
        return host, parts.port
    except ValueError:
        return host, None


# How long the server at RAY_ADDRESS has to say what it is. A gRPC server (GCS, Ray client server) sends its
# HTTP/2 SETTINGS frame as soon as it accepts (measured: < 10 ms on loopback).
PROBE_S = 2.0


def check_not_http(conn: Any, shown: str) -> None:
    """``UserError`` when the server on ``conn`` answers an HTTP/1 request: the dashboard / Jobs port
    (8265 by default), which ``metarec submit --address http://...`` uses. The GCS and the Ray client
    server speak gRPC (HTTP/2) and answer with a SETTINGS frame, never ``HTTP/1.x``; ``ray.init`` at an
    HTTP port accepted the connection and then waited for the GCS for ever. A server that says nothing in
    time is left to Ray."""
    try:
        conn.settimeout(PROBE_S)
        conn.sendall(b"GET / HTTP/1.0\r\nHost: ray\r\n\r\n")
        head = conn.recv(8)
    except OSError:
        return
    if head.startswith(b"HTTP/"):
        raise UserError(http_address_error(shown, "an HTTP server answers there"))


# Fix for each server RAY_ADDRESS may name by mistake.
CLIENT_PORT_FIX = (
    "the client port is the head's --ray-client-server-port (10001 by default), or drop ray:// to join the "
    "GCS address (HOST:6379) directly"
)
GCS_PORT_FIX = "give the head's GCS address (ray start --head --port, 6379 by default)"


def check_ray_service(address: str, host: str, port: int, shown: str) -> None:
    """``UserError`` when the gRPC server at ``RAY_ADDRESS`` is not the Ray server the address asks for:
    ``ray://`` a Ray client server, else a GCS. Both ports of a head answer gRPC, and so does a raylet's;
    ``ray.init`` at the wrong one gave up only after its own time-outs (measured against a real head, Ray
    2.60: ``ray://HOST:<GCS port>`` 30 s, ``HOST:<raylet port>`` 20 s). One call of the service asked for
    (the Ray client's ``ClusterInfo`` ping, the GCS's ``GetClusterId``), answered ``UNIMPLEMENTED`` in
    milliseconds by a server without it, tells at once; any other answer (the token refused, TLS, no
    answer) is left to Ray."""
    client = address.startswith("ray://")
    if not _lacks_service(host, port, client):
        return
    if client:
        raise UserError(f"RAY_ADDRESS={shown}: the server there is no Ray client server; {CLIENT_PORT_FIX}")
    if not _lacks_service(host, port, client=True):
        raise UserError(
            f"RAY_ADDRESS={shown}: that is a Ray client server; set RAY_ADDRESS=ray://{address} to join "
            f"through it, or {GCS_PORT_FIX}"
        )
    raise UserError(f"RAY_ADDRESS={shown}: the server there is no Ray GCS (a raylet's port?); {GCS_PORT_FIX}")


def _lacks_service(host: str, port: int, client: bool) -> bool:
    """Whether the gRPC server at ``host:port`` answers ``UNIMPLEMENTED`` to the Ray client service
    (``client``) or to the GCS within ``PROBE_S``."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc, ray_client_pb2, ray_client_pb2_grpc

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with grpc.insecure_channel(target) as channel:
        try:
            if client:
                ping = ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING)
                ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo(ping, timeout=PROBE_S)
            else:
                request = gcs_service_pb2.GetClusterIdRequest()
                gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(request, timeout=PROBE_S)
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.UNIMPLEMENTED
    return False


def http_address_error(shown: str, what: str) -> str:
    return (
        f"RAY_ADDRESS={shown}: {what}, e.g. the head's dashboard / Ray Jobs port (8265 by default, for "
        "`metarec submit --address http://HOST:8265`), not its GCS; set RAY_ADDRESS to the GCS address "
        "HOST:6379 (ray start --head --port) or to ray://HOST:10001 (Ray client)"
    )


def _restore_sigterm(handler: Any) -> None:
    """``ray.init`` installs Ray's failure handler for SIGTERM in this process (a stack dump, then exit),
    over the Python one: `kill` or `ray job stop` then ends the run without ``metarec train``'s
    "interrupted; a re-run starts at ..." (interrupts.py, ``sigterm_as_interrupt``). Put it back."""
    if callable(handler) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _loopback_node_ip() -> None:
    """Make 127.0.0.1 the node address of the cluster this process starts.

    ``ray.init(_node_ip_address="127.0.0.1")`` alone does not: Ray replaces a loopback address with the
    machine's routable one (``services.resolve_ip_for_localhost``), and every Ray server binds to the node
    address, or to all interfaces when it is not loopback. Ray's switch for a one-machine cluster is
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (the default on macOS/Windows): the node address is then
    127.0.0.1, and GCS, raylet, object manager, workers, dashboard, agents and metrics exporters all bind to
    it. The variable is read when ``ray`` is imported, so the driver's copy is set too; the processes Ray
    starts inherit the environment (with token authentication on: ``LOCAL_CLUSTER_FORCED_ENV``).
    """
    from ray._private import ray_constants
    from ray._raylet import Config

    os.environ.update(LOCAL_CLUSTER_FORCED_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False
    # Ray caches its RAY_* settings (RAY_AUTH_MODE among them) in this process; re-read them, as Ray does
    # itself when it turns token authentication on, so the driver presents the token its cluster requires.
    Config.initialize("")


def is_loopback_address(address: str) -> bool:
    """``RAY_ADDRESS`` names this machine's loopback (``127.0.0.1:6379``, ``localhost:6379``,
    ``ray://[::1]:10001``)."""
    from ray._private.services import is_localhost

    host = _host_and_port(address)[0]
    return host is not None and is_localhost(host)


def _join_on_loopback() -> None:
    """Join a cluster at a loopback ``RAY_ADDRESS`` through loopback.

    Ray swaps a loopback GCS address for the machine's routable one (``services.resolve_ip_for_localhost``)
    unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: a head started with that switch (every server on
    127.0.0.1, docs/cluster.md) is then never reached, and ``ray.init`` retries for ever. With the switch in
    this process the address is used as given; a head on every interface answers there too.
    """
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


# Ray Train settings for a cluster this process starts itself (one node: this machine). Ray Train passes
# them from the driver to its controller. A value the user has set in the environment wins.
LOCAL_CLUSTER_ENV = {
    # The preemption watcher is an actor that polls Ray for nodes being drained (spot instances, autoscaler
    # scale-down) to checkpoint before they go. A local cluster has no node to drain; the actor would only
    # take ~1% of a core beside the workers for the whole run.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}
# Settings a local cluster always gets, whatever the environment says.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOCAL_CLUSTER_FORCED_ENV = {
    # Every Ray process and client must present the cluster's token (Ray 2.52+); ray.init creates one in
    # ~/.ray/auth_token when there is none. Without it, whatever reaches a port could run code, and an
    # explicit RAY_AUTH_MODE=disabled would otherwise turn that off for a cluster nobody else needs to join.
    "RAY_AUTH_MODE": "token",
    LOOPBACK_ENV: "0",  # see _loopback_node_ip
}


def local_cluster_defaults() -> None:
    for key, value in LOCAL_CLUSTER_ENV.items():
        os.environ.setdefault(key, value)


def user_error_in(exc: BaseException) -> BaseException | None:
    """The user mistake inside Ray's wrappers, if that is what failed: a ``ValueError`` (``UserError``) or an
    ``OSError`` naming a file, raised on a worker or the Train controller.

    Ray Train reports a worker's exception as a ``TrainingFailedError`` (``WorkerGroupError`` holding each
    rank's exception, or ``ControllerError``), and task errors come as ``RayTaskError`` with the remote
    traceback in the message: raised as is, a bad checkpoint is two tracebacks. Unwrapped, the CLI prints the
    original one-line message (``--verbose`` still shows the traceback).
    """
    from ray.exceptions import RayError

    stack, seen = [exc], set()
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        is_user = isinstance(e, ValueError) or isinstance(e, OSError) and e.filename is not None
        if is_user and not isinstance(e, RayError):  # a RayTaskError may also subclass its cause's type
            return e
        failures = getattr(e, "worker_failures", None) or {}
        stack += [failures[rank] for rank in sorted(failures, reverse=True)]  # rank 0 first
        stack += [getattr(e, a, None) for a in ("controller_failure", "cause", "_base_exc")]
        stack += [e.__cause__, e.__context__]
    return None


# What torch raises on a worker Ray gave a GPU to when it cannot use one: a CPU-only build (no NCCL for the
# process group, no CUDA), or a CUDA build on a node without a driver or a visible device.
TORCH_WITHOUT_GPU = (
    "Distributed package doesn't have NCCL built in",
    "Torch not compiled with CUDA enabled",
    "No CUDA GPUs are available",
    "Found no NVIDIA driver on your system",
)


def gpu_failure_in(exc: BaseException, cfg: Config) -> UserError | None:
    """With ``runtime.use_gpu``: the workers' torch failing to use the GPU Ray reserved for them (a cluster
    whose nodes have a CPU-only torch, or a GPU resource without a usable GPU) as one line instead of Ray
    Train's nested tracebacks, None for any other failure. The failure's text is searched, Ray Train's
    wrappers keeping the worker's exception as text only."""
    import traceback

    if not cfg.runtime.use_gpu:
        return None
    text = "".join(traceback.format_exception(exc))
    said = next((marker for marker in TORCH_WITHOUT_GPU if marker in text), None)
    if said is None:
        return None
    return UserError(
        f"runtime.use_gpu=true: the training workers' torch cannot use the GPU Ray gave them ({said}); "
        "install a CUDA build of torch on the cluster's GPU nodes, or set runtime.use_gpu=false"
    )


def shutdown_ray() -> None:
    """Disconnect (and stop the local cluster this process started, if any)."""
    import ray

    ray.shutdown()


def build_trainer(
    cfg: Config,
    datasets: dict[str, Any],
    catalogue: dict[str, Any],
    progress: Any = None,
    resume_from: Path | None = None,
    resume_say: str = "data",
    notes: bool = False,
):
    """``catalogue``: ``num_items`` and, when the data has them, ``item_titles`` and ``item_raw_ids``, so
    checkpoints of a Ray run carry them like a local run's (``metarec recommend`` speaks raw ids), and
    ``features`` (the side-information tables, numpy only) for the model. ``resume_say``: what rank 0 says
    of the settings changed since ``resume_from`` (``check_resume_settings``); ``notes``: rank 0 sends its
    warnings to ``progress``, for the driver to print (Ray shows no worker output unless verbose)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from metarec_dist.run_folder import storage_root

    rt = cfg.runtime
    resources = {"CPU": rt.cpus_per_worker, **({"GPU": rt.gpus_per_worker} if rt.use_gpu else {})}
    from metarec_dist.runtime.ray_worker import train_loop_per_worker

    config = {
        "cfg": cfg.to_dict(),
        "catalogue": catalogue,
        "progress": progress,
        "resume_from": str(resume_from) if resume_from else None,
        "resume_say": resume_say,
        "notes": notes,
        # Where relative data files were read (the driver's folder): every checkpoint records it, also on
        # cloud storage, where the run folder records nothing (train.trainer.data_folder).
        "data_folder": os.getcwd(),
    }
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=rt.num_workers,
            use_gpu=rt.use_gpu,
            resources_per_worker=resources,
            placement_strategy=rt.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=rt.run_name,
            storage_path=storage_root(rt),
            failure_config=ray.train.FailureConfig(max_failures=rt.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
        ),
        datasets=datasets,
        # Nothing is split by Ray Train: rank r reads its own `train_<r>` (ray_data.py says why), and every
        # rank the validation users it evaluates.
        dataset_config=ray.train.DataConfig(datasets_to_split=[]),
        torch_config=torch_config(backend="nccl" if rt.use_gpu else "gloo"),
    )


def torch_config(backend: str) -> Any:
    """Ray Train's ``TorchConfig``; on a cluster this process started (one machine, no ``RAY_ADDRESS``) the
    one whose rendezvous store listens on 127.0.0.1 only, as every Ray server of that cluster does."""
    from ray.train.torch import TorchConfig

    from metarec_dist.runtime.loopback_group import LoopbackTorchConfig

    if os.environ.get("RAY_ADDRESS"):  # a cluster of any size: Ray Train's rendezvous on the node address
        return TorchConfig(backend=backend)
    return LoopbackTorchConfig(backend=backend)


def local_cpus(cfg: Config) -> int:
    """Logical CPUs of a cluster this process starts: the machine's, and at least two beyond the training
    workers'. The workers read their shards through Ray Data read tasks, which need a CPU of their own: with
    every CPU held by a worker (2 workers on a 2-core laptop) they would never be scheduled."""
    rt = cfg.runtime
    return max(os.cpu_count() or 1, rt.num_workers * rt.cpus_per_worker + 2)


def warn_if_oversubscribed(cfg: Config) -> None:
    """On a cluster this process starts (``local_cpus`` gives it a logical CPU per worker whatever the
    machine has): say so when the workers outnumber the machine's CPUs. Each is a process with its own model
    copy, so 64 workers on 2 cores sit at 0% for minutes (measured: > 4 min before the first step) and may
    run the machine out of memory, with nothing said."""
    rt = cfg.runtime
    cores = os.cpu_count() or 1
    if os.environ.get("RAY_ADDRESS") or rt.num_workers * rt.cpus_per_worker <= cores:
        return
    log.warning(
        "runtime.num_workers=%d x runtime.cpus_per_worker=%d on a machine with %d CPUs: the training "
        "processes (each with its own model copy and memory) share them, and starting them alone takes "
        "minutes; use at most %d workers here, or join a bigger cluster via RAY_ADDRESS",
        rt.num_workers,
        rt.cpus_per_worker,
        cores,
        max(1, cores // rt.cpus_per_worker),
    )


def warn_if_no_cpu_left(cfg: Config) -> None:
    """On a cluster this process joined: say so when the workers would hold every CPU (the reads wait)."""
    import ray

    rt = cfg.runtime
    total = ray.cluster_resources().get("CPU", 0)
    if total < rt.num_workers * rt.cpus_per_worker + 1:
        log.warning(
            "the cluster has %g CPUs and the %d workers take %d each: none is left for Ray Data's read "
            "tasks, and the workers wait for their data until one is (lower runtime.cpus_per_worker or "
            "runtime.num_workers, or add a node)",
            total,
            rt.num_workers,
            rt.cpus_per_worker,
        )


def resource_shortfall(cfg: Config, cluster: dict[str, float]) -> list[str]:
    """What the training workers ask for beyond ``cluster`` (``ray.cluster_resources()``), one line each."""
    rt = cfg.runtime
    asks = {"CPU": ("cpus_per_worker", rt.cpus_per_worker)}
    if rt.use_gpu:
        asks["GPU"] = ("gpus_per_worker", rt.gpus_per_worker)
    short = []
    for name, (key, each) in asks.items():
        need = rt.num_workers * each
        if cluster.get(name, 0) < need:
            short.append(
                f"runtime.num_workers={rt.num_workers} x runtime.{key}={each:g} needs {need:g} {name}s, "
                f"the cluster has {cluster.get(name, 0):g}"
            )
    return short


def check_cluster_resources(cfg: Config) -> None:
    """Ray Train waits forever for workers it cannot place: refuse at once on a cluster this process
    started (nothing will join it), and on a joined one (RAY_ADDRESS) whose autoscaler's reported config
    cannot grow it to enough (what Ray Train's worker group checks too, with a traceback); a joined one
    that may still get them (an autoscaler, or nodes started by hand) is warned, naming what to do."""
    import ray

    cluster = ray.cluster_resources()
    short = resource_shortfall(cfg, cluster)
    if not short:
        return
    text = "; ".join(short)
    if os.environ.get("RAY_ADDRESS"):
        check_joined_cluster_can_grow(cfg, text, cluster)
        return
    raise UserError(
        f"{text}: the run could never start ({shortfall_fix(cfg)}, or join a bigger cluster via RAY_ADDRESS)"
    )


def shortfall_fix(cfg: Config) -> str:
    """What to lower for workers that do not fit: the CPUs, and with ``runtime.use_gpu`` the GPUs."""
    if not cfg.runtime.use_gpu:
        return "lower runtime.num_workers / runtime.cpus_per_worker"
    return (
        "lower runtime.num_workers / runtime.cpus_per_worker / runtime.gpus_per_worker, or set "
        "runtime.use_gpu=false to train on CPUs"
    )


def check_joined_cluster_can_grow(cfg: Config, text: str, cluster: dict[str, float]) -> None:
    """A joined cluster (resources ``cluster``) short of what the workers ask for (``text``): ``UserError``
    when its autoscaler's config (reported to the GCS: node groups and their max counts) caps it below that,
    else one warning: the workers wait for the nodes (an autoscaler's, or ``ray start`` by hand; none may
    ever come)."""
    most = autoscaler_max_resources()
    rt = cfg.runtime
    needs = {"CPU": rt.num_workers * rt.cpus_per_worker}
    if rt.use_gpu:
        needs["GPU"] = rt.num_workers * rt.gpus_per_worker
    if most is not None:
        capped = [
            f"{most.get(k, 0):g} {k}s"
            for k, need in needs.items()
            if cluster.get(k, 0) < need and most.get(k, 0) < need
        ]
        if capped:
            raise UserError(
                f"{text}, and its autoscaler grows it to at most {', '.join(capped)}: the run could never "
                f"start ({shortfall_fix(cfg)})"
            )
    log.warning(
        "%s: the workers wait until nodes with them join (an autoscaler's); Ctrl-C if none will (%s)",
        text,
        shortfall_fix(cfg),
    )


def autoscaler_max_resources() -> dict[str, float] | None:
    """The most of each resource the joined cluster's autoscaler may grow it to (Ray's reading of the
    cluster config its autoscaler reports, as Ray Train's worker group uses it); None when there is no such
    config, or it cannot be read from here (a Ray client connection)."""
    from ray._private.state import state

    try:
        return state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - a private API: no answer is "unknown", and the run only warns
        return None


def cluster_readable(folder: str, cfg: Config) -> str:
    """Where every worker can read the user files: where they are when the run folder is on this machine's
    file system (one machine, or a shared file system with ``data.cache_dir`` on it too); a copy under the
    run folder when ``runtime.storage_path`` is a cloud URI: ``<run>/data/<entry>/users``, named after the
    cache entry (its key), so files of other data are never mixed in."""
    from metarec_dist.run_folder import local_run_dir, run_path

    if local_run_dir(cfg.runtime) is not None or "://" in folder:
        return folder
    import pyarrow.fs

    dest = f"{run_path(cfg.runtime)}/data/{Path(folder).parent.name}/users"
    log.info("copying the user files %s to %s for the cluster", folder, dest)
    filesystem, path = pyarrow.fs.FileSystem.from_uri(dest)
    filesystem.create_dir(path, recursive=True)
    pyarrow.fs.copy_files(folder, path, destination_filesystem=filesystem)
    return dest


def for_workers(cfg: Config) -> Config:
    """``cfg`` with its local paths made absolute: Ray workers run in their own directories. The storage path
    only: ``runtime.deepspeed_override`` is a file here, which workers elsewhere may not have
    (:func:`override_for_workers` gives them a copy)."""
    from metarec_dist.run_folder import storage_root

    runtime = dataclasses.replace(cfg.runtime, storage_path=storage_root(cfg.runtime))
    return dataclasses.replace(cfg, runtime=runtime)


# The copy of runtime.deepspeed_override in the run folder, which the workers read.
OVERRIDE_COPY = "deepspeed_override.json"


def override_for_workers(cfg: Config) -> Config:
    """``cfg`` with ``runtime.deepspeed_override`` read here and given to the workers as a copy in the run
    folder, which every node reads (Ray's checkpoints go there too).

    The path resolved here names a file on this machine: on a cluster, a worker on another node (or a
    submitted job's working dir, unpacked elsewhere) may have no file there, and DeepSpeed's start failed on
    it. The copy's path is also what the checkpoints record, the same at every resume. A cloud run folder
    (``s3://``) is no file path: the workers then read the path given (a file every node must have)."""
    from metarec_dist.checkpoint import atomic_write_text
    from metarec_dist.run_folder import local_run_dir
    from metarec_dist.runtime.deepspeed_engine import read_override

    given, run_dir = cfg.runtime.deepspeed_override, local_run_dir(cfg.runtime)
    if not given:
        return cfg
    try:
        content = read_override(given)  # before Ray starts: a missing or broken file fails here
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if run_dir is None:
        log.warning(
            "runtime.deepspeed_override %s: with cloud storage every node must have this file at this path",
            given,
        )
        return cfg
    copy = run_dir / OVERRIDE_COPY
    if Path(given).resolve() != copy.resolve():  # a resume of a submitted job may name the copy itself
        atomic_write_text(copy, json.dumps(content, indent=1) + "\n")
        log.info("runtime.deepspeed_override %s: the workers read its copy %s", given, copy)
    return dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, deepspeed_override=str(copy)))


def check_resume(cfg: Config, num_items: int) -> Path | None:
    """On the driver, before any worker starts: refuse what the workers would refuse (a run folder whose
    checkpoints are all incomplete, ``checkpoint.resume=false`` over checkpoints, shape-changing settings)
    with a plain message, and print the changed settings here, where they are seen. The checkpoint found."""
    point = resume_point_of(cfg)
    check_resume_settings(cfg, point, num_items)
    return point


def resume_point_of(cfg: Config) -> Path | None:
    """The run folder's checkpoint to resume from (None: a fresh run); its mistakes as plain errors."""
    from metarec_dist.checkpoint import resume_point
    from metarec_dist.run_folder import local_run_dir

    run_dir = local_run_dir(cfg.runtime)
    return None if run_dir is None else resume_point(run_dir, cfg.checkpoint.resume)


def check_resume_settings(
    cfg: Config, point: Path | None, num_items: int, item_raw_ids: list[str] | None = None
) -> str:
    """Shape-changing settings (or another catalogue: size, or ``item_raw_ids`` when given) against the
    checkpoint: an error; others: a warning. The training users are compared by the workers (each holds
    its shard). What rank 0 says of the changed settings once it has compared the data (``say`` of
    ``checkpoint.check_resume_config``): ``"all"`` when a data setting changed, so that changed data is one
    refusal, not this process's warning of the other settings followed by the workers' refusal; else
    ``"data"`` (this process has said the rest); ``"all"`` too when it had no checkpoint to compare."""
    from metarec_dist.checkpoint import check_resume_config, read_client_state

    if point is None:  # nothing checked here (a fresh run, or cloud storage, where Ray finds the checkpoint)
        return "all"
    check_manifest(cfg, point)
    client = read_client_state(point)
    rank0_says = "all" if data_judged_by_workers(client, cfg) else "data"
    check_resume_config(
        point, client, cfg, num_items, item_raw_ids, say="all" if rank0_says == "data" else "none"
    )
    return rank0_says


def check_manifest(cfg: Config, point: Path | None) -> None:
    """What the workers refuse from the checkpoint's manifest (``open_checkpoint``), only after Ray has
    started them: refused here, before: a file it lists missing or of another size, a checkpoint written by
    another number of workers. (Its files' hashes are the workers' to check: they read every byte.)"""
    from metarec_dist.checkpoint import other_world_size, verify

    if point is None:
        return
    written_by = verify(point, hashes=False)["world_size"]
    if written_by != cfg.runtime.num_workers:
        raise UserError(other_world_size(point, written_by, cfg.runtime.num_workers))


def data_judged_by_workers(client: dict[str, Any], cfg: Config) -> bool:
    """Whether a ``data.*`` setting changed since the checkpoint (its client state ``client``) and the
    workers compare the data with the digests it records: only they can tell a refusal from a warning,
    and the driver for a finished run, whose data it reads to compare (``finished_result``)."""
    from metarec_dist.checkpoint import TRAIN_DATA, TRAIN_FEATURES, config_changes, resolved_config
    from metarec_dist.metrics.redact import redact

    if client.get(TRAIN_DATA) is None and client.get(TRAIN_FEATURES) is None:
        return False  # a checkpoint from before the digests: the driver compares the catalogue only
    changes = config_changes(
        resolved_config(client.get("config") or {}), resolved_config(redact(cfg.to_dict()))
    )
    return any(key.startswith("data.") for key in changes)


def prepare_off_driver(cfg: Config, scratch: Path) -> Any:
    """Prepare the data (a cache miss, synthetic or Hub data) in a Ray task on this node, not in the driver.

    Preparing holds the whole log in memory (reading, k-core filtering, per-user sorting); in the driver that
    peak would stay for the whole run (20M interactions: 2 GB against 0.45 GB with the cache warm, `bench
    scale`). The task's worker process exits when it is done (``max_calls=1``), returning the memory; what
    comes back is the catalogue (item ids, titles, feature tables), not the users. Pinned to this node
    because ``scratch`` and the cache are this node's folders (``cluster_readable`` copies them to shared
    storage afterwards). A data mistake raised in the task is re-raised here as itself.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from metarec_dist.data.pipeline import prepare_shards

    node = ray.get_runtime_context().get_node_id()
    if not any(n["NodeID"] == node and n["Alive"] and n["Resources"].get("CPU", 0) >= 1 for n in ray.nodes()):
        # e.g. a head node started with --num-cpus=0: nothing may run beside the driver
        log.info("preparing the data in the driver: this node offers Ray no CPU for a task")
        return prepare_shards(cfg.data, scratch)
    here = NodeAffinitySchedulingStrategy(node, soft=False)
    task = ray.remote(num_cpus=1, max_calls=1, max_retries=0)(prepare_shards)
    data = data_as_driver_sees_it(cfg.data)
    try:
        return ray.get(task.options(scheduling_strategy=here).remote(data, scratch))
    except ray.exceptions.RayTaskError as exc:
        mistake = user_error_in(exc)
        if mistake is None:
            raise
        raise mistake from None


def data_as_driver_sees_it(data: DataConfig) -> DataConfig:
    """``data`` with every place it is read from or cached in fixed as this process resolves it: the data
    folder (``$METAREC_DATA_DIR``), the cache (``$METAREC_CACHE_DIR``) and the files, absolute.

    The Ray task that prepares the data runs on this node but in a Ray worker process: on a joined cluster
    (``RAY_ADDRESS``) that has the environment and working directory of the node's ``ray start``, not this
    process's. Handed ``data`` as given, it looked for ``data.name`` outside ``$METAREC_DATA_DIR`` (and went
    to download it), read a relative ``data.path`` from another folder, and wrote the cache entry where the
    driver, looking in ``$METAREC_CACHE_DIR``, never finds it."""
    from metarec_dist.data.cache import cache_root
    from metarec_dist.data.config import DATA_PATH_KEYS
    from metarec_dist.data.fetch import default_data_dir

    def absolute(path: str | None) -> str | None:
        if path is None or "://" in path:
            return path
        return os.path.abspath(os.path.expanduser(path))

    paths = {key: absolute(getattr(data, key)) for key in DATA_PATH_KEYS}
    paths["data_dir"] = paths["data_dir"] or str(default_data_dir().absolute())
    return dataclasses.replace(data, **paths, cache_dir=str(cache_root(data).absolute()))


def train_on_ray(cfg: Config, verbose: bool = False) -> dict[str, Any]:
    """Run the job; the driver holds the run-folder lock, draws a progress bar from rank 0's updates and
    returns the final metrics."""
    from metarec_dist.run_folder import RunLock, local_run_dir

    cfg = for_workers(cfg)
    with RunLock(local_run_dir(cfg.runtime), record_data=False):  # recorded once the data is read
        return _train_on_ray(override_for_workers(cfg), verbose)


def _train_on_ray(cfg: Config, verbose: bool) -> dict[str, Any]:
    from metarec_dist.run_folder import local_run_dir

    # Data that is not cached (synthetic, Hub, data.cache=false) is written as Parquet files into a
    # temporary folder inside the run folder, which the workers can read; removed when the run ends.
    run_dir = local_run_dir(cfg.runtime)
    if run_dir is not None:
        remove_stale_scratch(run_dir)
    with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=run_dir) as scratch:
        return _fit_on_ray(cfg, verbose, Path(scratch))


SCRATCH_PREFIX = ".users-"


def remove_stale_scratch(run_dir: Path) -> None:
    """Remove the users' scratch folders a killed run left in ``run_dir`` (kill -9, a lost node: no cleanup
    ran); a copy of the data set each, they would pile up with every kill. Called under the run folder's
    lock, so none is a live run's; only folders of metarec's own prefix are touched."""
    if not run_dir.is_dir():
        return
    for folder in run_dir.iterdir():
        if folder.name.startswith(SCRATCH_PREFIX) and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
            log.info("removed %s, left by a run that was killed", folder)


def _fit_on_ray(cfg: Config, verbose: bool, scratch: Path) -> dict[str, Any]:
    from metarec_dist.data.pipeline import cached_shards
    from metarec_dist.run_folder import local_run_dir, record_data_folder, run_path
    from metarec_dist.runtime.progress import ProgressActor, run_with_progress
    from metarec_dist.runtime.ray_data import user_datasets
    from metarec_dist.runtime.ray_worker import WANDB_METRIC
    from metarec_dist.train.launch import BarOnceResumed, check_gpu_visible

    # Before Ray starts: a missing file fails in a second. The driver reads no rows of the log for a run
    # that trains: a cache hit is a folder of Parquet files, and a miss is prepared by a Ray task
    # (prepare_off_driver); only a finished run's data is read here, to compare (check_trained_data).
    resume_from = resume_point_of(cfg)
    check_manifest(cfg, resume_from)  # the manifest's refusals, whether or not the data is cached
    shards = cached_shards(cfg.data)
    if shards is not None:
        rank0_says = check_resume_settings(cfg, resume_from, shards.num_items, shards.item_raw_ids)
    finished = finished_result(cfg, resume_from, checked=shards is not None)
    if finished is not None:  # a re-run of a finished run: said without starting Ray (~45 s)
        return finished
    warn_if_oversubscribed(cfg)
    check_ray_address()
    if not os.environ.get("RAY_ADDRESS"):  # the cluster started here trains with this machine's torch
        check_gpu_visible(cfg, cluster_here=True)
    init_ray(verbose or cfg.logging.verbose, local_cpus(cfg), dashboard=cfg.runtime.dashboard)
    check_cluster_resources(cfg)
    warn_if_no_cpu_left(cfg)
    if shards is None:
        shards = prepare_off_driver(cfg, scratch)
        rank0_says = check_resume_settings(cfg, resume_from, shards.num_items, shards.item_raw_ids)
    if (run_dir := local_run_dir(cfg.runtime)) is not None:  # read, and the resume accepted so far
        record_data_folder(run_dir)
    shards.folder = cluster_readable(shards.folder, cfg)
    datasets = user_datasets(shards, cfg.runtime.num_workers)
    actor = ProgressActor.remote()
    catalogue = {
        "num_items": shards.num_items,
        "item_titles": shards.item_titles,
        "item_raw_ids": shards.item_raw_ids,
        "features": shards.features,  # numpy tables; each worker adds its users' ids (split_users)
        "new_items": shards.new_items,  # new_items protocol: validation ranks them
    }
    notes = not (verbose or cfg.logging.verbose)  # verbose: Ray shows the workers' own logs
    trainer = build_trainer(
        cfg, datasets, catalogue, progress=actor, resume_from=resume_from, resume_say=rank0_says, notes=notes
    )
    bar = BarOnceResumed(cfg, resume_from)  # drawn at rank 0's first report: after its resume checks
    try:
        result = fit_until_stopped(lambda: run_with_progress(trainer.fit, actor, WithWorkerNotes(bar)))
    except Exception as exc:  # Ray Train raises a worker's failure from fit(), wrapped
        mistake = user_error_in(exc) or gpu_failure_in(exc, cfg)
        if mistake is None:
            raise
        raise mistake from None
    finally:
        bar.close()
    if result.error:
        raise user_error_in(result.error) or gpu_failure_in(result.error, cfg) or result.error
    metrics = dict(result.metrics or {})
    reported = metrics.pop(WANDB_METRIC, None)
    out = {
        **metrics,
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "run_path": run_path(cfg.runtime),
        **wandb_used(cfg, reported),
    }
    return with_resume_point(out, resume_from)


def finished_result(cfg: Config, point: Path | None, checked: bool) -> dict[str, Any] | None:
    """A re-run of a finished run, decided on the driver before Ray starts: the trainer's own verdict
    (``trainer.finished_checkpoint_message``, what every worker would say after starting and loading
    ``point``) is warned here and the run's result returned as ``_fit_on_ray`` would have returned it (Ray's
    record of the checkpoint's metrics, read from the run folder). None when steps are left (or the
    checkpoint records no catalogue). ``checked``: ``check_resume_settings`` has compared the settings and
    catalogue already; else they are compared here against the checkpoint's own catalogue. Then the
    training data itself, as the workers would (``check_trained_data``): data files changed under the same
    settings are refused, not reused; and when a ``data.*`` setting changed (``data_judged_by_workers``),
    what rank 0 would say once it has compared the data is said here: the refusal of other training data,
    else every changed setting, before "already finished" (without starting Ray to hear it)."""
    from metarec_dist.checkpoint import open_checkpoint, read_client_state
    from metarec_dist.run_folder import run_path
    from metarec_dist.train.trainer import finished_checkpoint_message

    if point is None:
        return None
    client = read_client_state(point)
    message = finished_checkpoint_message(cfg, client)
    num_items = client.get("num_items")  # recorded by every checkpoint since the catalogue check
    if message is None or not isinstance(num_items, int):
        return None
    if not checked:
        check_resume_settings(cfg, point, num_items, client.get("item_raw_ids"))
    # A data setting changed: check_resume_settings left the changes to rank 0 (resume_say "all"): said here.
    check_trained_data(cfg, point, client, say="all" if data_judged_by_workers(client, cfg) else "none")
    open_checkpoint(point, cfg.runtime.num_workers)  # as a worker would: a damaged one is refused, not reused
    log.warning("%s", message)
    out = {**ray_recorded_metrics(point), "checkpoint": str(point), "run_path": run_path(cfg.runtime)}
    return with_resume_point({**out, **wandb_used(cfg)}, point)


def check_trained_data(cfg: Config, point: Path, client: dict[str, Any], say: str = "none") -> None:
    """The training users and side tables of ``cfg``'s data against the digests the checkpoint ``point``
    (client state ``client``) records, compared as the workers compare them once they have loaded it
    (``checkpoint.check_resume_config``: the same one-line refusal). ``say``: its ``say``, what of the
    changed settings to say once the data is found the same ("none": ``check_resume_settings`` said them;
    "all": a data setting changed, what rank 0 would say). Without it a finished run whose data files
    changed under the same data settings (``data.cache=false``, or a cache miss) was "already finished",
    where the workers, steps left, refuse "its training data differs".

    Reads the prepared data: the cache entry when there is one (memory-mapped, no log parsing), else the
    log, once (with ``data.cache`` this writes the entry). In the driver, but only for a finished run: this
    process ends right after, so the memory peak does not last through a training run."""
    from metarec_dist.checkpoint import TRAIN_DATA, TRAIN_FEATURES, check_resume_config
    from metarec_dist.data import prepare_data
    from metarec_dist.data.digest import features_digest, sharded_digest

    if client.get(TRAIN_DATA) is None and client.get(TRAIN_FEATURES) is None:
        return  # a checkpoint from before the digests: the catalogue was compared, as the workers do
    prepared = prepare_data(cfg.data)
    splits = prepared.user_splits()
    # The digest the run's ranks recorded: each its shard's (user id modulo the world size), combined.
    train = sharded_digest(splits.train, splits.train_users, cfg.runtime.num_workers)
    features = features_digest(splits.features)
    check_resume_config(point, client, cfg, prepared.num_items, prepared.item_raw_ids, train, features, say)


def ray_recorded_metrics(point: Path) -> dict[str, Any]:
    """The metrics Ray Train recorded with the checkpoint ``point`` (its run folder's
    ``ray.train.Result``, read without a cluster), as a Ray run's result carries them; empty when Ray's
    record is of another checkpoint (or there is none: a killed driver, a run folder of a local run)."""
    import ray.train

    from metarec_dist.checkpoint import run_dir_of
    from metarec_dist.runtime.ray_worker import WANDB_METRIC

    ray_log = logging.getLogger("ray.train")  # "A run snapshot was found in storage folder ..." (INFO)
    level = ray_log.level
    ray_log.setLevel(logging.WARNING)
    try:
        result = ray.train.Result.from_path(str(run_dir_of(point)))
    except (OSError, ValueError, RuntimeError) as exc:
        log.info("no Ray Train record of %s's metrics: %s", point, exc)
        return {}
    finally:
        ray_log.setLevel(level)
    if result.checkpoint is None or Path(result.checkpoint.path).name != point.name:
        return {}
    return {k: v for k, v in (result.metrics or {}).items() if k != WANDB_METRIC}


def fit_until_stopped(fit: Callable[[], Any]) -> Any:
    """``fit()``; on Ctrl-C (or SIGTERM) the workers are stopped before the interrupt goes on: ``fit``
    runs Ray Train in a thread, whose workers trained on (and saved checkpoints) after the CLI had said
    which meta-step a re-run resumes from, and after the run folder's lock and the users' scratch folder
    were released. ``ray.shutdown`` (waiting for the processes) stops a cluster this process started; on
    one joined through ``RAY_ADDRESS`` this job's actors are stopped first (:func:`stop_job_actors`)."""
    try:
        return fit()
    except KeyboardInterrupt:
        import ray

        if os.environ.get("RAY_ADDRESS") and ray.is_initialized():
            stop_joined_job()
        ray.shutdown(wait_for_processes=True)
        raise


# How long the actors of an interrupted run on a joined cluster get to be reported dead.
STOP_TIMEOUT_S = 30.0


def stop_joined_job() -> None:
    """:func:`stop_job_actors`, here or, joined as a Ray client (``ray://``, whose process has no GCS
    connection: the actor table is not readable here), in a task of this job on the cluster; a Ray client's
    job otherwise ran on for seconds after the client left (measured: 7 s). What did not stop is said."""
    import ray
    from ray.util.client import ray as client

    try:
        if client.is_connected():
            task = ray.remote(num_cpus=0, max_retries=0)(stop_job_actors)
            live = ray.get(task.remote(), timeout=STOP_TIMEOUT_S + 10)
        else:
            live = stop_job_actors()
    except Exception as exc:  # noqa: BLE001 -- the interrupt goes on whatever the cluster answered
        live = [f"unknown: {exc}"]
    if live:
        log.warning(
            "%d of this run's Ray actors (%s) may still run after the interrupt; a re-run resumes from the "
            "newest complete checkpoint, which may be newer than the one named below",
            len(live),
            ", ".join(sorted(set(live))),
        )


# Actor states that may still run code (Ray's ActorTableData.ActorState, but DEAD).
LIVE_ACTOR_STATES = {"DEPENDENCIES_UNREADY", "PENDING_CREATION", "ALIVE", "RESTARTING"}


def stop_job_actors(poll_s: float = 0.1) -> list[str]:
    """Kill this job's actors on a joined cluster and wait until the GCS reports each dead; the class names
    of those still running after ``STOP_TIMEOUT_S``.

    The driver leaving a joined cluster ends its job, and the raylets kill the job's processes after
    ``ray.shutdown`` has returned, in a race with the CLI's "a re-run resumes from meta-step N" (measured
    with Ray 2.60, 5 runs: once the Train workers were alive 0.15 s after that line, free to save a newer
    checkpoint than the one named; no checkpoint came after it in those runs).
    The Train controller goes first (a worker killed before it would be replaced, ``runtime.max_failures``);
    its workers, which it owns, die with it. An actor is reported dead once its process is gone. Detached
    actors (Ray Data's, Serve's) belong to the cluster and are left alone."""
    import time

    import ray
    from ray._private.worker import global_worker

    deadline = time.monotonic() + STOP_TIMEOUT_S
    killed: set[str] = set()
    while True:
        live = live_job_actors()
        if not live or time.monotonic() > deadline:
            return [a["ActorClassName"] for a in live]
        controllers = [a for a in live if a["ActorClassName"] == "TrainController"]
        for actor in controllers or live:  # the controller first: then nothing replaces a killed worker
            if actor["ActorID"] not in killed:
                global_worker.core_worker.kill_actor(ray.ActorID.from_hex(actor["ActorID"]), True)
                killed.add(actor["ActorID"])
        time.sleep(poll_s)


def live_job_actors() -> list[dict[str, Any]]:
    """This job's actors that may still run (the GCS's actor table), detached ones left out."""
    import ray
    from ray._private.state import actors

    job = ray.JobID.from_hex(ray.get_runtime_context().get_job_id())
    return [a for a in actors(job_id=job).values() if a["State"] in LIVE_ACTOR_STATES and not a["IsDetached"]]


class WithWorkerNotes:
    """The progress sink, plus the warnings rank 0 sends through the progress actor (``ray_worker``'s
    ``DriverNotes``), logged here as the worker logged them: a Ray run's resume warnings, W&B's fallback to
    offline, ... were otherwise seen only with ``--verbose`` (Ray's log forwarding is off)."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    def log(self, metrics: dict[str, Any], step: int) -> None:
        from metarec_dist.runtime.ray_worker import NOTE_KEY

        note = metrics.get(NOTE_KEY)
        if isinstance(note, dict):
            log.log(int(note.get("level", logging.WARNING)), "%s", note.get("message"))
            return
        self.sink.log(metrics, step)

    def close(self) -> None:
        self.sink.close()


def wandb_used(cfg: Config, reported: Any = None) -> dict[str, Any]:
    """``{"wandb": record}``: the W&B run rank 0 logged to, as it resolved it (its environment, not this
    process's: a Ray node's or a job's ``WANDB_*`` variables may differ): the run folder's record, else
    the one rank 0 ``reported`` with its metrics (cloud storage, where the folder cannot be read here), if
    of this run's id; empty when there is neither (W&B off)."""
    from metarec_dist.metrics.wandb_logger import read_record, run_id
    from metarec_dist.run_folder import local_run_dir, storage_root

    if cfg.logging.wandb == "off":
        return {}
    rid = run_id(cfg.runtime.run_name, storage_root(cfg.runtime))
    record = read_record(local_run_dir(cfg.runtime), rid)
    if record is None and isinstance(reported, dict) and reported.get("id") == rid:
        record = reported  # a run folder moved here has Ray's record of the old id: not this run's
    return {} if record is None else {"wandb": record}


def with_resume_point(out: dict[str, Any], resume_from: Path | None) -> dict[str, Any]:
    """A re-run of a finished run trains nothing and saves no checkpoint, and Ray's result keeps only the
    metrics of the last report that came with one (the first run's): the driver, which knows where this
    run resumed, says that nothing was trained (the summary's "already finished" line). The step comes from
    the checkpoint's name: a run that trained on has pruned that checkpoint by now if checkpoint.keep was
    lowered (reading its client state failed the finished run).

    Ray's result can also be older than the checkpoint resumed from: the last checkpoints of a stopped job
    or a killed driver were never registered by Ray (``resume_dir`` resumes from them all the same). With
    nothing trained since, the result is that checkpoint, without Ray's metrics of an older step (the
    summary named the older checkpoint and said "stopped early")."""
    if resume_from is None:
        return out
    from metarec_dist.checkpoint import checkpoint_step, read_client_state

    saved = checkpoint_step(Path(resume_from).name)
    if saved is None:  # not named as a checkpoint: its client state says
        saved = int(read_client_state(resume_from)["step"])
    if out.get("step") is None or int(out["step"]) < saved:
        kept = {k: out[k] for k in ("run_path", "wandb") if k in out}
        return {**kept, "step": saved, "checkpoint": str(resume_from), "resumed_from": saved}
    if int(out["step"]) == saved:
        out["resumed_from"] = saved
    return out
