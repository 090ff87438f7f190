"""The group solve on the inputs docs/results/group_solve_inputs.py saved, scored against the truth: the solve as
it is, optionally an earlier version of the module beside it, and the misfit ratio of every merge of two of the
groups the moves leave (each merge refined by moves). A development diagnostic: it reads the truth for its scores,
as metrics do; the solve never does.

    git show 1ddabd0:metabo_tune/group_solve.py > /tmp/group_solve_before.py   # optional: the solve before merges
    python docs/results/group_solve_compare.py RUN_DIR [RUN_DIR ...] [--before /tmp/group_solve_before.py]
"""

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from metabo_tune.config import load_config
from metabo_tune.group_solve import GroupSolve
from metabo_tune.metrics import matched_accuracy
from metabo_tune.simulate import load_or_simulate
from metabo_tune.train import GROUP_SOLVE_MIN_GAIN

MAX_MOVES = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--before", type=Path, help="an earlier group_solve.py to run beside the current one")
    args = parser.parse_args()
    solves = {"now": GroupSolve}
    if args.before is not None:
        spec = importlib.util.spec_from_file_location("group_solve_before", args.before)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        solves["before"] = module.GroupSolve
    for run in args.runs:
        types = load_or_simulate(load_config(run / "config.yaml").simulation).truth.types
        saved = np.load(run / "solve_inputs.npz")
        data = tuple(saved[key] for key in ("rates_per_k", "stoichiometry", "conc", "target"))
        groups, run_k = saved["groups"], saved["run_k"]
        print(f"{run.name}: start groups {np.bincount(groups)}, types {matched_accuracy(groups, types):.3f}")
        with threadpool_limits(limits=1):
            for name, solve in solves.items():
                started = time.perf_counter()
                solution = solve(*data, groups).solve(MAX_MOVES, run_k, min_split_gain=GROUP_SOLVE_MIN_GAIN)
                print(f"  {name}: {time.perf_counter() - started:.1f} s, moves {solution.moves}, merges "
                      f"{getattr(solution, 'merges', '-')}, splits {solution.splits}, groups "
                      f"{np.bincount(solution.groups)}, misfit {solution.misfit_rms:.3g} (start "
                      f"{solution.start_misfit_rms:.3g}), types {matched_accuracy(solution.groups, types):.3f}")
            moved = GroupSolve(*data, groups).solve(MAX_MOVES, run_k)
            for a in range(len(moved.knots)):
                for b in range(a + 1, len(moved.knots)):
                    merged = np.unique(np.where(moved.groups == b, a, moved.groups), return_inverse=True)[1].ravel()
                    refined = GroupSolve(*data, merged).solve(MAX_MOVES, run_k)
                    print(f"  merge {a}+{b}: misfit ×{refined.misfit_rms / moved.misfit_rms:.3f}, types "
                          f"{matched_accuracy(refined.groups, types):.3f}")


if __name__ == "__main__":
    main()
