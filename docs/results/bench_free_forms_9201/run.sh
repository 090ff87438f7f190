#!/usr/bin/env bash
# The free-form benchmark on fresh network 9201 (docs/results.md, "The benchmark on fresh network 9201"), resumable:
# every method runs its three repetitions from a worktree at 5b8e978 (the tree's rules as the benchmark started
# them; trial code as main's), the tree first, then random search, then TPE. Confirmations come after all nine
# runs (--confirm-seeds 2). On a checkout without results/, run restore.sh first. Logs: results/bench_9201_<method>.*
set -u
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
main=$PWD
tree=/tmp/wt_b9201t
[ -d $tree ] || git worktree add -f $tree 5b8e978
python=${PYTHON:-$main/.venv/bin/python}
for method in tree random tpe; do
  (cd $tree && OPENBLAS_NUM_THREADS=1 RAY_AUTH_MODE=disabled PYTHONPATH=$tree nice -n 15 $python \
     benchmarks/bench_search.py --space search_spaces/free_forms.yaml --network 9201 --num-trials 96 --budget 20 \
     --concurrency 2 --cpus 2 --reps 3 --methods $method --confirm-networks 9101,9102 --confirm-seeds 0 \
     --out $main/results/bench_free_forms_9201 --resume \
     >> $main/results/bench_9201_$method.out 2>> $main/results/bench_9201_$method.log)
done
