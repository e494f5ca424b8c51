"""``metarec evaluate --fuse`` on an export made with ``metarec export --fuse`` scores the export as saved:
its stored weight *and* its stored test-time adaptation (what recommend and serve apply), not an
adaptation chosen again on validation users; ``--steps``/``--tune-users`` still ask for another."""

from __future__ import annotations

import json

from metarec_dist import checkpoint as ckpt
from metarec_dist.cli import main


def fused_export(run, tmp_path):
    """A fused export whose recorded adaptation (1 step, lr 0.123) is no point of the validation grid, so
    a re-chosen adaptation cannot coincide with it."""
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run.folder), "--out", str(out), "--fuse-weight", "0.5"]) == 0
    meta = json.loads((out / ckpt.EXPORT_CONFIG).read_text())
    meta["fusion"].update(steps=1, inner_lr=0.123)
    meta["fusion"].pop("per_shot", None)
    (out / ckpt.EXPORT_CONFIG).write_text(json.dumps(meta))
    return out


def adaptation_of(report, *extra: str, export) -> dict:
    argv = ["evaluate", "--checkpoint", str(export), "--fuse", "--json", str(report), *extra]
    assert main(argv) == 0
    return json.loads(report.read_text())["methods"]["fomaml+cooc"]["info"]["adaptation"]


def test_evaluate_fuse_on_a_fused_export_uses_the_exports_adaptation(trained, tmp_path, capsys):
    export = fused_export(trained(), tmp_path)
    got = adaptation_of(tmp_path / "r.json", export=export)
    assert (got["steps"], got["inner_lr"], got["selected_on"]) == (1, 0.123, "export")
    assert got["fusion"]["weight"] == 0.5
    assert "after the export's adaptation (K=1: 1 steps, lr 0.123" in capsys.readouterr().err
    # Asked for explicitly, another adaptation is used, and said to differ from the export's.
    fixed = adaptation_of(tmp_path / "s.json", "--steps", "0", export=export)
    assert (fixed["steps"], fixed["selected_on"]) == (0, "fixed")
    assert "as asked, differs from the export's" in capsys.readouterr().err
    searched = adaptation_of(tmp_path / "t.json", "--tune-users", "all", export=export)
    assert searched["selected_on"] == "valid" and searched["inner_lr"] != 0.123


def test_per_shot_export_adaptation_follows_recommends_choice_per_support_size():
    from metarec_dist.eval.fusion import Fusion

    fusion = Fusion(weight=1.0, cooc=None, steps=3, inner_lr=0.5, per_shot={1: (2, 0.1), 5: (4, 0.2)})
    adaptation = fusion.adaptation([1, 3, 5, 10])
    assert [adaptation.setting(k) for k in (1, 3, 5, 10)] == [(2, 0.1), (2, 0.1), (4, 0.2), (4, 0.2)]
    assert adaptation.selected_on == "export"
    plain = Fusion(weight=1.0, cooc=None, steps=3, inner_lr=0.5).adaptation([1, 3])
    assert (plain.per_shot, plain.setting(3)) == (None, (3, 0.5))
