"""Tables (terminal and Markdown) and the JSON document of an evaluation."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metarec_dist.eval.harness import PRIMARY, SECONDARY, MethodResult, paired_diff, summarize

Summary = dict[int, dict[str, dict[str, float]]]


def build_report(
    results: Sequence[MethodResult], baseline: str | None, n_boot: int, seed: int = 0
) -> dict[str, Any]:
    """``{"methods": {name: {info, users, metrics}}, "paired": {name: {baseline, diff}}}``: every number
    of the tables. Bootstrap draws use ``seed``, so the same per-user values give the same report."""
    by_name = {r.name: r for r in results}
    if baseline is not None and baseline not in by_name:
        raise ValueError(f"baseline {baseline!r} is not among the evaluated methods {sorted(by_name)}")
    doc: dict[str, Any] = {"n_boot": n_boot, "interval": "95% percentile bootstrap over users", "methods": {}}
    for r in results:
        doc["methods"][r.name] = {
            "info": r.info,
            "seeds": max(1, len(r.seeds)),
            "users": {k: r.users(k) for k in r.per_user},
            "metrics": summarize(r, n_boot, seed),
        }
    if baseline is not None:
        doc["paired"] = {
            r.name: {"baseline": baseline, "diff": paired_diff(r, by_name[baseline], n_boot, seed)}
            for r in results
            if r.name != baseline
        }
    return doc


def write_json(doc: dict[str, Any], path: str | Path) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(_jsonable(doc), indent=1) + "\n")


def _jsonable(x: Any) -> Any:
    """Int keys -> strings, NaN -> null (strict JSON), rounded floats for readable diffs."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        return None if math.isnan(x) else round(x, 6)
    return x


def _cell(row: dict[str, float], ci: bool = True) -> str:
    text = f"{row['mean']:.4f}"
    if "seed_sd" in row:
        text += f"±{row['seed_sd']:.4f}"
    return text + (f" [{row['lo']:.3f},{row['hi']:.3f}]" if ci else "")


def format_table(doc: dict[str, Any]) -> str:
    """One block per shot count K: primary metrics with intervals, secondary means, then paired diffs."""
    methods = doc["methods"]
    shots = sorted({int(k) for m in methods.values() for k in m["metrics"]})
    name_w = max(12, *(len(n) for n in methods)) + 1
    lines = [f"mean{'±seed sd' if any(m['seeds'] > 1 for m in methods.values()) else ''} [{doc['interval']}]"]
    for k in shots:
        users = next(iter(methods.values()))["users"][k]
        lines.append(f"\nK={k} ({users} users)")
        head = [f"{m:>30}" for m in PRIMARY] + [f"{m:>13}" for m in SECONDARY]
        lines.append(" " * name_w + "".join(head))
        for name, m in methods.items():
            rows = m["metrics"][k]
            cells = [f"{_cell(rows[x]):>30}" for x in PRIMARY] + [
                f"{rows[x]['mean']:>13.4f}" for x in SECONDARY
            ]
            lines.append(f"{name:<{name_w}}" + "".join(cells))
        for name, p in doc.get("paired", {}).items():
            d = p["diff"][k]["ndcg@10"]
            lines.append(
                f"  {name} - {p['baseline']}: NDCG@10 {d['diff']:+.4f} [{d['lo']:+.4f},{d['hi']:+.4f}] "
                f"({100 * d['rel']:+.1f}%)"
            )
    return "\n".join(lines)
