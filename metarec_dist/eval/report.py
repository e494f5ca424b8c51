"""The JSON document of an evaluation and its tables: one cell format and one renderer, for the terminal
and for Markdown."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metarec_dist.eval.stats import PRIMARY, SECONDARY, MethodResult, bootstrap_summary, paired_diff


def build_report(
    results: Sequence[MethodResult],
    baseline: str | None,
    n_boot: int,
    seed: int = 0,
    pairs: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``{"methods": {name: {info, users, metrics}}, "paired": {name: {baseline, diff}}}``: every number
    of the tables. Bootstrap draws use ``seed``, so the same per-user values give the same report.
    ``pairs`` (method -> its own baseline) replaces ``baseline`` for those methods."""
    by_name = {r.name: r for r in results}
    pairs = pairs or {}
    for name in [baseline, *pairs, *pairs.values()]:
        if name is not None and name not in by_name:
            raise ValueError(f"baseline {name!r} is not among the evaluated methods {sorted(by_name)}")
    doc: dict[str, Any] = {"n_boot": n_boot, "interval": "95% percentile bootstrap over users", "methods": {}}
    for r in results:
        doc["methods"][r.name] = {
            "info": r.info,
            "seeds": max(1, len(r.seeds)),
            "users": {k: r.users(k) for k in r.per_user},
            "metrics": bootstrap_summary(r, n_boot, seed),
        }
    against = {r.name: pairs.get(r.name, baseline) for r in results}
    paired = {
        r.name: {"baseline": b, "diff": paired_diff(r, by_name[b], n_boot, seed)}
        for r in results
        if (b := against[r.name]) is not None and b != r.name
    }
    if paired:
        doc["paired"] = paired
    return doc


def write_json(doc: dict[str, Any], path: str | Path) -> None:
    """``doc`` as JSON at ``path`` (atomically); a path that cannot be written is a ``UserError`` naming it.
    The commands check ``--json`` before their slow part, but some places pass that check and still refuse
    a file (``/proc``, a folder made read-only meanwhile)."""
    from metarec_dist.checkpoint import atomic_write_text
    from metarec_dist.errors import UserError

    try:
        atomic_write_text(Path(path), json.dumps(_jsonable(doc), indent=1) + "\n")
    except OSError as exc:
        raise UserError(f"{path}: cannot write the JSON file there ({exc.strerror or exc})") from None


def _jsonable(x: Any) -> Any:
    """Int keys -> strings, NaN -> null (strict JSON), rounded floats for readable diffs."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        return None if math.isnan(x) else round(x, 6)
    return x


def shots_of(doc: dict[str, Any]) -> list[int]:
    return sorted({int(k) for m in doc["methods"].values() for k in m["metrics"]})


def cell(row: dict[str, float], ci: bool = True) -> str:
    """``mean ± seed sd [lo, hi]`` (the seed sd only for seed averages, the interval only with ``ci``)."""
    sd = f" ± {row['seed_sd']:.4f}" if "seed_sd" in row else ""
    return f"{row['mean']:.4f}{sd}" + (f" [{row['lo']:.3f}, {row['hi']:.3f}]" if ci else "")


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> list[str]:
    """The table as lines: Markdown pipes, or aligned columns for the terminal (first column left)."""
    if markdown:
        line = "| {} |".format
        return [line(" | ".join(header)), "|---" * len(header) + "|", *(line(" | ".join(r)) for r in rows)]
    widths = [max(map(len, col)) for col in zip(header, *rows, strict=True)]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in (header, *rows)
    ]


def metrics_table(doc: dict[str, Any], k: int, markdown: bool = False) -> list[str]:
    """Every method at ``K = k``: primary metrics with their intervals, secondary metrics as means."""
    rows = []
    for name, m in doc["methods"].items():
        r = m["metrics"][k]
        rows.append([name, *(cell(r[x]) for x in PRIMARY), *(cell(r[x], ci=False) for x in SECONDARY)])
    return render_table(["method", *PRIMARY, *SECONDARY], rows, markdown)


def format_table(doc: dict[str, Any]) -> str:
    """One block per shot count K: every metric of every method, then the paired differences (the
    leave-one-out protocol: one block)."""
    if doc.get("protocol") == "loo":
        return format_loo_table(doc)
    methods = doc["methods"]
    lines = [f"mean{'±seed sd' if any(m['seeds'] > 1 for m in methods.values()) else ''} [{doc['interval']}]"]
    for k in shots_of(doc):
        users = next(iter(methods.values()))["users"][k]
        lines += ["", f"K={k} ({users} users)", *metrics_table(doc, k)]
        for name, p in doc.get("paired", {}).items():
            d = p["diff"][k]["ndcg@10"]
            lines.append(
                f"  {name} - {p['baseline']}: NDCG@10 {d['diff']:+.4f} [{d['lo']:+.4f},{d['hi']:+.4f}] "
                f"({100 * d['rel']:+.1f}%)"
            )
    return "\n".join(lines)


LOO_COLUMNS = ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr")
LOO_WITH_CI = ("hr@10", "ndcg@10")  # the other columns as means, to keep the table readable


def loo_table(doc: dict[str, Any], markdown: bool = False) -> list[str]:
    """The leave-one-out table: one row per method, HR@k / NDCG@k as the published full-ranking tables."""
    rows = []
    for name, m in doc["methods"].items():
        r = next(iter(m["metrics"].values()))  # one block, under the key LOO
        rows.append([name, *(cell(r[x], ci=x in LOO_WITH_CI) for x in LOO_COLUMNS)])
    return render_table(["method", *LOO_COLUMNS], rows, markdown)


def format_loo_table(doc: dict[str, Any]) -> str:
    first = next(iter(doc["methods"].values()))
    users = next(iter(first["users"].values()))
    masked = "masked" if doc.get("mask_seen") else "not masked"
    lines = [
        f"mean [{doc['interval']}]",
        "",
        f"leave-one-out, {doc.get('split', 'test')} targets ({users} users), full ranking, history "
        f"{masked}, input: the last {doc.get('window', '?')} items",
        *loo_table(doc),
    ]
    for name, p in doc.get("paired", {}).items():
        d = next(iter(p["diff"].values()))["ndcg@10"]
        lines.append(
            f"  {name} - {p['baseline']}: NDCG@10 {d['diff']:+.4f} [{d['lo']:+.4f},{d['hi']:+.4f}] "
            f"({100 * d['rel']:+.1f}%)"
        )
    return "\n".join(lines)
