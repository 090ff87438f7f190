#!/usr/bin/env bash
# The free-form search benchmark on fresh network 9203 (docs/results.md, "The benchmark on fresh network 9203"):
# tree, random search and TPE, three repetitions each (training seeds 77, 177, 277), alternating within a
# repetition, from a worktree pinned at e40cb3d (the tree with floor-retest, the trainer with the 1.4-fold split
# bar). Resumable: run it again and every run goes on from its log. On a checkout without results/, first
# `bash docs/results/bench_logs.sh restore bench_free_forms_9203`; before a session ends, `... save ...`.
# Confirmations (2 fresh training seeds on networks 9101, 9102) run once all nine runs are done: CONFIRM_SEEDS=2.
set -u
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
main=$PWD
worktree=/tmp/wt_b9203_e40cb3d
[ -d $worktree ] || git worktree add -f $worktree e40cb3d
cd $worktree && OPENBLAS_NUM_THREADS=1 RAY_AUTH_MODE=disabled PYTHONPATH=$worktree nice -n 15 \
  ${PYTHON:-$main/.venv/bin/python} benchmarks/bench_search.py --space search_spaces/free_forms.yaml --network 9203 \
  --num-trials 96 --budget 20 --concurrency 2 --cpus 2 --reps 3 --confirm-networks 9101,9102 \
  --confirm-seeds ${CONFIRM_SEEDS:-0} --out $main/results/bench_free_forms_9203 --resume \
  >> $main/results/bench_9203.out 2>> $main/results/bench_9203.log < /dev/null
