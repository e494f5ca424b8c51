"""``launch/reproduce.sh``: what it hands to ``python -m metarec_dist.eval.reproduce`` (a stand-in python
prints the arguments), so a trial run never overwrites the published page."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _passed(tmp_path: Path, *args: str) -> list[str]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = {**os.environ, "VENV": str(venv), "METAREC_DATA_DIR": str(tmp_path)}
    out = subprocess.run(
        ["bash", "launch/reproduce.sh", "ml100k", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def _value(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_by_default_it_writes_the_published_page(tmp_path):
    argv = _passed(tmp_path)
    assert _value(argv, "--markdown") == ["docs/results/ml100k.md"]
    assert _value(argv, "--out") == ["runs/ml100k-repro"] and _value(argv, "--baseline") == ["sasrec"]


@pytest.mark.parametrize("out", [["--out", "X"], ["--out=X"]])
def test_an_own_out_folder_leaves_docs_alone(tmp_path, out):
    """Before: `--out X --seeds 0` still rewrote docs/results/ml100k.{md,json,png} with one seed's numbers."""
    argv = _passed(tmp_path, "--seeds", "0", *out)
    assert not [a for a in argv if a.startswith("docs/")], argv
    assert argv[-len(out) :] == out and "--markdown" not in argv and "--json" not in argv


@pytest.mark.parametrize(
    ("methods", "baseline"),
    [
        (["--method", "fomaml=configs/ml100k.yaml"], []),
        (["--method=fomaml=configs/ml100k.yaml"], []),
        (
            ["--method", "fomaml=configs/ml100k.yaml", "--method", "sasrec=configs/ml100k-sasrec.yaml"],
            ["sasrec"],
        ),
    ],
)
def test_own_methods_replace_the_defaults_and_keep_sasrec_only_if_named(tmp_path, methods, baseline):
    """`--method=NAME=FILE` replaced nothing (the default methods ran too), and `--baseline sasrec` was passed
    for methods without a `sasrec`, which failed after every run had trained."""
    argv = _passed(tmp_path, *methods)
    assert "configs/coldstart.yaml" not in " ".join(argv) and "--fuse" not in argv
    assert _value(argv, "--baseline") == baseline
