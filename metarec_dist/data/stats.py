"""Summary numbers of prepared data, for logs and the ``metarec data`` report."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from metarec_dist.data.prepared import PreparedData, flat_items
from metarec_dist.data.preprocess import length_percentiles
from metarec_dist.data.split import SPLIT_NAMES


def data_stats(prepared: PreparedData) -> dict:
    """users / items / interactions / sequence-length percentiles count the data before the
    min-history drop (what the file holds after the configured filters); ``*_users`` and
    ``*_interactions`` are the split sizes after it."""
    table = prepared.users.with_format("arrow")[:]
    offsets, _ = flat_items(table.column("items"))
    lengths = np.diff(offsets)
    stats = dict(prepared.raw_stats)
    if not stats:  # built by hand rather than by prepare_data: describe what is there
        stats = {
            "users": len(lengths),
            "items": prepared.num_items,
            "interactions": int(lengths.sum()),
            **length_percentiles(lengths),
            "dropped_users": 0,
        }
    split = table.column("split")
    for name in SPLIT_NAMES:
        mask = pc.equal(split, name).to_numpy(zero_copy_only=False)
        stats[f"{name}_users"] = int(mask.sum())
        stats[f"{name}_interactions"] = int(lengths[mask].sum())
    stats["num_items"] = prepared.num_items
    stats["source"] = prepared.source
    if prepared.features is not None:
        stats["features"] = prepared.features.stats()
    return stats


def format_stats(stats: dict) -> str:
    def n(key: str) -> str:
        return f"{stats.get(key, 0):,}"

    lines = [
        f"data: {stats.get('source', '?')}",
        f"  users         {n('users')}",
        f"  items         {n('items')}",
        f"  interactions  {n('interactions')}",
        "  seq length    p10 {:g} / p50 {:g} / p90 {:g} / max {:,}".format(
            stats.get("seq_len_p10", 0),
            stats.get("seq_len_p50", 0),
            stats.get("seq_len_p90", 0),
            stats.get("seq_len_max", 0),
        ),
        "  split users   " + " / ".join(f"{s} {n(s + '_users')}" for s in SPLIT_NAMES),
    ]
    filtered = {name: count for name, count in stats.get("filtered", {}).items() if count}
    if filtered:  # the counts above are after these filters: say what they took out of the file
        drops = ", ".join(f"{name} dropped {count:,}" for name, count in filtered.items())
        lines.append(f"  filtered      {stats.get('read_interactions', 0):,} interactions read; {drops}")
    dropped = stats.get("dropped_users", 0)
    if dropped:
        min_history = stats.get("min_history")
        lines.append(f"  dropped       {dropped:,} users with fewer than {min_history} interactions")
    short = stats.get("loo_train_only_users", 0)
    if short:  # data.protocol=loo: train / valid / test are rows of the same users (split.leave_one_out)
        lines.append(f"  loo           {short:,} users with fewer than 3 interactions only train")
    if "new_items" in stats:  # data.protocol=new_items: the newest items are held out of training
        emptied = stats.get("new_items_emptied_train_users", 0)
        lines.append(
            f"  new items     {stats['new_items']:,} held out of training"
            + (f" ({emptied:,} training users had only those)" if emptied else "")
        )
    lines.extend(_feature_line(f) for f in stats.get("features", []))
    return "\n".join(lines)


def _feature_line(f: dict) -> str:
    """e.g. ``item feature class (token_seq): 18 values; 0 items without a row, 0 missing, 0 unknown``."""
    values = (
        "text"
        if f["kind"] == "title"
        else f"{f['values']:,} {'buckets' if f['kind'] == 'float' else 'values'}"
    )
    unknown = "" if f["kind"] in ("title", "float") else f", {f['unknown']:,} unknown"
    return (
        f"  {f['entity']} feature {f['name']} ({f['kind']}): {values}; {f['without_row']:,} "
        f"{f['entity']}s without a row, {f['missing']:,} missing{unknown}"
    )
