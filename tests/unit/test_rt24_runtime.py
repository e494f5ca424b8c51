"""Session 24 (rt24): runtime checks before Ray starts.

- ``runtime.gpus_per_worker`` above 1: a fraction (1.5) Ray refuses (GPU requests above 1 must be whole
  numbers), only once the cluster and the workers started; a whole number (2) reserved GPUs the worker
  never uses (it trains on one device). Now a config error at load time, naming what to set.
"""

from __future__ import annotations

import pytest

from metarec_dist.config import load_config
from metarec_dist.errors import UserError


def gpu_config(*extra: str):
    sets = ["runtime.backend=ray", "runtime.use_gpu=true", "runtime.num_workers=2"]
    return load_config("configs/tiny.yaml", [*sets, *extra])


def test_a_fraction_of_a_gpu_above_one_per_worker_is_a_config_error():
    with pytest.raises(UserError) as said:  # at load time: before Ray starts
        gpu_config("runtime.gpus_per_worker=1.5")
    text = str(said.value)
    assert "runtime.gpus_per_worker=1.5: Ray takes a fraction of a GPU only below 1" in text
    assert "set runtime.gpus_per_worker=1" in text and "\n" not in text


def test_several_whole_gpus_per_worker_are_refused_as_idle():
    """A worker trains on ``ray.train.torch.get_device()`` alone: the other GPUs Ray reserved for it idle."""
    with pytest.raises(UserError) as said:
        gpu_config("runtime.gpus_per_worker=2")
    text = str(said.value)
    assert "runtime.gpus_per_worker=2: a worker trains on one GPU, so 1 of each worker's GPUs" in text
    assert text.endswith(
        "set runtime.gpus_per_worker=1 and runtime.num_workers=4 to train on all 4 GPUs (one worker per GPU)"
    )
    assert "\n" not in text


@pytest.mark.parametrize(
    "sets",
    [
        ["runtime.gpus_per_worker=1"],
        ["runtime.gpus_per_worker=1.5", "runtime.use_gpu=false"],  # Ray asks for no GPU then
        ["runtime.gpus_per_worker=2", "runtime.backend=local"],  # the local backend does not read it
    ],
)
def test_what_ray_is_not_asked_for_above_one_gpu_is_accepted(sets):
    assert gpu_config(*sets).runtime.gpus_per_worker == float(sets[0].split("=")[1])
