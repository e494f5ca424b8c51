"""runtime/allocator.py: raising glibc's malloc thresholds stops the per-step page faults of big tensors."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from metarec_dist.config import load_config

# A child process runs "steps", each making six tensors of a size that changes from step to step (as a
# training step's logits, softmax and gradient buffers do with the number of positions) and freeing them,
# and counts the minor page faults of 30 steps: first with glibc's initial thresholds pinned (128 KiB, no
# adaptation: glibc's adaptive default sometimes reuses these pages and sometimes not, depending on what
# small objects end up at the heap's top, so it is no fixed reference), then after keep_freed_memory().
CHILD = """
import ctypes, json, resource
import torch
from metarec_dist.runtime.allocator import keep_freed_memory

def step(i):
    n = (2 + (i * 3) % 5) << 20  # 8, 20, 12, 24, 16 MiB per tensor
    bufs = [torch.empty(n).fill_(1.0) for _ in range(6)]
    del bufs

def faults():
    for i in range(5):  # warm up: every size once
        step(i)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(30):
        step(i)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

libc = ctypes.CDLL(None)
libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: glibc's initial value, pinned
libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD: likewise
pinned = faults()
applied = keep_freed_memory()
print(json.dumps({"pinned": pinned, "kept": faults(), "applied": applied}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")
def test_keep_freed_memory_reuses_the_pages_of_freed_tensors():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["applied"] is True
    pages = 30 * 6 * 4096  # 30 steps x 6 tensors x 16 MiB on average, in 4 KiB pages
    assert got["pinned"] > 0.9 * pages, got  # every block mmapped afresh and faulted in
    assert got["kept"] < 0.05 * pages, got  # served from the warmed-up heap (seen: 0 and 1.7%)


# The GPU recipe's step on the CPU (512 tasks x 36 positions x 18,357 items): buffers of 40-72 MiB, above the
# largest mmap threshold glibc allows (32 MiB), and a 1.25 GiB one, which freed at the heap's top used to be
# trimmed (threshold 1 GiB) and faulted back in next step; and a thread (as Ray Train runs its loop in) still
# gets a block larger than its arena's 64 MiB heaps. The warm-up makes every step-to-step transition the
# measured loop makes: with torch's default intra-op threads, a warm-up of steps 0-4 alone left the heap to
# grow once more at the measured loop's first step (4 -> 0: one 1.25 GiB block faulted in, in about half the
# runs; a fresh-clone suite failed on it, twenty-fifth session); the bound is unchanged.
BIG_CHILD = """
import json, resource, threading
import torch
from metarec_dist.runtime.allocator import keep_freed_memory

def step(i):
    bufs = [torch.empty((40 + 8 * ((i * 3) % 5)) << 18).fill_(1.0) for _ in range(3)]
    bufs.append(torch.empty(5 << 28, dtype=torch.uint8).fill_(1))  # 1.25 GiB
    del bufs

assert keep_freed_memory()
for i in range(10):  # warm up over both cycles' sizes: step 4 -> step 0 included (the measured loop's first)
    step(i)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(10):
    step(i)
kept = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
got = []
worker = threading.Thread(target=lambda: got.append(float(torch.ones(100 << 18).sum())))
worker.start()
worker.join()
print(json.dumps({"kept": kept, "thread": got}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")
def test_keep_freed_memory_reuses_blocks_above_glibcs_largest_mmap_threshold():
    out = subprocess.run([sys.executable, "-c", BIG_CHILD], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    pages = 10 * (3 * 56 + 1280) * 256  # 10 steps x (3 x 56 MiB on average + 1.25 GiB), in 4 KiB pages
    assert got["kept"] < 0.05 * pages, got  # was every page of every step (mmapped or trimmed and refaulted)
    assert got["thread"] == [100 << 18], got


def test_keep_freed_memory_is_a_runtime_option(tmp_path):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text("runtime:\n  keep_freed_memory: false\n")
    assert load_config(cfg_path).runtime.keep_freed_memory is False
    assert load_config(cfg_path, ["runtime.keep_freed_memory=true"]).runtime.keep_freed_memory is True
