"""The known-form regression's speed, one thread: the whole fit (design, normal equations, solve, types) on the
mission network, and how building the design grows with frames and with the network.

    python benchmarks/bench_regress.py [--repeats 5] [--networks random,iJO1366]

Figures are the median (min–max) over --repeats of wall-clock seconds on an already simulated dataset (the
simulation is not timed). Building the design (`weak_form_rows`: the monomials and their window means) should
grow linearly with frames × substrate edges; the Gram matrix and the solve grow with reactions² and
reactions³, and are timed apart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np

from metabo_tune.cli import ArgumentParser
from metabo_tune.config import load_config
from metabo_tune.regress import (
    NoiseMoments,
    fit_known_forms,
    normal_equations,
    solve_rate_constants,
    weak_form_rows,
)
from metabo_tune.simulate import Observed, Trajectory, load_or_simulate

MISSION = "configs/joint_recovery.yaml"


def timed(function, repeats: int) -> str:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return f"{statistics.median(times):.3f} s ({min(times):.3f}–{max(times):.3f})"


def parts(observed: Observed, window: int, repeats: int) -> dict[str, str]:
    network, trajectory = observed.network, observed.trajectory
    rows = weak_form_rows(trajectory, network, window)
    equations = normal_equations(*rows, network.stoichiometry, NoiseMoments())
    return {"design": timed(lambda: weak_form_rows(trajectory, network, window), repeats),
            "normal equations": timed(lambda: normal_equations(*rows, network.stoichiometry, NoiseMoments()),
                                      repeats),
            "solve": timed(lambda: solve_rate_constants(equations), repeats)}


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--networks", default="random", help="'random' (sizes below) and/or cobra model names")
    args = parser.parse_args(argv)
    print("mission network (100 × 256, 2 881 frames), the whole fit with window and types 'auto':")
    for level in (0.0, 0.01, 0.05):
        observed = load_or_simulate(load_config(MISSION).simulation, measurement_noise_level=level).observed
        print(f"  σ_m {level:g}: {timed(lambda observed=observed: fit_known_forms(observed), args.repeats)}")
    dataset = load_or_simulate(load_config(MISSION).simulation, measurement_noise_level=0.01)
    print("design against frames (mission network, W = 10):")
    for frames in (720, 1440, 2881, 5762):
        traj = dataset.observed.trajectory
        conc = np.concatenate([traj.concentrations] * 2)[:frames]  # 5 762 frames: the trajectory twice
        observed = Observed(dataset.observed.network, Trajectory(conc, np.zeros_like(conc), traj.delta_t))
        print(f"  {frames} frames: " + ", ".join(f"{k} {v}" for k, v in parts(observed, 10, args.repeats).items()))
    print("against the network (2 881 frames, W = 10):")
    for name in args.networks.split(","):
        sizes = [(100, 256), (400, 1024), (1000, 2600)] if name == "random" else [None]
        for size in sizes:
            overrides = ([f"simulation.n_metabolites={size[0]}", f"simulation.n_reactions={size[1]}"] if size
                         else [f"simulation.network={name}"])
            config = MISSION if size else "configs/e_coli_core.yaml"
            data = load_or_simulate(load_config(config, overrides).simulation)
            network = data.observed.network
            label = f"{name} {network.n_metabolites} × {network.n_reactions} ({len(network.substrate_reaction)} edges)"
            figures = parts(data.observed, 10, max(1, args.repeats // (1 if size is None or size[1] <= 1024 else 5)))
            print(f"  {label}: " + ", ".join(f"{k} {v}" for k, v in figures.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
