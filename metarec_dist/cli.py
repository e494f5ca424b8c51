"""``metarec``: train, evaluate, recommend, export, serve, submit, data, bench, print-config.

User mistakes (a bad config key, a missing file, a malformed log) are ``UserError``s (``ValueError``s);
``main`` prints them as one ``error:`` line and exits with status 2 instead of a traceback, and so does an
operating-system error about a named file (no such folder, not a directory, permission denied, disk full)
and a ``MemoryError`` (a size too big for the machine). ``--verbose`` prints the traceback too.
"""

from __future__ import annotations

import os
import signal
import threading


def _interrupted_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C before ``main`` takes over, while the modules import: one line and status 130, as later."""
    os.write(2, b"interrupted\n")
    # Not SystemExit: a handler that runs inside a finalizer or an import's except clause has it swallowed
    # (tried: one such Ctrl-C in ~20 went on to run the command, status 0). Mid-import nothing needs cleanup.
    os._exit(130)


# Python's own handler made a Ctrl-C in the first ~0.2 s (these imports) a KeyboardInterrupt traceback.
# Put back at the end of this module: ``main`` installs its own, and an importer (a test) keeps its own.
_BEFORE_IMPORTS = (
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    if threading.current_thread() is threading.main_thread()
    else None
)

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

from metarec_dist.config import (  # noqa: E402
    Config,
    Override,
    Setting,
    blame,
    config_to_yaml,
    load_config,
    with_overrides,
)
from metarec_dist.errors import (  # noqa: E402
    UserError,
    check_output_folder,
    check_result_target,
    probe_nearest,
)
from metarec_dist.metrics.redact import redact_text  # noqa: E402

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}
STDOUT = "-"  # `bench ... --json` without a FILE: one JSON line on stdout


def command(
    name: str,
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def deco(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return deco


def _config(args: argparse.Namespace, local_files: bool = True) -> Config:
    """The run's config, checked as far as can be before any work. ``local_files``: the files it names
    are read here too (not for ``submit``, whose job may name files that only its cluster has)."""
    overrides = [*(args.set or []), *getattr(args, "settings", [])]
    cfg = load_config(args.config, overrides)
    from metarec_dist.meta import algorithm_class, check_training  # imports torch: after the config itself

    # Mistakes found past the loader still name the file or the --set that gave the value.
    with _blamed(args.config, overrides):
        # An unknown algorithm, an option it ignores, no inner step, validation steps it cannot take: fail.
        check_training(cfg.meta, cfg.train.eval_steps)
        if cfg.runtime.deepspeed_override and local_files:
            from metarec_dist.runtime.deepspeed_engine import read_override

            read_override(cfg.runtime.deepspeed_override)  # a missing or broken file: the same, now
    from metarec_dist.train.pretrain import pretrain_config

    stage = pretrain_config(cfg)  # train.pretrain: its file is read and checked now too
    if stage is not None:
        algorithm_class(stage.meta)
    return cfg


@contextmanager
def _blamed(path: str | None, overrides: list[Override]) -> Iterator[None]:
    """A ``ValueError`` about a config key, prefixed as the loader would (``config.blame``)."""
    try:
        yield
    except ValueError as exc:
        raise UserError(blame(exc, path, overrides)) from None


def _add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", required=required, help="YAML config, e.g. configs/tiny.yaml")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override, e.g. meta.inner_lr=0.1 (repeatable)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metarec", description=__doc__.split("\n")[0].replace("``", ""))
    parser.add_argument("--verbose", action="store_true", help="debug logs, including every worker's")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_training(sub)
    _add_export(sub)
    from metarec_dist.eval.cli import add_evaluate_args, add_recommend_args

    add_evaluate_args(sub.add_parser("evaluate", help="cold-start evaluation with full ranking"))
    recommend = sub.add_parser("recommend", help="adapt on a history and print the top-K items")
    add_recommend_args(recommend)
    _add_device(recommend, "where the model adapts on the history and scores the items")
    _add_serve(sub)
    p = sub.add_parser("print-config", help="print the resolved config")
    _add_config_args(p, required=False)
    _add_bench(sub)
    _add_data(sub)
    return parser


def _version() -> str:
    """The installed distribution's version (pyproject.toml), or a note when running from a bare tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("metarec-dist")
    except PackageNotFoundError:
        return "(not installed: run from a source tree)"


