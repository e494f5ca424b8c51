"""Evaluate the GPU sweep's exported models (sweep.sh, PLAN=confirm) on the test users exactly as
``python -m metarec_dist.eval.reproduce`` evaluates a run it trained -- adaptation (and fusion weight) chosen
on the 1,000 tuning validation users, then every test user at K = 1, 3, 5, 10 -- and leave the per-user
results where ``pair_repros.py`` reads them: ``<out>/per_user/<label>-s<seed>.pkl``.

    python docs/results/amazon-sports-screens/gpu19/evaluate_exports.py --out runs/gpu19/eval \\
        --model fomaml128=runs/gpu19/exports/fomaml128-d05-b256 --fuse fomaml128 --seeds 0,1,2

``--device cuda`` evaluates on the GPU (``metarec evaluate --device``): on the device that trained the
models, without shipping them back first; the default, ``cpu``, is what the published numbers used.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import torch

from metarec_dist.eval.device import resolve_device
from metarec_dist.eval.loading import load_model, load_prepared
from metarec_dist.eval.protocol import method_name
from metarec_dist.eval.reproduce import build_protocol, validation_score


def evaluate(
    label: str,
    export: Path,
    seed: int,
    out: Path,
    finetune: bool,
    fuse: bool,
    steps: int | None = None,
    device: torch.device | str = "cpu",
) -> None:
    loaded = load_model(str(export))
    data = load_prepared(loaded.cfg).user_splits()
    protocol = build_protocol("cold_start", data, [1, 3, 5, 10], loaded.cfg, device)
    variants = [(False, False)] + [(True, False)] * finetune + [(False, True)] * fuse
    chosen, runs = {}, {}
    for tune, fused in variants:
        name = method_name(loaded.algorithm, tune, label, fuse=fused)
        if tune not in chosen:
            fixed = None if steps is None else (steps, loaded.cfg.meta.inner_lr)
            chosen[tune] = protocol.choose_adaptation(loaded, tune, fixed=fixed)
        res = protocol.evaluate(loaded, "test", finetune=tune, name=name, fuse=fused, adaptation=chosen[tune])
        res.info.update(
            {
                "seed": seed,
                "export": str(export),
                "val_ndcg@10": validation_score(protocol, loaded, res.info["adaptation"]),
                **({"device": str(device)} if str(device) != "cpu" else {}),
            }
        )
        runs[name] = (res.per_user, res.info)
        print(name, seed, res.info["adaptation"], "val", round(res.info["val_ndcg@10"], 4), flush=True)
    path = out / "per_user" / f"{label}-s{seed}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(runs))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="LABEL=EXPORT_PREFIX (-s<seed> appended)")
    p.add_argument("--fuse", action="append", default=[], help="a label also evaluated fused")
    p.add_argument("--finetune", action="append", default=[], help="a label also fine-tuned at test time")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument(
        "--steps", type=int, help="adapt with this many steps instead of choosing (0: the trained init alone)"
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--device",
        default="cpu",
        help="auto, cpu (default), cuda or cuda:N: where the models adapt and score",
    )
    args = p.parse_args()
    try:
        device = resolve_device(args.device)  # no GPU for --device cuda: one line, before any model loads
    except ValueError as exc:
        p.exit(2, f"error: {exc}\n")
    for text in args.model:
        label, prefix = text.split("=", 1)
        for seed in (int(s) for s in args.seeds.split(",")):
            if (args.out / "per_user" / f"{label}-s{seed}.pkl").is_file():
                continue  # done by an earlier call
            evaluate(
                label,
                Path(f"{prefix}-s{seed}"),
                seed,
                args.out,
                label in args.finetune,
                label in args.fuse,
                args.steps,
                device,
            )


if __name__ == "__main__":
    main()
