"""Read an offline W&B run's ``.wandb`` file back (``wandb.Api`` cannot read offline runs).

The file is W&B's internal record log: a 7-byte header, then 32 KiB blocks of records
(crc32c[4] length[2] type[1] payload), payloads being ``wandb_internal_pb2.Record`` protobufs. This format
is internal API, so the tests that use it are pinned to the wandb version they were written against.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PINNED_WANDB = "0.31.0"
_BLOCK = 32 * 1024
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(data: bytes):
    pos, pending = _HEADER, b""
    while pos + 7 <= len(data):
        left = _BLOCK - (pos % _BLOCK)
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        if pos + 7 + length > len(data):
            return  # a record still being written (W&B's writer may trail run.finish() by a moment)
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def read_run(path: Path) -> dict[str, Any]:
    """``{"config": {...}, "history": [{...}, ...], "summary": {...}, "run_id": str, "project": str}`` of one
    .wandb file."""
    from wandb.proto import wandb_internal_pb2 as pb

    out: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "run_id": None, "project": None}
    for payload in _payloads(Path(path).read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run_id"] = rec.run.run_id
            out["project"] = rec.run.project
            for item in rec.run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "history":
            out["history"].append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            )
        elif kind == "summary":
            for item in rec.summary.update:
                out["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out


def read_run_when(path: Path, complete: Callable[[dict[str, Any]], bool], timeout_s: float = 60.0) -> dict:
    """``read_run`` once ``complete(run)`` holds. W&B's writer is its own process (wandb-core): on a loaded
    machine the tail of the file can land a moment after ``run.finish()`` returned. Returns the last read
    either way, so the caller's assertions report what was missing."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = read_run(path)
        if complete(run) or time.monotonic() > deadline:
            return run
        time.sleep(0.5)
