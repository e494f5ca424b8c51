"""``metarec evaluate`` and ``metarec recommend``: argument parsing and the terminal/JSON output.

User mistakes raise ``ValueError``; ``metarec_dist.cli.main`` prints them as one line. The heavy imports
(torch, transformers) happen inside the commands: ``metarec --help`` builds this parser too.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from metarec_dist.config import MAX_ADAPTATION_STEPS
from metarec_dist.interrupts import sigterm_as_interrupt

if TYPE_CHECKING:
    import torch

    from metarec_dist.eval.loading import LoadedModel
    from metarec_dist.eval.protocol import Adaptation, ColdStartProtocol
    from metarec_dist.eval.recommend import Recommendation, Recommender
    from metarec_dist.eval.stats import MethodResult


def parse_shots(text: str) -> list[int]:
    try:
        shots = sorted({int(s) for s in text.split(",")})
    except ValueError:
        raise ValueError(f"--shots {text!r}: expected comma-separated positive ints, e.g. 1,3,5,10") from None
    if not shots or shots[0] < 1:
        raise ValueError(f"--shots {text!r}: shot counts must be >= 1")
    return shots


def parse_tune_users(text: str) -> int:
    """``--tune-users``: ``all`` (or 0, as ``eval.tune_users`` spells it) for every validation user, else a
    positive count; returned as ``eval.tune_users`` takes it (0: all)."""
    if text.strip().lower() == "all":
        return 0
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:  # argparse prints it as one line naming the flag
        raise argparse.ArgumentTypeError(f"expected a number of validation users >= 1 or 'all', got {text!r}")
    return n


def flag_spelling(protocol: str) -> str:
    """A protocol as ``--protocol`` shows it: the spelling of the config's ``data.protocol`` (``new_items``),
    whatever the name inside (the item protocols' ``new-items``, the JSON report's ``protocol``)."""
    return protocol.replace("-", "_")


def protocol_arg(choices: tuple[str, ...]) -> Callable[[str], str]:
    """An argparse ``type`` taking either spelling of a protocol (``new_items``, or the older ``new-items``;
    ``cold-start`` too) and returning the name in ``choices``; an unknown one is refused naming the choices
    as ``--protocol`` shows them."""
    internal = {flag_spelling(c): c for c in choices}

    def parse(text: str) -> str:
        name = internal.get(flag_spelling(text))
        if name is None:  # argparse's own wording, with the shown spelling
            shown = ", ".join(map(repr, internal))
            raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {shown})")
        return name

    return parse


def protocol_option(choices: tuple[str, ...]) -> dict[str, Any]:
    """``add_argument`` keywords for a ``--protocol`` flag: both spellings taken, one (``new_items``)
    shown."""
    return {
        "type": protocol_arg(choices),
        "choices": choices,
        "metavar": "{" + ",".join(map(flag_spelling, choices)) + "}",
    }


def _add_adaptation_args(p: argparse.ArgumentParser, searched: bool = True) -> None:
    """``--steps``/``--inner-lr``/``--finetune``. ``searched``: evaluate chooses the adaptation on validation
    users; recommend has no users to search on and takes the trained setting (a fused export's chosen one)."""
    default = (
        "skips the validation search"
        if searched
        else "default: the adaptation an export records (see metarec export --help), else the steps the run "
        "validated with (train.eval_steps) where it set them, else the trained meta.adaptation_steps"
    )
    p.add_argument("--steps", type=int, help=f"fixed test-time adaptation steps ({default})")
    lr_default = "" if searched else "; default: as --steps, the trained meta.inner_lr"
    p.add_argument("--inner-lr", type=float, help=f"fixed test-time inner lr (with --steps{lr_default})")
    how = "tuned on valid" if searched else "the trained steps and inner lr, or --steps/--inner-lr"
    p.add_argument(
        "--finetune",
        action="store_true",
        help=f"none/sasrec: fine-tune the fast weights on the support at test time ({how})",
    )


def add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="training checkpoint, run folder or exported model"
    )
    _add_protocol_args(parser)
    _add_report_args(parser)
    _add_workers_args(parser)
    parser.add_argument(
        "--fuse",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fuse the model's scores with the co-occurrence counts of the user's items (weight chosen "
        "on validation users; an export made with --fuse: its stored weight and adaptation, unless "
        "--steps/--inner-lr/--tune-users ask for another); reported as METHOD+cooc (default: the run's "
        "eval.fuse)",
    )
    _add_adaptation_args(parser)


def _add_protocol_args(p: argparse.ArgumentParser) -> None:
    """What is scored: the protocol, its options, and which users."""
    protocols = ("cold_start", "loo", "new-items", "mixed")  # the names inside; --help shows new_items
    p.add_argument(
        "--protocol",
        **protocol_option(protocols),
        help="cold_start: held-out users, K support items; loo: warm leave-one-out, each user's last item; "
        "new_items: rank only the items held out of training (data.protocol=new_items), against content "
        "kNN and random; mixed: the same users ranking all items, new and old (default: the one the model "
        "was trained for, its data.protocol)",
    )
    p.add_argument(
        "--mask-seen",
        action=argparse.BooleanOptionalAction,
        default=None,  # None: not given; given for another protocol it is an error, not silently unused
        help="loo only: drop the user's earlier items from the ranking (default: on, as the S3-Rec/ICLRec "
        "code); the other protocols never rank the support",
    )
    p.add_argument(
        "--shots", metavar="K,K,...", help="support sizes K, e.g. 1,3,5,10 (default: the config's eval.shots)"
    )
    p.add_argument(
        "--split",
        default="test",
        choices=("test", "valid"),  # a typo fails at once, not after the model and the data are loaded
        help="users to score: test (default), or valid (dev only: tuned on them)",
    )


def _add_report_args(p: argparse.ArgumentParser) -> None:
    """What is reported: a paired baseline, the JSON file, the bootstrap intervals."""
    p.add_argument(
        "--baseline",
        metavar="CHECKPOINT",
        help="a second checkpoint (its default protocol); adds paired intervals for the difference",
    )
    p.add_argument("--json", metavar="FILE", help="write every number (with intervals) to this JSON file")
    p.add_argument(
        "--n-boot", type=int, metavar="N", help="bootstrap resamples (default: the config's eval.n_boot)"
    )


def _add_workers_args(p: argparse.ArgumentParser) -> None:
    """Where and in which batches the users are scored: no number changes."""
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="score the users (and the adaptation grid) on N Ray actors, one CPU each; same numbers "
        "(default: the config's eval.workers, 1 = in this process)",
    )
    p.add_argument(
        "--batch-users",
        type=int,
        metavar="N",
        help="users scored together (default: the config's eval.batch_users); the unit of work --workers "
        "shares out, and the memory (batch x eval.item_chunk scores); same numbers",
    )
    p.add_argument(
        "--tune-users",
        type=parse_tune_users,
        metavar="N|all",
        help="validation users the test-time adaptation (and --fuse's weight) is chosen on: N of them, a "
        "fixed random subset, or all (default: the config's eval.tune_users; 0 there means all)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        metavar="{auto,cpu,cuda,cuda:N}",
        help="where the model adapts and scores (the adaptation search, fine-tuning and fusion too): cpu "
        "(default), cuda / cuda:N (one GPU, not with --workers), or auto (cuda when torch sees a GPU, else "
        "cpu); the baselines and the statistics stay on the CPU. On a GPU the scores round differently: a "
        "few users' metrics may differ in the last digits",
    )