def _add_training(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`metarec train` and `metarec submit`."""
    p = sub.add_parser("train", help="meta-train (locally, or on Ray with runtime.backend=ray)")
    _add_config_args(p)
    p.add_argument("--json", metavar="FILE", help="also write the final metrics as JSON")

    p = sub.add_parser("submit", help="submit a training run to a Ray cluster (Ray Jobs)")
    p.add_argument("--address", required=True, help="Ray Jobs API, e.g. http://127.0.0.1:8265")
    _add_config_args(p)
    p.add_argument("--wait", action="store_true", help="stream the logs and wait for the end")
    p.add_argument("--pip", action="append", default=[], help="pip requirement for the job's runtime env")
    p.add_argument("--image", help="container image for the job's runtime env")
    p.add_argument("--job-id", help="submission id (default: generated)")
    p.add_argument("--working-dir", default=".", help="uploaded with the job; the config must be inside it")


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`metarec export`."""
    p = sub.add_parser("export", help="consolidate a (sharded) checkpoint into safetensors + config")
    p.add_argument(
        "--checkpoint", required=True, help="a checkpoint folder, or a run folder (its newest complete one)"
    )
    p.add_argument("--out", required=True, help="output folder (new or empty, or a previous export)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous export at --out")
    p.add_argument(
        "--fuse",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="save the training users' co-occurrence counts and the fusion weight and adaptation chosen on "
        "validation users (as `metarec evaluate --fuse`), so that `metarec recommend` fuses; needs the "
        "run's data (default: the run's eval.fuse)",
    )
    p.add_argument(
        "--fuse-weight", type=float, metavar="W", help="fuse at this weight instead of choosing it"
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--choose-adaptation",
        action="store_true",
        help="choose the test-time adaptation (steps, inner lr) on validation users as `metarec evaluate` "
        "does and record it: recommend and serve apply it (default: they apply the steps the run "
        "validated with, train.eval_steps, where it set them, else the trained meta.adaptation_steps, at "
        "meta.inner_lr; a fused export always records its own); needs the run's data",
    )
    how.add_argument(
        "--steps",
        type=int,
        help="record this fixed test-time adaptation instead (0: serve the meta-trained initialisation)",
    )
    p.add_argument("--inner-lr", type=float, help="with --steps: the inner lr (default: the trained one)")
    _add_device(
        p,
        "where --fuse / --choose-adaptation score the validation users (the exported files are written from "
        "the CPU whatever it is)",
    )


def _add_device(p: argparse.ArgumentParser, what: str) -> None:
    """``--device`` as ``metarec evaluate`` takes it, resolved by ``eval/device.py``'s ``resolve_device`` (not
    imported here: it imports torch); ``what``: what runs there."""
    p.add_argument(
        "--device",
        default="cpu",
        metavar="{auto,cpu,cuda,cuda:N}",
        help=f"{what}: cpu (default), cuda / cuda:N (one GPU), or auto (cuda when torch sees a GPU, else "
        "cpu); on a GPU scores may differ from the CPU's in the last digits",
    )


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`metarec serve`."""
    p = sub.add_parser("serve", help="serve an exported model over HTTP on Ray Serve (POST /recommend)")
    p.add_argument("--checkpoint", required=True, help="an exported model (or a checkpoint, a run folder)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address the HTTP proxy listens on (default: loopback)"
    )
    p.add_argument("--port", type=int, default=8000, metavar="PORT", help="HTTP port (default: 8000)")
    p.add_argument(
        "--replicas",
        type=int,
        default=1,
        metavar="N",
        help="copies of the model answering requests (default: 1)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch threads (and Ray CPUs) per replica (default: 1)",
    )
    p.add_argument(
        "--gpus-per-replica",
        type=float,
        default=0.0,
        metavar="F",
        help="GPUs per replica (Ray Serve's num_gpus; 0.5: two replicas share one), which then adapts and "
        "scores on its GPU; refused when the Ray cluster has none, or when one started here has too few (a "
        "joined cluster short of them is warned about: its autoscaler may add some) (default: 0, the CPU)",
    )
    p.add_argument(
        "--no-fuse", dest="fuse", action="store_false", help="a fused export: rank by the model alone"
    )
    p.add_argument(
        "--max-body-bytes", type=int, default=1 << 20, help="largest request body; HTTP 413 above (1 MiB)"
    )
    p.add_argument(
        "--request-timeout-s",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a request not answered within this (queued at overload, a stalled client) gets Ray Serve's "
        "HTTP 408 (default: 30)",
    )


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`metarec bench ...`."""
    from metarec_dist.eval.cli import protocol_option

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    p = bench.add_parser("meta-step", help="batched meta-step vs per-task loop vs plain step")
    _add_config_args(p)
    p.add_argument("--repeats", type=int, default=20, help="timed steps per variant, medians (loop: 3)")
    _add_bench_json(p)
    p = bench.add_parser("system", help="in-process trainer vs Ray + DeepSpeed (1 worker), same work")
    _add_config_args(p)
    p.add_argument("--steps", type=int, default=400, help="meta-steps per side; the first quarter is warm-up")
    _add_bench_json(p)
    p = bench.add_parser("data", help="load + preprocess + task building on a generated log")
    p.add_argument(
        "--interactions", type=int, default=1_000_000, help="rows of the generated log (default: 1000000)"
    )
    _add_bench_json(p)
    p = bench.add_parser(
        "scale", help="data memory per worker and driver, evaluation workers, ZeRO-3 at 1M items, sampled"
    )
    p.add_argument(
        "--interactions", type=int, default=2_000_000, help="N: the data part runs N and 10 N (quick: 200000)"
    )
    p.add_argument(
        "--eval-users", type=int, default=1024, help="users scored by the evaluation part (default: 1024)"
    )
    p.add_argument(
        "--parts",
        default="data,eval,zero,sampled",
        help="comma-separated subset of data,eval,zero,sampled (default: all)",
    )
    _add_bench_json(p)

    p = bench.add_parser(
        "eval",
        help="cold-start evaluation phase by phase: adaptation grid, test users, fusion weight, fused test",
    )
    p.add_argument(
        "--checkpoint",
        help="a real export (or checkpoint, run folder), evaluated on the data it trained on "
        "(default: an untrained model on generated users)",
    )
    p.add_argument("--items", type=int, default=20_000, help="generated catalogue (default: 20000)")
    p.add_argument("--valid-users", type=int, default=1000, help="generated validation users (default: 1000)")
    p.add_argument("--test-users", type=int, default=1000, help="generated test users (default: 1000)")
    p.add_argument(
        "--compare",
        action="store_true",
        help="also time the grid and the fusion weights scored point by point, check the same numbers",
    )
    p.add_argument(
        "--protocol",
        **protocol_option(("cold_start", "loo", "new-items", "mixed")),  # bench.eval_bench.PROTOCOLS
        default="cold_start",
        help="the evaluation protocol (default: cold_start; generated users hold the newest fifth of the "
        "items out under new_items / mixed)",
    )
    _add_bench_json(p)

    p = bench.add_parser("serve", help="recommendations/s in this process vs over HTTP from `metarec serve`")
    p.add_argument("--checkpoint", required=True, help="an exported model (or a checkpoint, a run folder)")
    p.add_argument(
        "--requests", type=int, default=200, help="timed requests each way, after 10 warm-up (default: 200)"
    )
    p.add_argument("--concurrency", type=int, default=4, help="clients sending at once (default: 4)")
    p.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="the server's replicas, one thread each: 1 to 4 per core of this machine (default: 1)",
    )
    p.add_argument(
        "--request-timeout-s",
        type=float,
        metavar="SECONDS",
        help="the server's --request-timeout-s: slower answers come back as HTTP 408, counted under "
        "statuses (default: serve's, 30)",
    )
    _add_bench_json(p)


