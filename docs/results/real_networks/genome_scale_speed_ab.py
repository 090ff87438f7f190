"""CPU ms per iteration of configs/e_coli_core.yaml in both phases, and one residual refresh, on iJO1366 or the
mission-sized random network, with whichever metabo_tune is first on PYTHONPATH: run it from two worktrees one after
the other, on the same machine, to compare two commits (genome_scale_speed_ab.csv: 26b8808 against 343e9c0, the
machine running the search benchmark beside it, so both saw the same load). One JSON line per run.

    for tree in /tmp/wt_before /work/main; do
        PYTHONPATH=$tree OMP_NUM_THREADS=1 python genome_scale_speed_ab.py ijo; done
"""

import json
import statistics
import sys
import time
from pathlib import Path

import torch

from metabo_tune.config import load_config
from metabo_tune.simulate import load_or_simulate
from metabo_tune.train import Trainer

NETWORKS = {"ijo": ["simulation.network=iJO1366"],
            "random_100": ["simulation.network=random", "simulation.n_metabolites=100", "simulation.n_reactions=256"]}
CONFIG = Path(__file__).parents[3] / "configs" / "e_coli_core.yaml"


def main() -> None:
    torch.set_num_threads(1)
    cfg = load_config(CONFIG, NETWORKS[sys.argv[1]])
    trainer = Trainer(cfg, load_or_simulate(cfg.simulation).observed, device="cpu")
    out = {"network": sys.argv[1]}
    for phase in ("conservation", "residual"):
        if phase == "residual":
            trainer.iteration = trainer.homeostasis_losses.residual_start
        trainer.run(until=trainer.iteration + 10)
        cpu = []
        for _ in range(3):
            start = time.thread_time()
            trainer.run(until=trainer.iteration + 50)
            cpu.append((time.thread_time() - start) / 50 * 1e3)
        out[f"{phase}_cpu_ms_per_it"] = statistics.median(cpu)
    start = time.thread_time()
    trainer.homeostasis_losses.residual_moments()
    out["refresh_cpu_s"] = time.thread_time() - start
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
