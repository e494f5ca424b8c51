"""Session 19 (raycluster19): on a joined cluster (``RAY_ADDRESS``) the Ray task that prepares the data runs
in a worker process with the environment and working directory of the node's ``ray start``, not the
driver's. ``metarec train`` with ``METAREC_DATA_DIR=/work/shared/data`` and quickstart.yaml went to download
MovieLens ("this machine looks offline"), a relative ``data.path`` was looked for in the wrong folder, and
the cache entry landed outside ``$METAREC_CACHE_DIR``. The task now gets the data settings as the driver
resolves them."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dc18_data_checks import SMALL, _write_log  # noqa: E402

from metarec_dist.config import load_config  # noqa: E402
from metarec_dist.data.pipeline import cached_shards, prepare_shards  # noqa: E402
from metarec_dist.runtime.ray_launcher import data_as_driver_sees_it  # noqa: E402


def test_the_data_task_reads_and_caches_where_the_driver_looks(tmp_path, monkeypatch):
    driver, node = tmp_path / "driver", tmp_path / "ray-start-folder"
    driver.mkdir(), node.mkdir()
    _write_log(driver / "log.csv")
    monkeypatch.chdir(driver)
    monkeypatch.setenv("METAREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("METAREC_CACHE_DIR", str(tmp_path / "cache"))
    sets = ["data.path=log.csv", "data.format=csv", "data.string_ids=true"]
    cfg = load_config(None, [*SMALL, *sets])
    assert cached_shards(cfg.data) is None  # a cache miss: the driver hands the preparing to a Ray task

    data = data_as_driver_sees_it(cfg.data)
    assert data.path == str(driver / "log.csv")
    assert data.data_dir == str(tmp_path / "data")
    assert data.cache_dir == str(tmp_path / "cache")

    # The task: another folder, none of the driver's variables.
    monkeypatch.chdir(node)
    monkeypatch.delenv("METAREC_DATA_DIR")
    monkeypatch.delenv("METAREC_CACHE_DIR")
    monkeypatch.setenv("HOME", str(node))
    shards = prepare_shards(data, tmp_path / "scratch")
    assert Path(shards.folder).is_relative_to(tmp_path / "cache")

    # Back in the driver, the next run finds that entry: no second preparation.
    monkeypatch.chdir(driver)
    monkeypatch.setenv("METAREC_CACHE_DIR", str(tmp_path / "cache"))
    hit = cached_shards(cfg.data)
    assert hit is not None and hit.folder == shards.folder


def test_side_tables_are_made_absolute_and_hub_ids_and_given_folders_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sets = ["data.format=hub", "data.name=org/set", "data.data_dir=~/d", "data.item_features_path=i.csv"]
    data = data_as_driver_sees_it(load_config(None, [*SMALL, *sets]).data)
    assert data.name == "org/set" and data.path is None
    assert data.data_dir == str(Path("~/d").expanduser())
    assert data.item_features_path == str(tmp_path / "i.csv")
