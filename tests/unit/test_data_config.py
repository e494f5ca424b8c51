"""DataConfig: allowed field types, defaults, and validation messages that name the key."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from metarec_dist.data import DataConfig
from metarec_dist.data.config import FeatureSpec

ALLOWED = {
    int,
    float,
    str,
    bool,
    int | None,
    float | None,
    str | None,
    bool | None,
    list[str],
    list[int],
    dict[str, str],
    list[FeatureSpec],  # side-information declarations: a list of mappings, built by the config loader
}


def test_field_types_and_defaults():
    hints = typing.get_type_hints(DataConfig)
    for f in dataclasses.fields(DataConfig):
        assert hints[f.name] in ALLOWED, f.name
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name
        assert f.name == f.name.lower()
    assert DataConfig().format == "synthetic"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "xml"}, "data.format"),
        ({"dedup": "sometimes"}, "data.dedup"),
        ({"split": "alphabetical"}, "data.split"),
        ({"format": "csv"}, "data.path"),
        ({"format": "hub"}, "data.name"),
        ({"kcore": -1}, "data.kcore"),
        ({"min_history": 0}, "data.min_history"),
        ({"valid_frac": 1.5}, "data.valid_frac"),
        ({"valid_frac": 0.5, "test_frac": 0.5}, "data.valid_frac + data.test_frac"),
        ({"rating_threshold": float("nan")}, "data.rating_threshold"),
        ({"sep": ""}, "data.sep"),
        ({"format": "csv", "path": "x.csv", "header": False}, "data.columns"),
        ({"synthetic_groups": 500}, "data.synthetic_groups"),
        ({"synthetic_min_len": 50}, "data.synthetic_min_len"),
        ({"synthetic_in_group_prob": 2.0}, "data.synthetic_in_group_prob"),
    ],
)
def test_validation_names_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("+", r"\+")):
        DataConfig(**kwargs)


def test_builds_from_the_top_level_config_loader():
    config = pytest.importorskip("metarec_dist.config")
    cfg = config.from_dict(
        DataConfig,
        {
            "format": "csv",
            "path": "x.csv",
            "rating_threshold": 4,
            "header": False,
            "columns": ["a", "b"],
            "kcore": 5,
        },
        "data",
    )
    assert cfg.rating_threshold == 4.0 and cfg.columns == ["a", "b"] and cfg.kcore == 5


def test_columns_with_a_header_is_an_error_not_ignored():
    with pytest.raises(ValueError, match=r"data\.columns: names the columns of a file without a header line"):
        DataConfig(format="csv", path="log.csv", columns=["u", "i", "t"])
    assert DataConfig(format="csv", path="log.csv", header=False, columns=["u", "i", "t"]).columns == [
        "u",
        "i",
        "t",
    ]


def test_ordered_rows_with_a_time_column_is_an_error_not_ignored():
    with pytest.raises(
        ValueError, match=r"data\.ordered_rows: true takes .*data\.time_col \('ts'\) would be"
    ):
        DataConfig(format="csv", path="log.csv", ordered_rows=True, time_col="ts")
