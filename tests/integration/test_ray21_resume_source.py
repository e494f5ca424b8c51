"""Session 21 (ray21): a re-run under the same run name with another ``train.init_from`` source than the
run started from is refused (session 20, tests/unit/test_prov20_resume_source.py), tested there on runs a
local process wrote. Here the run is a real Ray run (one worker), whose checkpoint the Ray worker wrote with
the source as the driver handed it on (made absolute): another source is one line naming both before Ray
trains anything, and the same source given as written (relative) or absolute is the run's own.

The Ray run takes ~30 s on a busy 2-core machine (Ray Train's controller and worker starting, not the two
steps); a second Ray run, to see the worker's own refusal (``checkpoint.check_same_start`` in the trainer)
arrive as one line, would double that and is left out: the driver refuses first, and a worker's
``UserError`` reaching the CLI as one line is tests/integration/test_ray_user_errors.py's."""

from __future__ import annotations

import pytest
from trained import RAY_SMALL, TINY

from metarec_dist.checkpoint import export, latest_complete
from metarec_dist.config import load_config
from metarec_dist.errors import UserError
from metarec_dist.train import launch
from metarec_dist.train.init_from import absolute_source, check_resumed_source

pytestmark = pytest.mark.integration
SMALL = RAY_SMALL


def test_another_source_on_a_ray_resume_is_refused_and_the_same_one_resumes(
    ray_cluster, tmp_path, monkeypatch
):
    def cfg(*extra: str):
        return load_config(TINY, [*SMALL, f"runtime.storage_path={tmp_path}", *extra])

    backbone = launch.train(cfg("meta.algorithm=sasrec", "runtime.run_name=backbone"))
    a, b = export(backbone["checkpoint"], tmp_path / "A"), export(backbone["checkpoint"], tmp_path / "B")
    monkeypatch.chdir(tmp_path)
    on_ray = ["runtime.backend=ray", "runtime.num_workers=1", "runtime.run_name=next"]
    first = launch.train(cfg(*on_ray, "train.init_from=A"))  # relative: the driver hands Ray an absolute path
    assert first["step"] == 2
    folder = tmp_path / "next"

    more = [*on_ray, "train.meta_steps=4"]
    with pytest.raises(UserError) as err:
        launch.train(cfg(*more, f"train.init_from={b}"))
    text = str(err.value)
    assert text.startswith("train.init_from: ") and "\n" not in text and str(a) in text and str(b) in text
    assert latest_complete(folder).name.endswith("_000002")  # refused before Ray trained on
    # The same source, as given the first time or absolute, is the run's own: no refusal.
    for same in ("A", str(a)):
        check_resumed_source(folder, absolute_source(cfg(*more, f"train.init_from={same}")))
