"""Cluster manifests, large configs and DeepSpeed overrides stay in step with the code.

- every ``metarec ...`` command in ``launch/cluster-gpu.yaml`` and ``launch/rayjob.yaml`` (entrypoints,
  setup and start commands) parses with the real CLI parser, and every ``--config`` / ``--set`` it passes
  resolves with ``load_config`` (so a renamed config key breaks this test, not a 6-hour cluster job);
- both manifests enable Ray token authentication and put no secret inline; the dashboard is not bound to
  all interfaces by the cluster launcher; the RayJob has enough GPUs for its command and a shared volume
  under its storage path;
- ``configs/base-100m.yaml`` and ``configs/xl-1b.yaml`` load and their backbones have ~100M / ~1B
  parameters (counted on the meta device, nothing is allocated);
- ``configs/deepspeed/*.json`` are valid JSON with real DeepSpeed keys only, accepted by DeepSpeed's own
  config parser once merged into the derived config;
- docs/cluster.md covers token auth and shared storage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from metarec_dist.cli import build_parser
from metarec_dist.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "launch" / "cluster-gpu.yaml"
RAYJOB = ROOT / "launch" / "rayjob.yaml"
MANIFESTS = [CLUSTER, RAYJOB]
DOCS = ROOT / "docs" / "cluster.md"
DEEPSPEED_OVERRIDES = sorted((ROOT / "configs" / "deepspeed").glob("*.json"))
SIZED_CONFIGS = {"base-100m.yaml": 100e6, "xl-1b.yaml": 1e9}

# Where the repository lives in the image (docker/Dockerfile WORKDIR) and on cluster-launcher nodes.
REPO_MIRRORS = ("/opt/metarec/", "~/metarec/", "/home/ubuntu/metarec/")
COMMAND_KEYS = ("entrypoint", "command", "args")  # plus every key ending in "_commands"
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
_OPERATOR = re.compile(r"^[&|;()<>]+$")

# Fields of KubeRay's ray.io/v1 RayJobSpec and RayClusterSpec that this manifest may use.
RAYJOB_SPEC_FIELDS = {
    "activeDeadlineSeconds",
    "backoffLimit",
    "rayClusterSpec",
    "submitterPodTemplate",
    "metadata",
    "clusterSelector",
    "submitterConfig",
    "managedBy",
    "deletionStrategy",
    "entrypoint",
    "runtimeEnvYAML",
    "jobId",
    "submissionMode",
    "entrypointResources",
    "entrypointNumCpus",
    "entrypointNumGpus",
    "ttlSecondsAfterFinished",
    "shutdownAfterJobFinishes",
    "suspend",
    "schedule",
}
RAYCLUSTER_SPEC_FIELDS = {
    "rayVersion",
    "authOptions",
    "headGroupSpec",
    "workerGroupSpecs",
    "enableInTreeAutoscaling",
    "autoscalerOptions",
    "headServiceAnnotations",
    "suspend",
    "managedBy",
    "gcsFaultToleranceOptions",
}


# ------------------------------------------------------------------------------------ helpers


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def command_strings(node, key: str = "") -> list[str]:
    """Every string under a command-like key (``*_commands``, ``entrypoint``, ``command``, ``args``)."""
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            out += command_strings(v, str(k))
    elif isinstance(node, list):
        for v in node:
            out += command_strings(v, key)
    elif isinstance(node, str) and (key in COMMAND_KEYS or key.endswith("_commands")):
        out.append(node)
    return out


def shell_commands(text: str) -> list[list[str]]:
    """Simple commands of a shell string: split on newlines, ``&&``, ``||``, ``;``, ``|`` and redirections,
    with leading ``VAR=value`` assignments dropped."""
    commands: list[list[str]] = []
    for line in text.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = ""
        current: list[str] = []
        for token in [*lexer, ";"]:
            if _OPERATOR.match(token):
                while current and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", current[0]):
                    current.pop(0)
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
    return commands


def metarec_commands(path: Path) -> list[list[str]]:
    """Argument lists (after the program name) of every ``metarec`` invocation in a manifest."""
    found = []
    for text in command_strings(load(path)):
        for words in shell_commands(text):
            if Path(words[0]).name == "metarec":
                found.append(words[1:])
    return found


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("metarec's parser has no subcommands")


def repo_path(path: str) -> Path:
    for prefix in REPO_MIRRORS:
        if path.startswith(prefix):
            return ROOT / path[len(prefix) :]
    assert not Path(path).is_absolute(), f"{path}: not inside the repository (or a known copy of it)"
    return ROOT / path


def parse(args: list[str]) -> argparse.Namespace:
    try:
        return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"`metarec {shlex.join(args)}` does not parse with metarec_dist.cli.build_parser()")


def resolved(path: Path) -> list[tuple[list[str], argparse.Namespace, Config | None]]:
    """(args, namespace, config or None) for every metarec command of a manifest, skipping ``submit``
    while the CLI has no such subcommand yet."""
    known = subcommands(build_parser())
    out = []
    for args in metarec_commands(path):
        sub = next((a for a in args if not a.startswith("-")), None)
        if sub == "submit" and "submit" not in known:
            continue
        ns = parse(args)
        cfg = None
        if getattr(ns, "config", None):
            cfg = load_config(repo_path(ns.config), ns.set or [])
        out.append((args, ns, cfg))
    return out


def train_configs(path: Path) -> list[Config]:
    return [cfg for _, ns, cfg in resolved(path) if ns.command in ("train", "submit") and cfg is not None]


def containers(pod_template: dict) -> list[dict]:
    return pod_template["template"]["spec"]["containers"]


def quantity(value) -> float:
    return float(str(value))


# ------------------------------------------------------------------------------------ manifests


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_metarec_command_parses_and_its_config_resolves(path):
    commands = resolved(path)
    assert commands, f"{path.name}: no metarec command found"
    for args, ns, cfg in commands:
        if ns.command in ("train", "submit"):
            assert cfg is not None, f"`metarec {shlex.join(args)}`: a training command needs --config"


def test_shell_command_splitting():
    text = 'cd /x && A=1 B=2 metarec train --config c.yaml --set "a.b=c d" > /dev/null; echo $(metarec x)\n'
    assert ["metarec", "train", "--config", "c.yaml", "--set", "a.b=c d"] in shell_commands(text)
    assert ["cd", "/x"] in shell_commands(text)


def test_rayjob_trains_on_shared_storage_with_enough_gpus():
    job = load(RAYJOB)
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert set(spec) <= RAYJOB_SPEC_FIELDS, f"unknown RayJobSpec fields: {set(spec) - RAYJOB_SPEC_FIELDS}"
    cluster = spec["rayClusterSpec"]
    assert set(cluster) <= RAYCLUSTER_SPEC_FIELDS, f"unknown fields: {set(cluster) - RAYCLUSTER_SPEC_FIELDS}"

    (cfg,) = train_configs(RAYJOB)
    rt = cfg.runtime
    assert rt.backend == "ray" and rt.use_gpu
    assert "://" in rt.storage_path or rt.storage_path.startswith("/"), "storage_path must be shared"

    gpus = sum(
        g.get("replicas", 1) * quantity(c["resources"]["limits"].get("nvidia.com/gpu", 0))
        for g in cluster["workerGroupSpecs"]
        for c in containers(g)
    )
    assert gpus >= rt.num_workers * rt.gpus_per_worker, f"{gpus} GPUs for {rt.num_workers} GPU workers"

    if "://" not in rt.storage_path:  # a volume mounted at the same path on every pod
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            for c in containers(group):
                mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
                assert any(rt.storage_path.startswith(m.rstrip("/") + "/") for m in mounts), (
                    f"container {c['name']} does not mount the storage path {rt.storage_path}"
                )

    # The entrypoint's relative config path is resolved in the image's WORKDIR.
    workdir = re.findall(r"^\s*WORKDIR\s+(\S+)", (ROOT / "docker" / "Dockerfile").read_text(), re.MULTILINE)
    cds = [w[1] for w in shell_commands(spec["entrypoint"]) if w[0] == "cd"]
    assert workdir and cds and cds[0].rstrip("/") == workdir[-1].rstrip("/")


def test_rayjob_token_auth_and_no_inline_secrets():
    cluster = load(RAYJOB)["spec"]["rayClusterSpec"]
    auth = cluster.get("authOptions", {})
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    if auth.get("mode") != "token":  # without authOptions, every Ray container sets the variables itself
        for group in groups:
            for c in containers(group):
                env = {e["name"]: e for e in c.get("env", [])}
                assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", c["name"]
                assert "secretKeyRef" in env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}), c["name"]

    ray_pin = re.search(r"^ray==(\S+)", (ROOT / "launch" / "constraints.txt").read_text(), re.MULTILINE)
    assert cluster["rayVersion"] == ray_pin.group(1), "rayVersion must match the image's (pinned) Ray"

    for group in groups:
        for c in containers(group):
            for e in c.get("env", []):
                if SECRET_NAME.search(e["name"]):
                    assert "value" not in e, f"{e['name']} is inline: take it from a Secret (valueFrom)"
    runtime_env = yaml.safe_load(load(RAYJOB)["spec"].get("runtimeEnvYAML") or "{}") or {}
    leaked = [k for k in runtime_env.get("env_vars", {}) if SECRET_NAME.search(k)]
    assert not leaked, f"secrets in runtimeEnvYAML (stored with the job, shown on the dashboard): {leaked}"


def test_cluster_launcher_config_is_valid_and_token_authenticated():
    raw = load(CLUSTER)
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError:  # pragma: no cover - private API moved: fall back to the published schema
        import jsonschema
        import ray.autoscaler

        schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
        jsonschema.validate(raw, schema)
    else:
        validate_config(prepare_config(raw))

    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in raw[key] if "ray start" in c or "/ray start" in c]
        assert starts, f"{key}: no `ray start`"
        for command in starts:
            assert re.search(r"(^|[\s;])(export\s+)?RAY_AUTH_MODE=token\b", command), f"{key}: {command!r}"
    (head,) = [c for c in raw["head_start_ray_commands"] if "--head" in c]
    host = re.search(r"--dashboard-host[= ](\S+)", head)
    assert host and host.group(1) in ("127.0.0.1", "localhost"), "bind the dashboard to 127.0.0.1"
    assert any("auth_token" in remote for remote in raw.get("file_mounts", {})), "ship the token to the nodes"

    setup = "\n".join(raw["setup_commands"])
    assert "-c ~/metarec/launch/constraints.txt" in setup or "-c launch/constraints.txt" in setup
    assert "torch==" in setup


def test_cluster_launcher_puts_the_venv_on_the_path_of_ray_start():
    """A job's entrypoint runs `python`/`metarec` from the PATH `ray start` had: without the venv there it is
    the image's python, without the project (ModuleNotFoundError, or `python: not found` on Ubuntu)."""
    raw = load(CLUSTER)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in raw[key] if "ray start" in c]
        assert re.search(r"\bPATH=\$HOME/metarec-venv/bin:\$PATH\s", start), f"{key}: {start!r}"


