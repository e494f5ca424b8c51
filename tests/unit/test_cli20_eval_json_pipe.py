"""``evaluate --json /dev/stdout`` (a pipe) waited forever: the check read the target to see whether it was
an earlier report. A target that is not a plain file is now refused before it is read."""

from __future__ import annotations

import os
import subprocess
import sys


def test_a_json_target_that_is_a_pipe_is_refused_not_read(tmp_path):
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    argv = [sys.executable, "-m", "metarec_dist.cli", "evaluate", "--checkpoint", "x", "--json", str(fifo)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    says = "exists and is not a plain file (a device, a pipe); give a file name"
    assert done.stderr.strip() == f"error: --json {fifo}: {says}"