def add_recommend_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="training checkpoint, run folder or exported model"
    )
    parser.add_argument(
        "--items",
        help="the user's history, raw item ids oldest first: 12,55,301 (omitted: a brand-new user, "
        "recommended from --user alone)",
    )
    parser.add_argument("--k", type=int, default=10, help="how many items to recommend (default: 10)")
    parser.add_argument(
        "--user",
        help="the user's own features, for a model trained with data.user_features: "
        "age=24,gender=M,occupation=technician (values outside the vocabulary read as unknown)",
    )
    parser.add_argument(
        "--no-fuse",
        dest="fuse",
        action="store_false",
        help="an export made with --fuse: rank by the model alone, without the co-occurrence counts",
    )
    _add_adaptation_args(parser, searched=False)


def check_adaptation_args(args: argparse.Namespace) -> None:
    """``--steps``/``--inner-lr`` as given, before anything is loaded (a typo fails at once); what depends
    on the model (``--finetune``, the trained lr) is ``_fixed``'s."""
    if args.steps is None and args.inner_lr is None:
        return
    if args.steps is None:
        raise ValueError("--inner-lr fixes the adaptation: give --steps N (>= 0) with it")
    if not 0 <= args.steps <= MAX_ADAPTATION_STEPS:
        raise ValueError(f"--steps must be in [0, {MAX_ADAPTATION_STEPS}] (got {args.steps})")
    if args.inner_lr is not None and not 0 <= args.inner_lr < float("inf"):  # NaN too
        raise ValueError(f"--inner-lr must be a finite number >= 0, got {args.inner_lr}")


