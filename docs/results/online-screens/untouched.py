"""The old model on the new log, not trained: a step-0 checkpoint that `metarec evaluate` reads.

`train.meta_steps=0` is refused by the config (meta_steps must be >= 1), so this builds the trainer exactly
as `metarec train` does (train/launch.py: the config, the new log, `train.init_from`), trains no step, and
calls its `finish`: the final validation, then the checkpoint (`checkpoints/step_000000`).

Usage: python docs/results/online-screens/untouched.py --config FILE --set KEY=VALUE ... (as `metarec train`)
"""

from __future__ import annotations

import argparse
import json

from metarec_dist.config import load_config
from metarec_dist.data import prepare_data
from metarec_dist.run_folder import RunLock, local_run_dir
from metarec_dist.runtime.allocator import apply_process_settings
from metarec_dist.runtime.context import LocalContext
from metarec_dist.train.trainer import MetaTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    cfg = load_config(args.config, args.set)
    if not cfg.train.init_from:
        parser.error("set train.init_from (the old run)")
    apply_process_settings(cfg.runtime)
    folder = local_run_dir(cfg.runtime)
    with RunLock(folder):
        data = prepare_data(cfg.data).user_splits()
        trainer = MetaTrainer(cfg, LocalContext(folder, cfg.checkpoint.keep), data)
        print(json.dumps(trainer.finish({}), indent=1, default=str))


if __name__ == "__main__":
    main()
