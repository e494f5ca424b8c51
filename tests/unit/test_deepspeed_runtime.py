"""DeepSpeed start-up on CPU: nothing is JIT-compiled that training never calls."""

from __future__ import annotations

import subprocess
import sys

# Run in a fresh interpreter: DeepSpeed caches op compatibility per process, and any earlier test that built
# a CPU engine in this process has already applied the skip.
SCRIPT = """
import deepspeed.ops
from deepspeed.accelerator import get_accelerator
from deepspeed.comm.torch import build_shm_op
from metarec_dist.runtime.deepspeed_engine import skip_inference_shm_build

builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
assert builder is not None, "the CPU accelerator provides the op this test is about"
assert deepspeed.ops.__compatible_ops__[builder.NAME], "DeepSpeed would build it without the skip"
skip_inference_shm_build()
assert deepspeed.ops.__compatible_ops__[builder.NAME] is False
assert build_shm_op() is None
print("skipped")
"""


def test_cpu_training_does_not_build_the_inference_shm_op():
    """DeepSpeed's torch backend builds its shared-memory all-reduce (used only by `inference_all_reduce`)
    whenever it starts; on CPU that is a multi-minute C++ compile. After the runtime's skip, DeepSpeed's
    own builder function returns no op (so nothing is compiled) for the very op it would have built."""
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("skipped")