def _fixed(args: argparse.Namespace, loaded: LoadedModel) -> tuple[int, float] | None:
    from metarec_dist.meta import ALGORITHMS

    algorithm = loaded.cfg.meta.algorithm
    if args.finetune and ALGORITHMS[algorithm].adapts:  # it would be ignored: the model adapts already
        raise ValueError(
            f"--finetune: this model (meta.algorithm={algorithm}) adapts at test time already; --finetune is "
            "for models trained without adaptation (none, sasrec)"
        )
    if args.steps is None and args.inner_lr is None:
        return None
    check_adaptation_args(args)
    assert args.steps is not None  # check_adaptation_args: --inner-lr alone is refused
    if args.steps > 0 and not args.finetune and not ALGORITHMS[algorithm].adapts:
        # It would fine-tune while the report names the plain model (sasrec, not sasrec+finetune).
        raise ValueError(
            f"--steps {args.steps}: this model (meta.algorithm={algorithm}) does not adapt at test time; "
            "add --finetune to fine-tune it on the support with these steps, or drop --steps"
        )
    return args.steps, loaded.cfg.meta.inner_lr if args.inner_lr is None else args.inner_lr


def protocol_name(loaded: LoadedModel, asked: str | None) -> str:
    """The protocol the model was trained for; another one would score users or items it trained on.
    A model trained with data.protocol=new_items is evaluated with new_items (default) or mixed, or on its
    cold-start users (cold_start: every item a candidate, as for any cold-start model)."""
    from metarec_dist.eval.item_protocol import ITEM_PROTOCOLS

    trained = loaded.cfg.data.protocol
    if trained == "new_items" and asked in (None, "cold_start", *ITEM_PROTOCOLS):
        return asked or ITEM_PROTOCOLS[0]
    if asked in ITEM_PROTOCOLS:
        raise ValueError(
            f"--protocol {flag_spelling(asked)}: {loaded.source} was trained with data.protocol={trained}, "
            "whose training data holds every item (retrain with --set data.protocol=new_items)"
        )
    if asked is not None and asked != trained:
        raise ValueError(
            f"--protocol {asked}: {loaded.source} was trained with data.protocol={trained}, whose training "
            f"data holds the {asked} targets (retrain with --set data.protocol={asked})"
        )
    return trained


def model_protocol(
    loaded: LoadedModel,
    shots: list[int],
    name: str = "cold_start",
    mask_seen: bool = True,
    workers: int | None = None,
    batch_users: int | None = None,
    tune_users: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[ColdStartProtocol, str]:
    """The model's own protocol: its data config's users, its support_max (loo: its input window) and
    ``eval:`` section, scoring on ``device`` (``eval/device.py``)."""
    from metarec_dist.eval.item_protocol import ITEM_PROTOCOLS, item_protocol
    from metarec_dist.eval.loading import check_same_data, load_prepared
    from metarec_dist.eval.protocol import ColdStartProtocol, LeaveOneOutProtocol

    cfg = loaded.cfg
    workers = gpu_workers(loaded, workers, device)
    # Where and in which batches the users are scored changes no number: not the checkpoint's business.
    if workers is not None:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, workers=workers))
    if batch_users is not None:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, batch_users=batch_users))
    if tune_users is not None:  # which validation users choose the adaptation: a choice of this evaluation
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, tune_users=tune_users))
    if name in ITEM_PROTOCOLS and not cfg.data.item_features:
        raise ValueError(
            f"--protocol {flag_spelling(name)}: {loaded.source}'s data config declares no item features "
            "(data.item_features): the content kNN baseline needs them; retrain with a config that declares "
            "them, e.g. configs/ml100k-features.yaml with --set data.protocol=new_items"
        )
    if name != "loo":
        check_shots_fit(cfg, shots)
    prepared = load_prepared(cfg)
    check_same_data(loaded, prepared)
    splits = prepared.user_splits()
    protocol: ColdStartProtocol
    if name == "loo":
        positions = cfg.model.max_seq_len - cfg.model.prefix_tokens(cfg.data)  # the user token takes one
        protocol = LeaveOneOutProtocol.build(splits, positions, cfg.eval, mask_seen)
    elif name in ITEM_PROTOCOLS:
        protocol = item_protocol(name, splits, shots, cfg.tasks.support_max, cfg.eval)
    else:
        protocol = ColdStartProtocol(splits, shots, cfg.tasks.support_max, cfg.eval)
    return dataclasses.replace(protocol, device=device), prepared.source


