"""``metarec bench`` programs. Every result carries :func:`provenance`: docs/benchmarks.md quotes each figure
with the command that made it, the machine and how loaded it was, so the program records them itself."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

PACKAGES = ("torch", "deepspeed", "ray", "transformers")


def provenance(argv: list[str]) -> dict[str, Any]:
    """The command, when, the machine (CPUs, OS, Python, package versions) and its load average now."""
    return {
        "command": shlex.join(["metarec", *argv]),
        "utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": sys.version.split()[0],
            **{name: _version(name) for name in PACKAGES},
        },
        "load_before": os.getloadavg(),
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
