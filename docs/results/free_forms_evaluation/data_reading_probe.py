"""How the reading of noisy data near zero decides a finished run's group solve (a diagnostic: it reads the truth,
as metrics do). Measurements are clipped at zero (max(c + ε, 0)), which biases a metabolite that lives near zero
upward, and with it the rates of the reactions it feeds. For each finished run and each reading (as measured; read
back by the local censored estimate, `decensor_zeros: auto`; entries within 3σ̂ of zero left out, `zero_margin:
auto`), the solve is run from the run's final groups with the trained state held: the types it ends with, the
metabolites it leaves off their type, its moves and misfit.

    python docs/results/free_forms_evaluation/data_reading_probe.py OUT.csv RUN_DIR [RUN_DIR ...]
"""

from pathlib import Path

from misplaced_free_probe import finished_run, type_of_group, write_table

from metabo_tune.metrics import matched_accuracy
from metabo_tune.train import GROUP_SOLVE_MIN_GAIN

READINGS = {"as measured": ["training.decensor_zeros=false", "training.zero_margin=null"],
            "decensored": ["training.decensor_zeros=auto", "training.zero_margin=null"],
            "zero margin": ["training.decensor_zeros=false", "training.zero_margin=auto"]}


def probe(run: Path) -> list[dict]:
    rows = []
    for reading, overrides in READINGS.items():
        cfg, dataset, trainer = finished_run(run, overrides)
        truth = dataset.truth
        solve, run_k = trainer.group_solve_from_own_groups()
        again = solve.solve(cfg.training.group_solve_moves, run_k, min_split_gain=GROUP_SOLVE_MIN_GAIN)
        majority = type_of_group(again.groups, truth.types)
        off = [i for i, g in enumerate(again.groups) if majority[g] != truth.types[i]]
        rows.append({"run": f"{run.parent.parent.name}/{run.name}", "reading": reading,
                     "entries_solved": float(solve.weight.mean()),
                     "run_types": matched_accuracy(trainer.type_groups.labels, truth.types),
                     "solved_types": matched_accuracy(again.groups, truth.types),
                     "off_type": " ".join(map(str, off)), "moves": again.moves, "splits": again.splits,
                     "misfit_rms": again.misfit_rms, "noise_rms": again.noise_rms})
        print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    write_table(probe)