def gpu_workers(loaded: LoadedModel, workers: int | None, device: torch.device | str) -> int | None:
    """``workers`` (``--workers``; None: the run's ``eval.workers``) for an evaluation on ``device``: the
    evaluation actors have no GPU, so on a GPU a run's ``eval.workers`` > 1 gives way to this process, with
    a note (an explicit ``--workers`` N > 1 was refused before: ``device.check_workers``)."""
    configured = loaded.cfg.eval.workers
    if workers is not None or str(device) == "cpu" or configured <= 1:
        return workers
    print(
        f"note: {loaded.source}'s eval.workers={configured} would score on Ray actors, which have no GPU: "
        f"scoring in this process on {device}",
        file=sys.stderr,
    )
    return 1


def check_shots_fit(cfg: Any, shots: list[int]) -> None:
    """The largest shot count must fit the model's input beside BOS (and the user token)."""
    most = cfg.model.max_seq_len - 1 - cfg.model.prefix_tokens(cfg.data)
    if shots[-1] > most:
        raise ValueError(
            f"--shots: {shots[-1]} items do not fit model.max_seq_len={cfg.model.max_seq_len} (at most "
            f"{most} support items here); give shot counts up to {most}"
        )


def _evaluate_one(
    loaded: LoadedModel,
    protocol: ColdStartProtocol,
    split: str,
    finetune: bool,
    fixed: Any,
    fuse: bool = False,
    adaptation: Adaptation | None = None,
) -> MethodResult:
    # A fused export fuses at its stored weight: what recommend and serve rank by (exported_fusion_note).
    stored = loaded.fusion.weight if fuse and loaded.fusion is not None else None
    result = protocol.evaluate(
        loaded, split, finetune=finetune, fixed=fixed, fuse=fuse, adaptation=adaptation, stored_weight=stored
    )
    result.info["checkpoint"] = str(loaded.source)
    return result


def _same_users(a: ColdStartProtocol, b: ColdStartProtocol, split: str) -> None:
    import numpy as np

    sa, sb = a.users(split), b.users(split)
    if a.splits.num_items != b.splits.num_items or len(sa) != len(sb) or not all(map(np.array_equal, sa, sb)):
        raise ValueError(
            f"trained on different data ({b.splits.num_items} items, {len(sb)} {split} users; --checkpoint: "
            f"{a.splits.num_items} items, {len(sa)} {split} users, or other ones): no paired comparison"
        )


def evaluate_main(args: argparse.Namespace) -> int:
    # An empty --json / --shots / --baseline / --checkpoint was refused before this (cli.refuse_empty).
    if args.n_boot is not None and args.n_boot < 1:  # before the (slow) evaluation
        raise ValueError(f"--n-boot must be >= 1 (bootstrap resamples), got {args.n_boot}")
    if args.shots:  # a malformed list fails before the model and the data are loaded
        parse_shots(args.shots)
    check_adaptation_args(args)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1 (evaluation processes), got {args.workers}")
    if args.batch_users is not None and args.batch_users < 1:
        raise ValueError(f"--batch-users must be >= 1, got {args.batch_users}")
    if args.json:  # an output that cannot be written fails now, not after the whole evaluation
        check_json_target(args.json)
    from metarec_dist.eval.device import check_workers, resolve_device
    from metarec_dist.eval.loading import resolve_checkpoint

    args.device = resolve_device(args.device)  # no GPU for --device cuda: one line now, before any work
    check_workers(args.device, args.workers or 1)

    # Wrong paths fail now: before Ray starts, and not after the first model's whole evaluation.
    if (args.workers or 1) > 1:
        resolve_checkpoint(args.checkpoint)
    if args.baseline:
        resolve_checkpoint(args.baseline, "--baseline")
    try:
        # SIGTERM (`kill`, a scheduler) stops it as Ctrl-C does: else Ray's handler (installed by the local
        # cluster --workers starts) dumps a C++ stack and aborts, and the evaluation actors are not stopped.
        with sigterm_as_interrupt():
            if (args.workers or 1) > 1:  # start the actors now: too few CPUs fails before the data is read
                from metarec_dist.eval.distributed import runner_for

                runner_for(args.workers)
            return _evaluate(args)
    except KeyboardInterrupt:
        print(interrupted_message(args), file=sys.stderr)
        return 130
    finally:
        from metarec_dist.eval.distributed import close_runners

        close_runners()


