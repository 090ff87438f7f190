#!/usr/bin/env bash
# Put the committed logs of the 9201 benchmark back into results/bench_free_forms_9201/ on a checkout that lacks them,
# so that bench_search.py --resume replays every run from its log (and a tree's state file). Refuses to overwrite.
set -eu
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
src=docs/results/bench_free_forms_9201; dst=results/bench_free_forms_9201
if [ -e $dst/runs.csv ]; then
  echo "error: $dst/runs.csv exists: this checkout kept its results; resume with --resume alone" >&2
  exit 2
fi
mkdir -p $dst && cp $src/runs.csv $dst/runs.csv
for file in $src/*_completions*.csv $src/*_tree_state_partial.jsonl; do
  [ -f "$file" ] || continue
  name=$(basename "$file"); run=${name%%_completions*}; run=${run%%_tree_state*}
  mkdir -p $dst/$run
  case $name in *.jsonl) cp "$file" $dst/$run/tree_state.jsonl ;; *) cp "$file" $dst/$run/completions.csv ;; esac
done
ls $dst
