"""DeepSpeed on CPU: nothing is JIT-compiled that training never calls; a resume uses changed optim.*."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

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


RESUME_SCRIPT = """
import sys
from pathlib import Path

from metarec_dist.config import load_config
from metarec_dist.data.split import UserSplits
from metarec_dist.data.synthetic import make_synthetic_sequences
from metarec_dist.runtime.context import LocalContext
from metarec_dist.runtime.engine import lr_lambda
from metarec_dist.train.trainer import MetaTrainer

run, zero = Path(sys.argv[1]), sys.argv[2]
seqs = make_synthetic_sequences(num_users=40, num_items=30, num_groups=3, min_len=10, max_len=16, seed=1)
data = UserSplits(train=seqs[:32], valid=seqs[32:], test=[], num_items=30)
base = ["model.hidden_size=16", "model.num_heads=2", "model.adapter_rank=2", "meta.meta_batch_size=4",
        "tasks.support_max=5", "train.log_every=1", "runtime.deepspeed=true", f"runtime.zero_stage={zero}",
        "optim.schedule=cosine", "optim.warmup_steps=1"]


def trainer(*sets):
    cfg = load_config(None, [*base, *sets])
    return cfg, MetaTrainer(cfg, LocalContext(run, 2), data)


trainer("train.meta_steps=2", "optim.lr=0.005")[1].fit()
cfg, resumed = trainer("train.meta_steps=4", "optim.lr=0.006", "optim.weight_decay=0.01")
assert resumed.checkpointer.load() == 2
expected = 0.006 * lr_lambda(cfg.optim, 4)(2)
lrs = resumed.engine.get_lr()
assert all(abs(lr - expected) < 1e-12 for lr in lrs), (lrs, expected)
group = resumed.engine.lr_scheduler.optimizer.param_groups[0]
assert group["initial_lr"] == 0.006 and group["weight_decay"] == 0.01, group
print("new lr", lrs)
"""


@pytest.mark.parametrize("zero", [0, 1])
def test_deepspeed_resume_uses_the_changed_lr(tmp_path, zero):
    """A DeepSpeed engine resumed with another optim.lr / weight decay uses the new values from the resumed
    step on (DeepSpeed restores the optimizer's and scheduler's saved ones). A fresh interpreter: DeepSpeed's
    one-process group is set up per process."""
    args = [sys.executable, "-c", RESUME_SCRIPT, str(tmp_path / "run"), str(zero)]
    # Not this process's rendezvous variables: an earlier test's one-process group here holds its port.
    group = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")
    env = {k: v for k, v in os.environ.items() if k not in group}
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "new lr" in out.stdout


LISTEN_SCRIPT = """
import json, psutil, torch
from metarec_dist.runtime.deepspeed_engine import ensure_process_group
ensure_process_group(False)
t = torch.ones(2)
torch.distributed.all_reduce(t)
me = psutil.Process()
print(json.dumps([c.laddr.ip for c in me.net_connections("inet") if c.status == psutil.CONN_LISTEN]))
"""


def test_a_one_process_deepspeed_group_listens_on_no_outside_address():
    """A local DeepSpeed run (`runtime.deepspeed=true`) got a torch TCPStore on every interface (`::`) at
    port 29500 + pid % 1000: reachable from the network, and unneeded with one process."""
    group = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")
    env = {k: v for k, v in os.environ.items() if k not in group}
    out = subprocess.run(
        [sys.executable, "-c", LISTEN_SCRIPT], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    listening = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1") for ip in listening), listening