def interrupted_message(args: argparse.Namespace) -> str:
    """What an interrupted ``metarec evaluate`` prints (its evaluation actors are stopped after it)."""
    wrote = f"; --json {args.json} not written" if args.json else ""
    return f"interrupted: the evaluation stopped before its end, nothing reported{wrote}; run it again"


def check_json_target(path: str) -> None:
    """``--json``: a file that can be written (its missing folders are created when it is written), and
    not a file of another kind (a config, an export's metarec_config.json) that the report would replace."""
    from metarec_dist.errors import check_result_target

    check_result_target(path, "evaluate", ("methods",), noun="report")


def mask_seen_for(name: str, asked: bool | None) -> bool:
    """``--mask-seen``/``--no-mask-seen`` for protocol ``name``: only leave-one-out ranks the history, so
    either flag given for another protocol is refused rather than left unused."""
    if asked is not None and name != "loo":
        flag = "--mask-seen" if asked else "--no-mask-seen"
        raise ValueError(
            f"{flag}: only the leave-one-out protocol (--protocol loo) has this choice; the "
            f"{flag_spelling(name)} protocol never ranks the user's support items; drop {flag}"
        )
    return True if asked is None else asked


def fuse_for(name: str, asked: bool | None, configured: bool) -> bool:
    """Whether to fuse with the co-occurrence counts under protocol ``name``: ``--fuse``/``--no-fuse``, else
    the run's ``eval.fuse``. Under ``new_items`` every candidate is a held-out item, which no training user
    had: its counts are all zero, every weight ranks as the model alone, and a ``+cooc`` row would be the
    model's under another name; an explicit ``--fuse`` is refused, the config's default dropped with a
    note."""
    fuse = configured if asked is None else asked
    if not fuse or name != "new-items":
        return fuse
    if asked:
        raise ValueError(
            "--fuse: under --protocol new_items every candidate is a held-out item, which no training user "
            "had, so the co-occurrence counts are all zero and fusion changes nothing; drop --fuse (its "
            "effect on new items shows under --protocol mixed)"
        )
    print(
        "note: eval.fuse is on, but under --protocol new_items the held-out items have no co-occurrence "
        "counts: evaluating the model alone",
        file=sys.stderr,
    )
    return False


