"""Packaging consistency: docker/Dockerfile, launch/constraints.txt and pyproject.toml agree.

- every package pinned (``name==version``) in both the Dockerfile and the constraints file has the same
  version there, and torch is installed in the image at exactly the pinned version;
- the constraints satisfy pyproject's lower bounds (an install with ``-c launch/constraints.txt`` resolves);
- the ``metarec`` console script points at a real callable.
Nothing here builds an image or installs anything: it reads files.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
CONSTRAINTS = ROOT / "launch" / "constraints.txt"

# name==version inside the Dockerfile's text once ARGs are substituted, e.g. "torch==2.13.0".
_PIN = re.compile(r"(?<![\w.-])([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([0-9][A-Za-z0-9.+!-]*)")
_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(\S+)\s*$", re.MULTILINE)


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def constraints() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for raw in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", (
            f"{CONSTRAINTS.name}: {line!r} is not an exact pin"
        )
        pins[canonicalize_name(req.name)] = Version(specs[0].version)
    return pins


def dockerfile_text() -> str:
    """The Dockerfile without comments and with ``${ARG}`` / ``$ARG`` replaced by the ARG defaults."""
    text = "\n".join(
        line
        for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    )
    args = dict(_ARG.findall(text))
    for name, value in args.items():
        text = text.replace("${" + name + "}", value)
        text = re.sub(r"\$" + name + r"(?![A-Za-z0-9_])", value, text)
    return text


def dockerfile_pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for name, version in _PIN.findall(dockerfile_text()):
        key = canonicalize_name(name)
        assert pins.get(key, Version(version)) == Version(version), (
            f"Dockerfile pins {name} twice, differently"
        )
        pins[key] = Version(version)
    return pins


def test_constraints_are_exact_pins_of_declared_dependencies():
    pins = constraints()
    assert {"torch", "deepspeed", "transformers", "ray", "datasets", "wandb"} <= set(pins)
    declared = {canonicalize_name(Requirement(d).name) for d in _pyproject()["project"]["dependencies"]}
    unused = sorted(set(pins) - declared)
    assert not unused, f"launch/constraints.txt pins packages the project does not depend on: {unused}"


def test_dockerfile_pins_agree_with_constraints():
    pins, docker = constraints(), dockerfile_pins()
    assert "torch" in docker, "docker/Dockerfile must install torch at an exact version (torch==X)"
    mismatched = {
        n: (str(docker[n]), str(pins[n])) for n in docker.keys() & pins.keys() if docker[n] != pins[n]
    }
    assert not mismatched, f"Dockerfile vs launch/constraints.txt (docker, constraints): {mismatched}"


def test_dockerfile_installs_the_project_with_the_constraints():
    text = dockerfile_text()
    assert re.search(r"pip install[^\n]*-c launch/constraints\.txt", text), (
        "install the project with -c constraints"
    )
    assert re.search(r"^\s*COPY\s+launch/constraints\.txt\b", text, re.MULTILINE)
    assert re.search(r"--index-url\s+\S*download\.pytorch\.org/whl/cu\d+", text), (
        "torch from a CUDA wheel index"
    )
    base = re.search(r"^\s*FROM\s+(\S+)", text, re.MULTILINE).group(1)
    assert "cuda" in base.lower(), f"base image {base!r} is not a CUDA image"
    assert re.search(r"python3\.11\b", text), "the image's Python is 3.11"
    users = re.findall(r"^\s*USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert re.search(r'^\s*ENTRYPOINT\s+\["metarec"\]\s*$', text, re.MULTILINE)
    for src in re.findall(r"^\s*COPY\s+(.+)\s+\S+\s*$", text, re.MULTILINE):
        for path in src.split():
            if not path.startswith("--"):
                assert (ROOT / path).exists(), f"Dockerfile copies {path}, which is not in the repository"


def test_pyproject_lower_bounds_are_satisfied_by_the_constraints():
    pins = constraints()
    project = _pyproject()["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    checked = []
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name in pins:
            assert req.specifier.contains(pins[name], prereleases=True), (
                f"pyproject requires {text!r} but launch/constraints.txt pins {name}=={pins[name]}"
            )
            checked.append(name)
    assert set(checked) == set(pins)


def test_console_script_entry_point_exists():
    scripts = _pyproject()["project"]["scripts"]
    assert scripts.get("metarec") == "metarec_dist.cli:main"
    module, _, attr = scripts["metarec"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    try:
        installed = importlib.metadata.entry_points(group="console_scripts", name="metarec")
    except Exception:  # pragma: no cover - metadata backends differ
        installed = ()
    for ep in installed:  # when the project is installed (editable or not), the metadata must agree
        assert ep.value == scripts["metarec"]