def test_docs_cover_auth_and_storage():
    text = DOCS.read_text(encoding="utf-8")
    for needle in (
        "RAY_AUTH_MODE",
        "ray get-auth-token",
        "storage_path",
        "NCCL_SOCKET_IFNAME",
        "WANDB_API_KEY",
        "num_workers",
        "run_name",
        "metarec submit",
        "127.0.0.1",
    ):
        assert needle in text, f"docs/cluster.md does not mention {needle}"


# ------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("name", sorted(SIZED_CONFIGS))
def test_sized_config_parameter_count(name):
    torch = pytest.importorskip("torch")
    from transformers import AutoModel

    from metarec_dist.models.backbone import backbone_config

    cfg = load_config(ROOT / "configs" / name)
    rt = cfg.runtime
    assert (rt.backend, rt.use_gpu, rt.precision) == ("ray", True, "bf16")
    assert rt.zero_stage == (3 if name.startswith("xl") else 2)
    assert cfg.model.arch == "llama"
    assert (cfg.data.format, cfg.data.name) == ("auto", "movielens-100k")

    with torch.device("meta"):
        model = AutoModel.from_config(backbone_config(cfg.model))
    params = sum(p.numel() for p in model.parameters())
    target = SIZED_CONFIGS[name]
    assert 0.7 * target <= params <= 1.3 * target, f"{name}: {params / 1e6:.1f}M parameters"


