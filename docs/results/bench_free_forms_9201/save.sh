#!/usr/bin/env bash
# Copy the 9201 benchmark's logs from results/ into this folder for committing: a finished run (its row in runs.csv)
# as <run>_completions.csv, an unfinished one as <run>_completions_partial.csv (and a tree's state as
# <run>_tree_state_partial.jsonl). Run from anywhere in the checkout; restore.sh puts them back.
set -eu
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
src=results/bench_free_forms_9201; dst=docs/results/bench_free_forms_9201
cp $src/runs.csv $dst/runs.csv
for dir in $src/*_rep*/; do
  run=$(basename $dir); method=${run%_rep*}; rep=${run#*_rep}
  [ -f $dir/completions.csv ] || continue
  if grep -q "^$method,$rep," $src/runs.csv; then
    cp $dir/completions.csv $dst/${run}_completions.csv
    rm -f $dst/${run}_completions_partial.csv $dst/${run}_tree_state_partial.jsonl
  else
    cp $dir/completions.csv $dst/${run}_completions_partial.csv
    if [ -f $dir/tree_state.jsonl ]; then cp $dir/tree_state.jsonl $dst/${run}_tree_state_partial.jsonl; fi
  fi
done
wc -l $dst/*.csv $dst/*.jsonl 2>/dev/null