def _evaluate(args: argparse.Namespace) -> int:
    from metarec_dist.eval.loading import load_model
    from metarec_dist.eval.report import build_report

    loaded = load_model(args.checkpoint)
    cfg = loaded.cfg
    name = protocol_name(loaded, args.protocol)
    if name == "loo" and args.shots:
        raise ValueError("--shots: the leave-one-out protocol has no shot counts (the input is the history)")
    shots = parse_shots(args.shots) if args.shots else sorted(cfg.eval.shots)
    args.mask_seen = mask_seen_for(name, args.mask_seen)
    longest = cfg.tasks.support_max
    if name != "loo":  # too long an input is an error: no note about support_max before it
        check_shots_fit(cfg, shots)
    if name != "loo" and shots[-1] > longest:  # allowed (an extrapolation), but not what recommend does
        print(
            f"note: --shots {shots[-1]} is above tasks.support_max={longest}, the longest support the model "
            f"was trained on; metarec recommend adapts on at most the {longest} most recent items",
            file=sys.stderr,
        )
    fixed = _fixed(args, loaded)  # a mistake in --steps/--finetune fails before the data is read
    protocol, source = model_protocol(
        loaded, shots, name, args.mask_seen, args.workers, args.batch_users, args.tune_users, args.device
    )
    protocol.users(args.split)  # validates the name before any work
    # The baseline's checkpoint, protocol and users are checked before the (slow) first evaluation.
    base = _baseline_protocol(args, name, shots, protocol) if args.baseline else None
    fuse = fuse_for(name, args.fuse, cfg.eval.fuse)
    if loaded.fusion is not None and not fuse and args.fuse is None and name != "new-items":
        # recommend/serve on this export fuse by default: say that this table is not what they rank by
        print(
            f"note: {loaded.source} is a fused export (weight {loaded.fusion.weight:g}), which recommend and "
            "serve apply; this evaluates the model alone: --fuse to evaluate the fusion",
            file=sys.stderr,
        )
    check_tune_users(args, loaded, fixed, fuse, base[0] if base else None)
    exported = export_adaptation(args, loaded, fixed, fuse, list(protocol.shots))
    if exported is not None and not fuse:
        print(
            f"note: adapted as {loaded.source} records ({_settings(exported, list(protocol.shots))}), which "
            "recommend and serve apply; --steps or --tune-users evaluate another",
            file=sys.stderr,
        )
    results = [_evaluate_one(loaded, protocol, args.split, args.finetune, fixed, fuse, exported)]
    if fuse and loaded.fusion is not None:
        note = exported_fusion_note(loaded, results[0].info["adaptation"], list(protocol.shots))
        print(note, file=sys.stderr)
    baseline = None
    if base is not None:
        results.append(_evaluate_baseline(args, *base, results[0].name))
        baseline = results[-1].name
    results += baselines(protocol, args.split, cfg.train.seed)
    n_boot = cfg.eval.n_boot if args.n_boot is None else args.n_boot
    doc = build_report(results, baseline, n_boot)
    doc.update({"split": args.split, "data": source})
    if args.device.type != "cpu":  # where the model's numbers were computed (a CPU report is unchanged)
        doc["device"] = str(args.device)
    if name == "loo":
        doc.update({"protocol": "loo", "mask_seen": args.mask_seen, "window": protocol.support_max})
    else:
        doc["shots"] = shots
    if name != "loo" and name != "cold_start":
        doc["protocol"] = name
    _show_report(doc, name, args.json)
    return 0


def check_tune_users(
    args: argparse.Namespace,
    loaded: LoadedModel,
    fixed: tuple[int, float] | None,
    fuse: bool,
    base: LoadedModel | None,
) -> None:
    """``--tune-users`` where no validation user is searched on (``--steps`` fixed the adaptation, or a
    model that does not adapt, unfused, and no baseline that adapts) is refused rather than left unused."""
    from metarec_dist.meta import ALGORITHMS

    if args.tune_users is None:
        return
    searched = fixed is None and (args.finetune or ALGORITHMS[loaded.algorithm].adapts)
    if searched or fuse or (base is not None and ALGORITHMS[base.algorithm].adapts):
        return
    why = (
        "--steps fixes the adaptation"
        if fixed is not None
        else f"this model (meta.algorithm={loaded.algorithm}) does not adapt without --finetune"
    )
    raise ValueError(
        f"--tune-users: {why} and nothing is fused, so no validation users are searched on; drop --tune-users"
    )


def export_adaptation(
    args: argparse.Namespace,
    loaded: LoadedModel,
    fixed: tuple[int, float] | None,
    fuse: bool,
    shots: list[int],
) -> Adaptation | None:
    """The adaptation an export recorded (what recommend and serve apply), so the numbers are the artefact's:
    a fused export's, with ``--fuse``; a plain export's (``export --choose-adaptation`` / ``--steps``),
    without. None (choose on validation users, or ``fixed``) when the user asked for another with
    ``--steps``/``--inner-lr``/``--tune-users``/``--finetune``, or when the export records none for this
    evaluation."""
    if fixed is not None or args.tune_users is not None or args.finetune:
        return None
    stored = loaded.fusion if fuse else loaded.adaptation
    return None if stored is None else stored.adaptation(shots)


def _settings(adaptation: Adaptation, shots: list[int]) -> str:
    """``1 step, lr 0.25``, or per support size ``K=1: 1 step, lr 0.25; K=5: ...``."""

    def one(steps: int, lr: float) -> str:
        return f"{steps} step{'s' * (steps != 1)}, lr {lr:g}"

    if adaptation.per_shot is None:
        return one(adaptation.steps, adaptation.inner_lr)
    return "; ".join(f"K={k}: {one(*adaptation.setting(k))}" for k in shots)