@pytest.mark.parametrize("path", DEEPSPEED_OVERRIDES, ids=lambda p: p.name)
def test_deepspeed_override_uses_real_keys_and_merges(path):
    pytest.importorskip("deepspeed")
    import deepspeed.runtime.constants as ds_constants
    from deepspeed.runtime.config import DeepSpeedConfig
    from deepspeed.runtime.zero.config import ZERO_OPTIMIZATION

    from metarec_dist.runtime.deepspeed_engine import deepspeed_config

    override = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(override, dict) and override
    top_level = {v for k, v in vars(ds_constants).items() if k.isupper() and isinstance(v, str)} | {
        ZERO_OPTIMIZATION
    }
    assert set(override) <= top_level, f"not DeepSpeed config keys: {set(override) - top_level}"
    owned = {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"}
    assert not owned & set(override), "batch keys come from meta.meta_batch_size / runtime.grad_accum"
    assert "stage" not in override.get(ZERO_OPTIMIZATION, {}), "the ZeRO stage comes from runtime.zero_stage"

    targets = ["xl-1b.yaml"] if path.name.startswith("zero3") else sorted(SIZED_CONFIGS)
    for name in targets:
        cfg = load_config(ROOT / "configs" / name)
        rt = dataclasses.replace(cfg.runtime, deepspeed_override=str(path))
        merged = deepspeed_config(cfg.optim, rt, micro_batch=cfg.tasks_per_worker, world_size=1)
        for key, value in override[ZERO_OPTIMIZATION].items() if ZERO_OPTIMIZATION in override else ():
            assert merged[ZERO_OPTIMIZATION][key] == value
        DeepSpeedConfig(merged)  # raises on unknown zero_optimization keys and bad values
