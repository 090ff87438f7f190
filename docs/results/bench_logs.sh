#!/usr/bin/env bash
# Keep a long search benchmark's logs across sessions and checkouts:
#   bash docs/results/bench_logs.sh save NAME     results/NAME -> docs/results/NAME, for committing
#   bash docs/results/bench_logs.sh restore NAME  docs/results/NAME -> results/NAME, before bench_search.py --resume
# A finished run (its row in runs.csv) is kept as <run>_completions.csv, an unfinished one as
# <run>_completions_partial.csv with a tree's state as <run>_tree_state_partial.jsonl; bench_search.py --resume
# replays every run from them. restore refuses to overwrite a checkout that kept its results.
set -eu
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
if [ $# -ne 2 ] || { [ "$1" != save ] && [ "$1" != restore ]; }; then
  echo "usage: bash docs/results/bench_logs.sh save|restore NAME (a folder under results/)" >&2
  exit 2
fi
run_dir=results/$2; kept=docs/results/$2
if [ $1 = save ]; then
  if [ ! -d $run_dir ]; then echo "error: $run_dir not found: nothing to save" >&2; exit 2; fi
  mkdir -p $kept
  if [ -f $run_dir/runs.csv ]; then cp $run_dir/runs.csv $kept/runs.csv; fi  # written once a run has finished
  for dir in $run_dir/*_rep*/; do
    run=$(basename $dir); method=${run%_rep*}; rep=${run#*_rep}
    [ -f $dir/completions.csv ] || continue
    if [ -f $run_dir/runs.csv ] && grep -q "^$method,$rep," $run_dir/runs.csv; then
      cp $dir/completions.csv $kept/${run}_completions.csv
      rm -f $kept/${run}_completions_partial.csv $kept/${run}_tree_state_partial.jsonl
    else
      cp $dir/completions.csv $kept/${run}_completions_partial.csv
      if [ -f $dir/tree_state.jsonl ]; then cp $dir/tree_state.jsonl $kept/${run}_tree_state_partial.jsonl; fi
    fi
  done
  wc -l $kept/*.csv $kept/*.jsonl 2>/dev/null
else
  if [ -e $run_dir ]; then
    echo "error: $run_dir exists: this checkout kept its results; resume with --resume alone" >&2
    exit 2
  fi
  if [ ! -d $kept ]; then echo "error: $kept not found: nothing to restore" >&2; exit 2; fi
  mkdir -p $run_dir
  if [ -f $kept/runs.csv ]; then cp $kept/runs.csv $run_dir/runs.csv; fi
  for file in $kept/*_completions*.csv $kept/*_tree_state_partial.jsonl; do
    [ -f "$file" ] || continue
    name=$(basename "$file"); run=${name%%_completions*}; run=${run%%_tree_state*}
    mkdir -p $run_dir/$run
    case $name in *.jsonl) cp "$file" $run_dir/$run/tree_state.jsonl ;; *) cp "$file" $run_dir/$run/completions.csv ;; esac
  done
  ls $run_dir
fi
