"""Train one config as `python -m metabo_tune.train` does, and save the group solve's inputs (the learned rate law's
rates at k = 1, S, c and dc/dt on the solve's frames, the grouping's groups and the run's k) to
OUT/solve_inputs.npz just before the solve runs, so the solve can be studied on them afterwards
(docs/results/group_solve_compare.py). A development diagnostic: nothing of the truth is read here.

    python docs/results/group_solve_inputs.py CONFIG [--set ...] --out OUT
"""

import sys
from pathlib import Path

import numpy as np
import torch

from metabo_tune import train


def main() -> int:
    out = Path(sys.argv[sys.argv.index("--out") + 1])
    solve = train.Trainer.finish_with_group_solve

    def saving_inputs(trainer: train.Trainer) -> None:
        stride = train.GROUP_SOLVE_FRAME_STRIDE
        conc = trainer.conc[::stride]
        with torch.no_grad():
            rates_per_k = trainer.model.rates(conc) / torch.pow(10.0, trainer.model.log_k)
            run_k = torch.pow(10.0, trainer.model.log_k.double())
        np.savez(out / "solve_inputs.npz", rates_per_k=rates_per_k.double().cpu().numpy(),
                 stoichiometry=trainer.stoichiometry.astype(np.float64), conc=conc.double().cpu().numpy(),
                 target=trainer.deriv[::stride].double().cpu().numpy(), groups=trainer.type_groups.labels,
                 run_k=run_k.cpu().numpy())
        solve(trainer)

    train.Trainer.finish_with_group_solve = saving_inputs
    return train.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
