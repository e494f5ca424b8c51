"""Ray Train's torch process group, with its rendezvous store on 127.0.0.1, for a cluster on this machine.

Ray Train's ``TorchConfig`` initialises the workers' process group with ``env://``: rank 0 starts torch's
``TCPStore`` server, which binds every interface whatever ``MASTER_ADDR`` says (torch has no host setting
for it). On a cluster this process starts itself -- one machine, every other Ray server on 127.0.0.1
(docs/cluster.md, "A local cluster") -- that store would be the one port reachable from the network, and
whoever reaches it can read and write the rendezvous keys. torch's ``TCPStore`` can instead adopt a socket
that is already listening (``master_listen_fd``): rank 0 binds one on 127.0.0.1 first, every rank joins
through it, and the group is built on that store. Everything else is Ray Train's own backend (device
environment variables, shutdown); a cluster of several machines keeps the stock ``TorchConfig``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import ray
from ray.train._internal.worker_group import WorkerGroup as V1WorkerGroup
from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend

LOOPBACK = "127.0.0.1"
_listening: dict[str, int] = {}  # in rank 0's worker process: the fd bound by listen_on_loopback


def listen_on_loopback() -> int:
    """(rank 0) A socket listening on 127.0.0.1 at a free port, kept open for the store: its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOOPBACK, 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    _listening["fd"] = sock.detach()  # the store owns the fd from here; the Python object must not close it
    return port


def join_group(backend: str, rank: int, world_size: int, port: int, timeout_s: int) -> None:
    """Every rank: the process group over a ``TCPStore`` served from rank 0's loopback socket."""
    import torch.distributed as dist

    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(
        LOOPBACK,
        port,
        world_size,
        is_master=rank == 0,
        timeout=timeout,
        wait_for_workers=False,
        master_listen_fd=_listening.pop("fd") if rank == 0 else None,
    )
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


class _LoopbackTorchBackend(_TorchBackend):
    def on_start(self, worker_group: Any, backend_config: LoopbackTorchConfig) -> None:
        port = worker_group.execute_single(0, listen_on_loopback)
        if not isinstance(worker_group, V1WorkerGroup):  # LOCAL_RANK, RANK, ...: as Ray Train's own on_start
            worker_group.execute(_set_torch_distributed_env_vars)
        n = len(worker_group)
        setup = [
            worker_group.execute_single_async(
                i, join_group, backend_config.backend, i, n, port, backend_config.timeout_s
            )
            for i in range(n)
        ]
        ray.get(setup)


@dataclass
class LoopbackTorchConfig(TorchConfig):
    """``TorchConfig`` whose process group rendezvous listens on 127.0.0.1 only (one machine)."""

    @property
    def backend_cls(self) -> type[_TorchBackend]:
        return _LoopbackTorchBackend
