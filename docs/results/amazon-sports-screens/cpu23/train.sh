#!/usr/bin/env bash
# Issue 15, twenty-third session (no GPU lent): the twentieth session's best screened candidate,
# `fomaml128-d05-b512` (configs/coldstart-gpu.yaml with 512 tasks per step; gpu19/sweep.sh PLAN=scale20),
# trained on the 2-core CPU machine instead: sweep.sh's exact settings, with runtime.use_gpu=false and two
# torch threads. Validation users only (early stopping on the training loop's criterion); nothing here looks
# at test users. Checkpoints every 500 steps: the same command again resumes an interrupted run.
#   SEED=0 OUT=runs/cpu23 bash docs/results/amazon-sports-screens/cpu23/train.sh
# The settings are cpu24/train.sh's (its arm b512), which trains the other CPU arms.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ARMS=b512 THREADS="${THREADS:-2}" OUT="${OUT:-runs/cpu23}" exec bash "$HERE/../cpu24/train.sh"
