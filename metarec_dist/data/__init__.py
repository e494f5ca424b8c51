"""Interaction logs in, per-user chronological sequences with a cold-start user split out.

The public names are loaded lazily so that ``metarec_dist.data.config`` (imported by the top-level
config) does not pull in ``datasets`` and pyarrow for commands that never touch data.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from metarec_dist.data.config import DataConfig, FeatureSpec
from metarec_dist.data.errors import DataError

if TYPE_CHECKING:
    from metarec_dist.data.features import EncodedFeature, FeatureTables
    from metarec_dist.data.fetch import download
    from metarec_dist.data.layout import find_or_download
    from metarec_dist.data.pipeline import load_interactions, prepare_data
    from metarec_dist.data.prepared import PreparedData
    from metarec_dist.data.split import UserSplits
    from metarec_dist.data.stats import data_stats, format_stats

_LAZY = {
    "EncodedFeature": "metarec_dist.data.features",
    "FeatureTables": "metarec_dist.data.features",
    "PreparedData": "metarec_dist.data.prepared",
    "UserSplits": "metarec_dist.data.split",
    "prepare_data": "metarec_dist.data.pipeline",
    "load_interactions": "metarec_dist.data.pipeline",
    "data_stats": "metarec_dist.data.stats",
    "format_stats": "metarec_dist.data.stats",
    "download": "metarec_dist.data.fetch",
    "find_or_download": "metarec_dist.data.layout",
}

__all__ = [
    "DataConfig",
    "DataError",
    "EncodedFeature",
    "FeatureSpec",
    "FeatureTables",
    "PreparedData",
    "UserSplits",
    "data_stats",
    "download",
    "find_or_download",
    "format_stats",
    "load_interactions",
    "prepare_data",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
