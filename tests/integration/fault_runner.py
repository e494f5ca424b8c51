"""``metarec <args>`` with one fault hook, for tests/integration/test_faults.py only.

``FAULT_PAUSE_STEP=N FAULT_FLAG=FILE``: when the checkpoint of meta-step N has written every shard and is
about to write its manifest, create FILE and sleep, so the test can kill -9 the process at exactly that
point (a fixed place in the save, not a race with a fast write). The hook wraps the real
``write_manifest``; everything else is the real CLI.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from metarec_dist import checkpoint

PAUSE_STEP = int(os.environ.get("FAULT_PAUSE_STEP", "0"))

if PAUSE_STEP:
    _write_manifest = checkpoint.write_manifest

    def _paused(folder, step, world_size, files):
        if step == PAUSE_STEP:
            Path(os.environ["FAULT_FLAG"]).write_text(str(os.getpid()))
            time.sleep(600)
        _write_manifest(folder, step, world_size, files)

    checkpoint.write_manifest = _paused

if __name__ == "__main__":
    from metarec_dist.cli import main

    sys.exit(main(sys.argv[1:]))