def _add_data(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`metarec data stats|download`."""
    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data", required=True)
    p = data.add_parser(
        "stats",
        help="users, items, interactions, lengths, split sizes",
        description="What a data setting reads, before training: e.g. metarec data stats --path log.csv "
        "--set data.user_col=uid --set data.string_ids=true (every data.* key: docs/data.md). Without "
        "--config or --path: the built-in default, synthetic data.",
    )
    _add_config_args(p, required=False)
    p.add_argument("--path", help="a file or folder (with --config: instead of its data.path)")
    p.add_argument(
        "--format",
        default="auto",
        help="with --path: its data.format: auto (default), csv, tsv, parquet, jsonl, user_item, recbole, "
        "movielens",
    )
    p = data.add_parser("download", help="fetch a dataset into METAREC_DATA_DIR")
    p.add_argument("name", help="movielens-100k | movielens-1m | movielens-latest-small")
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where to unpack it (default: $METAREC_DATA_DIR, else ~/.cache/metarec)",
    )


def _add_bench_json(p: argparse.ArgumentParser) -> None:
    """``--json FILE`` as ``train``/``evaluate`` take it; a bare ``--json`` (older scripts and
    docs/benchmarks.md) still prints the result on one line instead of indented."""
    p.add_argument(
        "--json",
        nargs="?",
        const=STDOUT,
        metavar="FILE",
        help="also write the result as JSON to FILE; a bare --json prints it on one line instead",
    )


@command("print-config")
def _print_config(args: argparse.Namespace) -> int:
    print(config_to_yaml(_config(args)), end="")
    return 0


@command("submit")
def _submit(args: argparse.Namespace) -> int:
    from metarec_dist.runtime.jobs import check_address, check_backend, submit

    check_address(args.address)  # before the config: a wrong address fails at once
    check_backend(args.set or [])  # before the Setting below replaces a --set runtime.backend
    # Checked as the job will run it: on Ray (DeepSpeed settings are then taken, whatever the file says).
    on_ray = Setting("runtime.backend", "ray", "submit (jobs run on Ray, runtime.backend=ray)")
    _config(argparse.Namespace(**{**vars(args), "settings": [on_ray]}), False)
    root = Path(args.working_dir).resolve()
    return submit(
        args.address, Path(args.config), args.set or [], root, args.wait, args.pip, args.image, args.job_id
    )


@command("export")
def _export(args: argparse.Namespace) -> int:
    from functools import partial

    from metarec_dist.checkpoint import export, export_source, read_newest, run_dir_of
    from metarec_dist.eval.cli import check_adaptation_args
    from metarec_dist.eval.device import resolve_device
    from metarec_dist.eval.fusion import add_fusion
    from metarec_dist.eval.stored_adaptation import add_adaptation, fixed_adaptation

    device = resolve_device(args.device)  # no GPU for --device cuda: one line now, before anything is read
    # /proc, a read-only mount: refused now naming --out, not as a temp folder's OSError (or after --fuse).
    probe_nearest(Path(args.out), f"export --out {args.out}")
    check_adaptation_args(args)  # --inner-lr without --steps, a negative --steps: before the export

    def finish(temp: Path, source: Path) -> None:  # relative data files are found from the run's folder
        run_dir = run_dir_of(source)
        fixed = fixed_adaptation(temp, args.steps, args.inner_lr)
        fused = add_fusion(
            temp, fuse=args.fuse, weight=args.fuse_weight, run_dir=run_dir, fixed=fixed, device=device
        )
        if not fused:
            add_adaptation(temp, fixed, args.choose_adaptation, run_dir=run_dir, device=device)
        if not fused and not args.choose_adaptation and device.type != "cpu":
            print(
                f"note: --device {device}: this export scores no validation users (no --fuse, no "
                "--choose-adaptation), so nothing ran there",
                file=sys.stderr,
            )

    # A run folder may be training meanwhile and prune the checkpoint being exported: read_newest retries.
    out = read_newest(
        Path(args.checkpoint),
        export_source,
        lambda folder: export(folder, Path(args.out), args.overwrite, partial(finish, source=folder)),
    )
    print(_export_summary(out))
    return 0


def _export_summary(folder: Path) -> str:
    """What ``metarec export`` wrote: the step, the catalogue and, for a fused export, the weight."""
    from metarec_dist.checkpoint import EXPORT_CONFIG
    from metarec_dist.eval.fusion import FUSION_KEY
    from metarec_dist.eval.protocol import FUSION_WEIGHTS
    from metarec_dist.eval.stored_adaptation import ADAPTATION_KEY

    meta = json.loads((folder / EXPORT_CONFIG).read_text(encoding="utf-8"))
    lines = [f"exported step {meta['step']} ({meta['num_items']} items) to {folder}"]
    fusion = meta.get(FUSION_KEY)
    recorded = fusion or meta.get(ADAPTATION_KEY)  # a fused export records its adaptation in its fusion
    if recorded:
        lines.append(_adaptation_line(recorded))
    if fusion:
        how = "chosen on validation users" if fusion["selected_on"] == "valid" else "fixed by --fuse-weight"
        lines.append(f"fused with the item co-occurrence counts at weight {fusion['weight']:g} ({how})")
        if fusion["selected_on"] == "valid" and fusion["weight"] == max(FUSION_WEIGHTS):
            lines.append("note: the largest weight tried; a larger one (--fuse-weight) may score better")
    return "\n".join(lines)


def _adaptation_line(recorded: dict) -> str:
    """The test-time adaptation an export records (its ``adaptation`` or its fusion's), in words; per-K
    choices (``eval.adaptation: per_shot``) each, as ``metarec evaluate`` names them."""

    def one(steps: int, lr: float) -> str:
        return f"{steps} step{'s' * (steps != 1)} at lr {lr:g}"

    how = (
        "chosen on validation users" if recorded["adaptation_selected_on"] == "valid" else "fixed by --steps"
    )
    per_shot = recorded.get("per_shot")
    if per_shot:  # applied by the history's length: the largest K not above it
        what = "per support size " + "; ".join(f"K={k}: {one(s, lr)}" for k, (s, lr) in per_shot.items())
    else:
        what = one(recorded["steps"], recorded["inner_lr"])
    return f"test-time adaptation {what} ({how}), which recommend and serve apply"


@command("serve")
def _serve(args: argparse.Namespace) -> int:
    from metarec_dist.runtime.serving import serve_model

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: --host {args.host}: the recommender answers anyone who reaches it", file=sys.stderr)

    def ready(url: str) -> None:
        print(f"serving at {url} (POST {url}/recommend; Ctrl-C stops)", flush=True)

    serve_model(
        args.checkpoint,
        args.host,
        args.port,
        args.replicas,
        args.fuse,
        args.threads,
        ready,
        max_body=args.max_body_bytes,
        request_timeout_s=args.request_timeout_s,
        gpus_per_replica=args.gpus_per_replica,
    )
    return 0


@command("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    from metarec_dist.eval.cli import evaluate_main

    return evaluate_main(args)


@command("recommend")
def _recommend(args: argparse.Namespace) -> int:
    from metarec_dist.eval.cli import recommend_main
    from metarec_dist.eval.device import resolve_device

    args.device = resolve_device(args.device)  # no GPU for --device cuda: one line, before anything is read
    return recommend_main(args)


@command("train")
def _train(args: argparse.Namespace) -> int:
    from metarec_dist.interrupts import sigterm_as_interrupt
    from metarec_dist.train.launch import interrupted_message, train
    from metarec_dist.train.summary import format_summary

    cfg = _config(args)
    if args.verbose:  # --verbose: every worker's logs too
        cfg = with_overrides(cfg, ["logging.verbose=true"])
    # Outputs that cannot be written fail now, not after the whole run.
    json_path = check_result_target(args.json, "train", ("step", "checkpoint")) if args.json else None
    if "://" not in cfg.runtime.storage_path:
        check_output_folder(cfg.runtime.storage_path, "runtime.storage_path")
    try:
        with sigterm_as_interrupt():
            result = train(cfg, verbose=args.verbose)
    except KeyboardInterrupt as exc:
        print(interrupted_message(cfg, getattr(exc, "step", None)), file=sys.stderr)
        return 130
    print(format_summary(result, cfg))
    if json_path is not None:
        _write_json(json_path, result)
    return 0


def _write_json(path: Path, result: dict) -> None:
    """``--json``'s file, checked before the work: a temp file renamed into place (a Ctrl-C or a full disk
    never leaves half a result)."""
    from metarec_dist.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=1, default=str))


@command("bench")
def _bench(args: argparse.Namespace) -> int:
    import os

    from metarec_dist.bench import provenance

    # An output that cannot be written fails now, not after the benchmark.
    to_file = args.json not in (None, STDOUT)
    json_path = check_result_target(args.json, "bench", ("bench", "command")) if to_file else None
    context = provenance(args.argv)
    result = {"bench": args.bench, **_bench_result(args), **context, "load_after": os.getloadavg()}
    print(json.dumps(result) if args.json == STDOUT else json.dumps(result, indent=1))
    if json_path is not None:
        _write_json(json_path, result)
    return 0


def _bench_result(args: argparse.Namespace) -> dict:
    # Sizes the programs cannot run with: fail naming the flag (else "no median for empty data", or a
    # config key the user never set).
    for flag, least in (("repeats", 1), ("steps", 1), ("interactions", 1000)):
        if getattr(args, flag, least) < least:
            raise ValueError(f"--{flag} must be >= {least}, got {getattr(args, flag)}")
    if args.bench == "meta-step":
        from metarec_dist.bench.meta_step import run_meta_step_bench

        result = run_meta_step_bench(_config(args), repeats=args.repeats)
    elif args.bench == "system":
        from metarec_dist.bench.system import run_system_bench

        result = run_system_bench(_config(args), steps=args.steps)
    elif args.bench == "scale":
        from metarec_dist.bench.scale import run_scale_bench

        if args.eval_users < 1:
            raise UserError(f"--eval-users must be >= 1, got {args.eval_users}")
        result = run_scale_bench(args.interactions, args.eval_users, tuple(args.parts.split(",")))
    elif args.bench == "serve":
        from metarec_dist.bench.serve_bench import run_serve_bench

        for flag in ("requests", "concurrency"):  # --replicas: its range is the machine's (serve_bench)
            if getattr(args, flag) < 1:
                raise UserError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
        result = run_serve_bench(
            args.checkpoint,
            args.requests,
            args.concurrency,
            args.replicas,
            request_timeout_s=args.request_timeout_s,
        )
    elif args.bench == "eval":
        from metarec_dist.bench.eval_bench import run_eval_bench

        result = run_eval_bench(
            args.checkpoint,
            args.items,
            args.valid_users,
            args.test_users,
            compare=args.compare,
            protocol_name=args.protocol,
        )
    else:
        from metarec_dist.bench.data_bench import run_data_bench

        result = run_data_bench(args.interactions)
    return result


@command("data")
def _data(args: argparse.Namespace) -> int:
    from metarec_dist import data as d

    if args.data == "download":
        print(d.download(args.name, args.data_dir))
        return 0
    if args.path is not None:
        if not args.path.strip():
            raise UserError("--path: empty; give a data file or folder")
        # With --config too: that config's data settings (features, filters, columns) on this file. The
        # flags are Settings: a path is not YAML (" #" would start a comment), and a mistake names the flag.
        path = [Setting("data.format", args.format, "--format"), Setting("data.path", args.path, "--path")]
        cfg = load_config(args.config, [*path, *(args.set or [])])
    elif args.format != "auto":  # it would be ignored: the data shown would be the config's (or synthetic)
        raise UserError(
            f"--format {args.format}: only with --path; without it the data is the config's "
            "(--config, or --set data.format=... data.path=...)"
        )
    else:
        cfg = _config(args)
    print(d.format_stats(d.data_stats(d.prepare_data(cfg.data))))
    return 0


# Options naming a file, folder or address, and what to give instead of an empty value (`--json "$OUT"` with
# OUT unset): an empty path reads as the working folder ("--checkpoint .: not a checkpoint", "--json .: is a
# folder") or, for `train --json` and `evaluate --json`, as not given, so the result was silently not
# written. Every command's options, by their argparse dest; --path, --pip, --image, --job-id and --address are
# checked where they are read, `export --out ''` is refused as the current folder, and `recommend --items ''`
# / `--user ''` say the format they expect.
NON_EMPTY = {
    "config": ("--config", "a YAML config file, e.g. configs/tiny.yaml"),
    "checkpoint": ("--checkpoint", "a checkpoint, an exported model or a run folder"),
    "json": ("--json", "a file name, or drop --json"),
    "host": ("--host", "an address to listen on, e.g. 127.0.0.1"),
    "data_dir": ("--data-dir", "a folder"),
    "working_dir": ("--working-dir", "a folder"),
    "parts": ("--parts", "a comma-separated subset of data,eval,zero,sampled"),
    "shots": ("--shots", "support sizes, e.g. 1,3,5,10, or drop --shots"),
    "baseline": ("--baseline", "a second checkpoint, exported model or run folder, or drop --baseline"),
}


# Options naming a file or folder on this machine, read or written as such: a URL there (s3://, gs://,
# https://) was read as a local path ("--checkpoint s3:/bucket/run: no such folder") or, for export --out,
# written to as one (a folder "s3:" in the working folder, said to be the export). By argparse dest.
LOCAL_PATHS = {
    "config": ("--config", "read"),
    "checkpoint": ("--checkpoint", "read"),
    "baseline": ("--baseline", "read"),
    "out": ("--out", "write"),
    "json": ("--json", "write"),
    "data_dir": ("--data-dir", "write"),
}


def refuse_urls(args: argparse.Namespace) -> None:
    """An option of ``LOCAL_PATHS`` given a URL fails naming it and the way round, before any work."""
    for dest, (flag, how) in LOCAL_PATHS.items():
        if isinstance(value := getattr(args, dest, None), str) and "://" in value:
            way = "copy it here first (aws s3 cp --recursive, gsutil -m cp -r, ...)"
            if how == "write":
                way = "copy the result there afterwards"
            raise UserError(f"{flag} {value}: a URL; give a path on this machine and {way}")


def refuse_empty(args: argparse.Namespace) -> None:
    """An option of ``NON_EMPTY`` given as an empty (or blank) string fails naming it, before any work."""
    for dest, (flag, what) in NON_EMPTY.items():
        if isinstance(value := getattr(args, dest, None), str) and not value.strip():
            raise UserError(f"{flag}: got an empty value; give {what}")


def main(argv: list[str] | None = None) -> int:
    with noting_interrupts() as interrupts:
        try:
            return _main(argv)
        except KeyboardInterrupt:  # before _main's own handling (building the parser, parsing): as later
            print("interrupted", file=sys.stderr)
            return 130
        except Exception:
            if not interrupts:  # a real failure: keep the traceback
                raise
            # A Ctrl-C while numpy or torch imports (the first seconds of most commands) can come out as
            # another error: numpy's "ImportError: cannot load module more than once per process".
            print("interrupted", file=sys.stderr)
            return 130


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # the command, as bench results record it
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s: %(message)s"
    )
    try:
        # Imported here, not with this module: a Ctrl-C while it imports (asyncio) is said as one.
        from tqdm.contrib.logging import logging_redirect_tqdm

        # Log lines go through tqdm.write while the training bar is open, so a warning starts its own line
        # instead of being glued to the bar's.
        with logging_redirect_tqdm():
            refuse_empty(args)
            refuse_urls(args)
            return COMMANDS[args.command](args)
    except ValueError as exc:  # user mistakes (UserError and older ValueErrors): one clear line
        return _report(exc, str(exc), args.verbose)
    except OSError as exc:
        if exc.filename is None:  # not about a file the user named: a real failure, keep the traceback
            raise
        return _report(exc, f"{exc.filename}: {exc.strerror or exc}", args.verbose)
    except (MemoryError, RuntimeError) as exc:  # numpy's "Unable to allocate 7.28 TiB ...", torch's
        why = out_of_memory(exc)
        if why is None:  # another RuntimeError: a real failure, keep the traceback
            raise
        return _report(exc, f"out of memory: {why}; choose smaller sizes (--verbose: where)", args.verbose)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


@contextmanager
def noting_interrupts() -> Iterator[list[int]]:
    """Inside the block Ctrl-C (SIGINT) raises KeyboardInterrupt, as Python's own handler does, and is
    noted in the list yielded; the previous handler after. Off the main thread: nothing noted."""
    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def interrupt(signum: int, frame: object) -> None:
        seen.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield seen
    finally:  # None: a handler not set from Python, which cannot be put back; the default then
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


TORCH_CPU_OOM = re.compile(r"can't allocate memory: you tried to allocate (\d+) bytes")


def out_of_memory(exc: BaseException) -> str | None:
    """What ran out, for a size too big for this machine: numpy's ``MemoryError`` as it says it, torch's
    CPU allocator failure (a ``RuntimeError``, "[enforce fail at alloc_cpu.cpp:127] err == 0.
    DefaultCPUAllocator: can't allocate memory: you tried to allocate 25600000000 bytes...", which was a
    traceback) in GiB, and CUDA's ``OutOfMemoryError`` by its first two sentences; None for anything else."""
    text = str(exc)
    if isinstance(exc, MemoryError):
        return text or "an allocation failed"
    if (found := TORCH_CPU_OOM.search(text)) is not None:
        return f"torch could not allocate {int(found.group(1)) / 2**30:,.1f} GiB"
    if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch here
        return ". ".join(text.split(". ")[:2])
    return None


def _report(exc: BaseException, message: str, verbose: bool) -> int:
    """One ``error:`` line (secrets in URLs masked), the traceback first with ``--verbose``; status 2."""
    if verbose:
        traceback.print_exception(exc)
    print(f"error: {redact_text(message)}", file=sys.stderr)
    return 2


if _BEFORE_IMPORTS is not None:  # None: a handler not set from Python, which cannot be put back
    signal.signal(signal.SIGINT, _BEFORE_IMPORTS)
elif threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGINT, signal.SIG_DFL)

if __name__ == "__main__":
    sys.exit(main())
