"""Whole-trial cost of the free forms against today's known-form configuration, on the same data: each network's
`python -m metabo_tune.train` of configs/joint_recovery.yaml and of configs/free_forms.yaml, one after the other,
their CPU seconds (user + sys of the child, as /usr/bin/time reports them) and wall seconds, the group solve's part
and the metrics; then the known-form regression on the same data. Resumable: rows already in OUT.csv are kept and
not run again. Extra `--set`s apply to every run (the data's forms, noise, trajectories).

    python docs/results/free_forms_cost_whole.py OUT.csv --networks 8953,8954,8955 --runs-dir results/cost_whole \
        [--set simulation.substrate_kinetics=michaelis_menten ...]
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

CONFIGS = ("configs/joint_recovery.yaml", "configs/free_forms.yaml")
METRICS = ("classification", "rate_constants_R2_gauge", "MLP_sub_shape_R2_s1", "MLP_node_R2_0", "MLP_node_R2_1",
           "embedding_cluster_acc", "group_solve_applied", "group_solve_groups_taken", "group_solve_merges",
           "group_solve_time_s")


def timed(command: list[str]) -> tuple[float, float, float]:
    """(user, sys, wall) seconds of one child process."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime, time.perf_counter() - start


def run(network: int, method: str, config: str, sets: list[str], runs_dir: Path) -> dict:
    out = runs_dir / f"{method}_{Path(config).stem}_{network}"
    overrides = [arg for item in [f"simulation.seed={network}", *sets] for arg in ("--set", item)]
    module = "metabo_tune.train" if method == "gnn" else "metabo_tune.regress"
    quiet = ["--quiet"] if method == "gnn" else []
    user, system, wall = timed([sys.executable, "-m", module, config, *overrides, "--out", str(out), *quiet])
    metrics = json.loads((out / "metrics.json").read_text())
    return {"network": network, "method": method, "config": config, "cpu_user_s": user, "cpu_sys_s": system,
            "wall_s": wall, **{key: metrics.get(key) for key in METRICS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--networks", required=True, help="comma-separated simulation seeds")
    parser.add_argument("--runs-dir", type=Path, default=Path("results/cost_whole"))
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    rows = pd.read_csv(args.out).to_dict("records") if args.out.exists() else []
    done = {(row["network"], row["method"], row["config"]) for row in rows}
    plan = [(int(n), "gnn", config) for n in args.networks.split(",") for config in CONFIGS]
    plan += [(int(n), "regression", CONFIGS[1]) for n in args.networks.split(",")]
    for network, method, config in plan:
        if (network, method, config) in done:
            continue
        rows.append(run(network, method, config, args.sets, args.runs_dir))
        pd.DataFrame(rows).to_csv(args.out, index=False)
        print(f"[cost] {network} {method} {config}: {rows[-1]['cpu_user_s'] + rows[-1]['cpu_sys_s']:.0f} s CPU",
              flush=True)


if __name__ == "__main__":
    main()
