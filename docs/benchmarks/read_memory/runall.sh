#!/usr/bin/env bash
# Peak memory and a digest of each ~200 MB log that gen.py builds under big/, read as prepare_data reads it
# (docs/benchmarks.md, "Reading logs: peak memory"). Run from this folder after `python gen.py`:
#   bash runall.sh REPO LABEL     (REPO: the checkout whose code reads; PYTHON: its interpreter)
repo=$1; label=$2
for args in "big/ml1m/ratings.dat" "big/user_item.txt user_item" "big/log.csv.gz csv" "big/log.csv.zip csv" \
  "big/log.csv csv" "big/titles/ratings.dat"; do
  # shellcheck disable=SC2086
  out=$(TRACE=${TRACE:-} PYTHONPATH=$repo OMP_NUM_THREADS=1 "${PYTHON:-python}" measure.py $args 2> err.txt)
  echo "$label $args: $out"
  grep -i error err.txt | head -3
done
rm -f err.txt