def exported_fusion_note(loaded: LoadedModel, adaptation: dict[str, Any], shots: list[int]) -> str:
    """What ``evaluate --fuse`` on a fused export says: the export's stored weight is used (what recommend
    and serve apply), and where these shots' validation users would choose otherwise. ``shots``: the
    protocol's result keys (leave-one-out: ``LOO``, 0)."""
    assert loaded.fusion is not None
    fusion = adaptation["fusion"]
    text = f"note: fused at the export's stored weight {fusion['weight']:g}, which recommend and serve apply"
    if fusion["valid_best"] != fusion["weight"]:
        text += f"; these shots' validation users would choose {fusion['valid_best']:g}"
    stored = [loaded.fusion.setting(k) for k in shots]
    chosen = [
        (a["steps"], a["inner_lr"])
        for a in (adaptation.get("per_shot", {}).get(str(k), adaptation) for k in shots)
    ]
    keys = [f"K={k}" if k else "loo" for k in shots]  # LOO is 0, never a shot count
    shown = ", ".join(f"{key}: {s} steps, lr {lr:g}" for key, (s, lr) in zip(keys, stored, strict=True))
    if adaptation.get("selected_on") == "export":
        text += f", after the export's adaptation ({shown})"
    elif chosen != stored:  # --steps/--inner-lr/--tune-users/--finetune asked for another adaptation
        text += f"; the adaptation used here, as asked, differs from the export's ({shown})"
    return text


def _baseline_protocol(
    args: argparse.Namespace, name: str, shots: list[int], protocol: ColdStartProtocol
) -> tuple[LoadedModel, ColdStartProtocol]:
    """``--baseline``'s model and its protocol on the evaluated model's users: its default protocol (the
    evaluated model's when it was trained for it). A mistake is an error naming ``--baseline``."""
    from metarec_dist.eval.loading import load_model

    with _about_baseline(args):
        base = load_model(args.baseline, "--baseline")
        try:
            base_name = protocol_name(base, name)
        except ValueError as exc:  # the message names --protocol, which the user may not have given
            shown = flag_spelling(name)
            why = str(exc).removeprefix(f"--protocol {shown}: ")
            raise ValueError(f"not comparable under {shown}: {why}") from None
        base_protocol = model_protocol(
            base,
            shots,
            base_name,
            args.mask_seen,
            args.workers,
            args.batch_users,
            args.tune_users,
            args.device,
        )[0]
        _same_users(protocol, base_protocol, args.split)
    return base, base_protocol


@contextlib.contextmanager
def _about_baseline(args: argparse.Namespace) -> Iterator[None]:
    """A mistake found in the ``--baseline`` checkpoint (its files, data, protocol, sequence length, its
    evaluation) as one line naming ``--baseline PATH``: the flags its message names (``--shots``,
    ``--protocol``) were fine for ``--checkpoint``, which the user would otherwise go and change."""
    try:
        yield
    except ValueError as exc:
        text = str(exc)
        if text.startswith("--baseline"):  # load_model / resolve_checkpoint name it already
            raise
        raise type(exc)(
            f"--baseline {args.baseline}: {text} (this is about the --baseline checkpoint; --checkpoint "
            f"{args.checkpoint} is fine)"
        ) from None


def _evaluate_baseline(
    args: argparse.Namespace, base: LoadedModel, base_protocol: ColdStartProtocol, method: str
) -> MethodResult:
    """``--baseline`` scored on the same users; named ``baseline:METHOD`` when its method is ``method``
    too."""
    with _about_baseline(args):
        result = _evaluate_one(base, base_protocol, args.split, finetune=False, fixed=None)
    if result.name == method:
        result.name = f"baseline:{result.name}"
    return result


def _show_report(doc: dict[str, Any], name: str, json_path: str | None) -> None:
    """The table on the terminal (mixed: and the new-items view of it), and ``--json``'s file."""
    from metarec_dist.eval.report import format_table, write_json

    print(format_table(doc))
    if name == "mixed":
        from metarec_dist.eval.publish import new_items_table
        from metarec_dist.eval.report import shots_of

        print("\n".join(new_items_table(doc, shots_of(doc), markdown=False)))
    if json_path:
        write_json(doc, json_path)
        print(f"\nwrote {json_path}")


def baselines(protocol: ColdStartProtocol, split: str, seed: int) -> list[MethodResult]:
    """The protocol's reference methods: popularity and co-occurrence; content kNN and random for the item
    protocols."""
    return protocol.baselines(split, seed)


