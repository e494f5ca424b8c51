"""``metarec submit``: send a training run to a Ray cluster through Ray Jobs.

The working directory (this repo) is uploaded with the job; Ray honours ``.gitignore`` there, and we also
exclude run outputs, W&B files and virtual environments (the upload is capped at 100 MiB). The config is
resolved here first, so a typo fails in a second on your laptop, not minutes later on the cluster.

Token authentication: when the cluster runs with ``RAY_AUTH_MODE=token``, export ``RAY_AUTH_MODE=token`` and
the token (``RAY_AUTH_TOKEN``, or Ray's token file from ``ray get-auth-token``) where you submit; Ray's
job client then sends it as a bearer token. The token is never put into the job's runtime environment.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metarec_dist.config import load_config, parse_override
from metarec_dist.errors import UserError
from metarec_dist.metrics.redact import redact_text

# gitignore syntax, anchored at the repo root: a bare "data/" would also drop metarec_dist/data/.
EXCLUDES = [
    "/.venv/",
    "/venv/",
    "/runs/",
    "/wandb/",
    "/outputs/",
    "/data/",
    "/.git/",
    "*.pt",
    "*.safetensors",
]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def entrypoint(config: Path, overrides: Sequence[str], root: Path) -> str:
    try:
        rel = config.resolve().relative_to(root.resolve())
    except ValueError:
        raise ValueError(
            f"--config {config}: the config must be inside the uploaded working dir {root} "
            "(put it under configs/ or pass --working-dir)"
        ) from None
    sets = " ".join(f"--set {shlex.quote(s)}" for s in overrides)
    return f"python -m metarec_dist.cli train --config {shlex.quote(str(rel))} {sets}".strip()


def runtime_env(root: Path, pip: Sequence[str] = (), image: str | None = None) -> dict[str, Any]:
    env: dict[str, Any] = {"working_dir": str(root), "excludes": EXCLUDES}
    if pip:
        env["pip"] = list(pip)
    if image:
        env["image_uri"] = image
    return env


def check_address(address: str) -> None:
    """``UserError`` unless ``address`` is the Ray Jobs API's HTTP address (``http(s)://HOST:PORT``).

    Ray reads an address without a scheme as a GCS address: ``127.0.0.1:8265`` (the dashboard's port) then
    waits ~35 s for a GCS there and ends in "Timed out while waiting for GCS". The scheme is not added for
    the user: a bare address may as well be a GCS one (port 6379), and http:// on it would be wrong too."""
    if not address.startswith(("http://", "https://")):
        raise UserError(
            f"--address {address}: give the Ray Jobs API's HTTP address with its scheme, e.g. "
            "http://127.0.0.1:8265 (the head's dashboard port; RAY_ADDRESS for launch/submit.sh)"
        )


def check_backend(overrides: Sequence[str]) -> None:
    """``UserError`` for a ``--set runtime.backend`` other than ``ray``: a submitted job always runs on Ray,
    and quietly replacing what the user typed (a typo, or ``local``) hides that their run is not what they
    asked for. A ``backend:`` in the config file is replaced without a word: it is the file's default for
    ``metarec train`` (configs/tiny.yaml says local), not a request made for this job."""
    for text in overrides:
        parts, value = parse_override(text)  # read as the loader reads it: "ray" and 'ray' are ray
        if parts == ["runtime"] and isinstance(value, dict):  # the section set whole: runtime={...}
            parts, value = ["runtime", "backend"], value.get("backend", "ray")
        if parts == ["runtime", "backend"] and value != "ray":
            raise UserError(
                f"--set {text}: metarec submit always runs the job on Ray (runtime.backend=ray); drop this "
                "--set (to run here, use metarec train)"
            )


def job_path(path: str, config: Path, root: Path) -> str:
    """The path the job is given for a file the config names (``runtime.deepspeed_override``, resolved
    here to ``path``): inside the uploaded working dir ``root``, relative to the config file's folder, which
    the job looks beside first (an absolute path here is not a path in Ray's copy of the working dir on the
    cluster); the file is also read now, so a broken one fails here. A path that is not here or is outside
    ``root`` is kept: it can only be a file on the cluster itself (a note says so)."""
    from metarec_dist.runtime.deepspeed_engine import read_override

    local = Path(path)
    try:
        inside = local.resolve().relative_to(root.resolve())
    except ValueError:
        where = "is not here" if not local.is_file() else f"is outside the uploaded working dir {root}"
        print(
            f"note: runtime.deepspeed_override {path} {where}: the job reads it at that path on the cluster",
            file=sys.stderr,
        )
        return path
    if f"/{inside.parts[0]}/" in EXCLUDES:
        raise UserError(
            f"runtime.deepspeed_override {path}: under {inside.parts[0]}/, which is not uploaded with the "
            "job; put it with the configs (e.g. configs/deepspeed/)"
        )
    read_override(path)
    return os.path.relpath(local.resolve(), config.resolve().parent)


def check_options(root: Path, pip: Sequence[str], image: str | None, job_id: str | None) -> None:
    """``UserError`` for options that would fail only on the cluster, or be dropped without a word: a working
    dir that is not a folder here (it was reported as a config outside it), an empty ``--pip`` (pip fails on
    the cluster after the upload), an empty ``--image`` or ``--job-id`` (an unset shell variable: the job
    ran without the image, or under an empty id no ``ray job`` command can name)."""
    if not root.is_dir():
        what = "not found" if not root.exists() else "not a folder"
        raise UserError(
            f"--working-dir {root}: {what}; give the folder to upload with the job (the repo root)"
        )
    for requirement in pip:
        if not requirement.strip():
            raise UserError("--pip '': give a pip requirement, e.g. --pip 'pandas==2.2.3' (or drop --pip)")
    if image is not None and not image.strip():
        raise UserError(
            "--image '': give a container image, e.g. --image rayproject/ray:2.60.0-py312 (or drop it)"
        )
    if job_id is not None and (not job_id.strip() or job_id != job_id.strip()):
        raise UserError(
            f"--job-id {job_id!r}: give a non-empty id without leading or trailing spaces (or drop it)"
        )


def check_job_storage(storage_path: str) -> None:
    """``UserError`` for a relative ``runtime.storage_path``: the job runs in Ray's unpacked copy of the
    working dir (under the head's session folder, a new one for every changed upload), so the run would land
    there, out of reach, and a re-submission after any code change would silently start afresh."""
    if "://" in storage_path or Path(storage_path).expanduser().is_absolute():
        return
    raise UserError(
        f"runtime.storage_path={storage_path}: a submitted job runs in a temporary copy of the working dir "
        "on the head, so its run folder must be an absolute path on the cluster (shared by every node) or "
        "cloud storage: --set runtime.storage_path=/mnt/shared/metarec-runs or s3://BUCKET/metarec-runs"
    )


def submit(
    address: str,
    config: Path,
    overrides: Sequence[str],
    root: Path,
    wait: bool = False,
    pip: Sequence[str] = (),
    image: str | None = None,
    job_id: str | None = None,
) -> int:
    from ray.job_submission import JobSubmissionClient

    check_address(address)
    check_backend(overrides)
    check_options(root, pip, image, job_id)
    cfg = load_config(config, [*overrides, "runtime.backend=ray"])  # validate before anything leaves here
    check_job_storage(cfg.runtime.storage_path)
    overrides = [*overrides, "runtime.backend=ray"]
    if cfg.runtime.deepspeed_override:
        path = job_path(cfg.runtime.deepspeed_override, config, root)
        overrides.append(f"runtime.deepspeed_override={json.dumps(path)}")  # quoted: read as YAML there
    try:
        client = JobSubmissionClient(address)
    except Exception as exc:  # connection refused, 401/403 from token auth, bad URL
        _raise_if_token_refused(exc, address)
        raise UserError(f"cannot reach the Ray Jobs API at {address}: {redact_text(str(exc))}") from None
    sid = _submit_with_retry(
        client,
        address,
        entrypoint=entrypoint(config, overrides, root),
        runtime_env=runtime_env(root, pip, image),
        submission_id=job_id,
        metadata={"run_name": cfg.runtime.run_name},
    )
    print(f"submitted job {sid} (run {cfg.runtime.run_name!r}) to {address}")
    sid_arg = shlex.quote(sid)  # an id given with --job-id may hold spaces or quotes: the commands still work
    print(f"follow the logs:  ray job logs --address {address} --follow {sid_arg}")
    print(f"status:           ray job status --address {address} {sid_arg}")
    print(f"stop it:          ray job stop --address {address} {sid_arg}")
    if not wait:
        return 0
    try:
        return follow(client, sid)
    except KeyboardInterrupt:
        # Ctrl-C stops only the following: the job is the cluster's and goes on running there.
        print(
            f"\nstopped following; job {sid} keeps running on the cluster. Stop it with:  "
            f"ray job stop --address {address} {shlex.quote(sid)}",
            file=sys.stderr,
        )
        return 130


def _submit_with_retry(client: Any, address: str, wait_s: float = 180.0, **job: Any) -> str:
    """Submit; a head that has just started answers "No available agent" until its job agent has
    registered, and Ray's message says to try again later: we do, for up to ``wait_s`` seconds (a loaded
    machine can take minutes). Other refusals fail at once."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.submit_job(**job)
        except Exception as exc:  # RuntimeError for HTTP errors, AuthenticationError for 401/403
            _raise_if_token_refused(exc, address)
            if not isinstance(exc, RuntimeError):
                raise
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                working_dir = job.get("runtime_env", {}).get("working_dir")
                raise refusal(exc, address, job.get("submission_id"), working_dir) from None
            time.sleep(2.0)


def refusal(
    exc: BaseException, address: str, job_id: str | None, working_dir: str | None = None
) -> UserError:
    """One line for a refused submission: Ray's client puts the server's whole traceback in the message."""
    reason = server_reason(str(exc))
    if job_id is not None and "already exists" in reason:
        return UserError(f"job id {job_id} already exists on the cluster; choose another --job-id")
    if reason.startswith("HTTP 413"):  # the zipped working dir is over the Jobs API's upload limit
        return UserError(
            f"the working dir {working_dir or '.'} is too large to upload to the Ray Jobs API at {address} "
            f"({reason.rstrip('.')}). Ray warned above of its largest files: add them (data, exports, "
            "checkpoints) to .gitignore, move them out, or give a smaller --working-dir"
        )
    return UserError(f"the Ray Jobs API at {address} refused the job: {redact_text(reason)}")


def server_reason(message: str) -> str:
    """The line that says why, from Ray's "Request failed with status code 500: <server text>.": the
    exception's own line (the last) of a server traceback, else the text's first line."""
    status = re.match(r"Request failed with status code (\d+): ", message)
    text = message[status.end() :] if status else message
    # Ray's client appends "." after the text: alone on the last line when the text ends with a newline.
    lines = [line.strip() for line in text.splitlines() if re.search(r"\w", line)] or [message.strip()]
    reason = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return f"HTTP {status[1]}: {reason}" if status else reason


def _raise_if_token_refused(exc: BaseException, address: str) -> None:
    """401 (no token sent) or 403 (wrong token) from a cluster with token authentication: say so, rather
    than that the API cannot be reached. Ray's client raises ``AuthenticationError`` for both (2.52+)."""
    import ray.exceptions

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is None and (m := re.search(r"status code (40[13])\b", str(exc))):
        status = int(m[1])
    if not (isinstance(exc, getattr(ray.exceptions, "AuthenticationError", ())) or status in (401, 403)):
        return
    raise UserError(
        f"the Ray Jobs API at {address} refused the token (HTTP 401/403: missing or wrong token). Export "
        "RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
        "~/.ray/auth_token) where you submit; see docs/cluster.md, token authentication"
    ) from None


def follow(client: Any, sid: str, poll_s: float = 1.0) -> int:
    """Stream the job's logs until it ends; exit status 0 only when it SUCCEEDED."""
    shown = 0
    while True:
        status = str(client.get_job_status(sid)).split(".")[-1]
        logs = client.get_job_logs(sid)
        sys.stdout.write(logs[shown:])
        sys.stdout.flush()
        shown = len(logs)
        if status in TERMINAL:
            break
        time.sleep(poll_s)
    info = client.get_job_info(sid)
    print(f"job {sid}: {status}" + (f" ({info.message})" if status != "SUCCEEDED" and info.message else ""))
    return 0 if status == "SUCCEEDED" else 1
