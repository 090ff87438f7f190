"""Does reading the weak form's excess with the floor's resolution change the group solve's decisions where it
worked? A diagnostic on finished runs (it reads the truth, as metrics do): the trainer's own group solve
(Trainer.finish_with_group_solve) on each run's last checkpoint, once as today (the excess √(max(RMS² − floor², 0)
+ resolution²)) and once with the resolution set to 0 (as before af818a1), and the groups' accuracy against the
types before and after each. A run whose solve was applied in training holds the solve's k and groups at its
checkpoint, so for it this asks whether the solve would now leave them be. Writes the CSV named first. Runs as a
script (it imports type_slope_probe.py beside it).

    python docs/results/noisy_solve_evaluation/resolution_probe.py OUT.csv RUN_DIR [RUN_DIR ...]
"""

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits
from type_slope_probe import finished_run  # beside this script

from metabo_tune.group_solve import GroupSolution, GroupSolve
from metabo_tune.metrics import matched_accuracy

WITH_RESOLUTION = GroupSolve._noise_floor


def without_resolution(solve: GroupSolve, solution: GroupSolution) -> tuple[float, float]:
    return WITH_RESOLUTION(solve, solution)[0], 0.0


def probe(run: Path) -> list[dict]:
    rows = []
    for variant, floor in (("resolution", WITH_RESOLUTION), ("none", without_resolution)):
        GroupSolve._noise_floor = floor
        _, dataset, trainer = finished_run(run)
        before = matched_accuracy(trainer.type_groups.labels, dataset.truth.types)
        started = time.perf_counter()
        trainer.finish_with_group_solve()
        report = {key.removeprefix("group_solve_"): value for key, value in trainer.group_solve_report.items()}
        rows.append({"run": run.name, "variant": variant, "types_before": before,
                     "types_after": matched_accuracy(trainer.type_groups.labels, dataset.truth.types),
                     "groups_after": len(np.unique(trainer.type_groups.labels)),
                     **report, "seconds": time.perf_counter() - started})
        print(rows[-1], flush=True)
    GroupSolve._noise_floor = WITH_RESOLUTION
    return rows


def main() -> None:
    torch.set_num_threads(1)
    threadpool_limits(limits=1)
    out, runs = Path(sys.argv[1]), [Path(run) for run in sys.argv[2:]]
    pd.DataFrame([row for run in runs for row in probe(run)]).to_csv(out, index=False, float_format="%.6g")


if __name__ == "__main__":
    main()