def recommend_main(args: argparse.Namespace) -> int:
    from metarec_dist.eval.recommend import Recommender, parse_items, parse_user

    # Before loading anything: a typo fails in milliseconds.
    raw = parse_items(args.items) if args.items is not None else []
    stated = parse_user(args.user) if args.user is not None else None
    if not raw and stated is None:
        raise ValueError(
            "give the user's history (--items 12,55,301) or, for a model trained with data.user_features, "
            "a brand-new user's features (--user age=24,gender=M,occupation=technician)"
        )
    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    check_adaptation_args(args)
    recommender = Recommender.load(
        args.checkpoint, fuse=args.fuse, finetune=args.finetune, device=args.device
    )
    recommender.fixed = _fixed(args, recommender.loaded)
    if recommender.fusion is None and args.fuse and recommender.loaded.cfg.eval.fuse:
        print(
            "note: this run's recipe fuses with the co-occurrence counts (eval.fuse), which only an export "
            "carries: `metarec export` it and recommend from the export; ranking by the model alone",
            file=sys.stderr,
        )
    if not args.fuse and recommender.loaded.fusion is None and not recommender.loaded.cfg.eval.fuse:
        print(
            "note: --no-fuse: this model carries no fusion (only an export made with --fuse does); it ranks "
            "by the model alone either way",
            file=sys.stderr,
        )
    fixed = recommender.setting(len(raw))
    recs = recommender(raw, args.k, stated)
    _show_recommendations(recommender, raw, stated, recs, fixed)
    return 0


HISTORY_SHOWN = 20  # titles on the history line: a 1,500-item history printed 1,500 titles (40 kB)


def history_line(raw: list[str], ids: list[int], titles: dict[int, str]) -> str:
    """``history: TITLE; TITLE; ...``, the most recent ``HISTORY_SHOWN`` items only, saying how many
    earlier ones are left out."""
    shown = [titles.get(i, r) for r, i in zip(raw[-HISTORY_SHOWN:], ids[-HISTORY_SHOWN:], strict=True)]
    earlier = len(raw) - len(shown)
    head = f"history ({len(raw)} items, the last {len(shown)} shown): " if earlier else "history: "
    return head + "; ".join(shown)


def _show_recommendations(
    recommender: Recommender,
    raw: list[str],
    stated: dict[str, str] | None,
    recs: list[Recommendation],
    fixed: tuple[int, float],
) -> None:
    """The history (titles where known), the user's features, how the model ranked, and the ranked items."""
    from metarec_dist.eval.recommend import history_window

    cfg, catalogue, fusion = recommender.loaded.cfg, recommender.catalogue, recommender.fusion
    if catalogue.titles and raw:
        print(history_line(raw, catalogue.to_model_ids(raw), catalogue.titles))
    if stated:
        print("user: " + ", ".join(f"{name}={value}" for name, value in stated.items()))
    from metarec_dist.eval.protocol import method_name

    method = method_name(cfg.meta.algorithm, recommender.finetune)  # as evaluate names it: none+finetune
    how = f"{method}, {fixed[0]} adaptation step{'' if fixed[0] == 1 else 's'}, lr {fixed[1]}"
    if fusion is not None:
        how += f", fused with the co-occurrence counts at weight {fusion.weight:g}"
    if recommender.device.type != "cpu":  # --device: said off the CPU only (the CPU's output is unchanged)
        how += f", on {recommender.device}"
    window = history_window(cfg)
    if len(raw) > window:  # recommend() reads the most recent ones only
        why = (
            "model.max_seq_len - 1, the leave-one-out input window"
            if cfg.data.protocol == "loo"
            else "tasks.support_max, the longest support it was trained for"
        )
        print(
            f"note: the history has {len(raw)} items; the model reads the most recent {window} ({why})",
            file=sys.stderr,
        )
    if raw:
        print(f"top {len(recs)} after {len(raw)} item{'' if len(raw) == 1 else 's'} ({how}):")
    else:  # a brand-new user: the user token and BOS only, nothing to adapt on
        print(f"top {len(recs)} for a new user from its features alone ({cfg.meta.algorithm}, no history):")
    for r in recs:
        title = f"  {r.title}" if r.title else ""
        print(f"{r.rank:>3}. {r.raw_id:>8}{title}  ({r.score:.3f})")
