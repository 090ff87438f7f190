"""Every run of one or more sweeps as one CSV row: the run's metrics.json and the data's settings from its
config.yaml (network, training seed, noise, kinetics, homeostasis form). The evidence files of the free-form
evaluation (docs/results/free_forms_evaluation/*_gnn.csv, *_regression.csv) are made this way from the sweeps that
docs/results/free_forms_evaluation/run.sh writes.

    python docs/results/collect_runs.py OUT.csv "LABEL=SWEEP_DIR" ["LABEL=SWEEP_DIR" ...]
"""

import json
import sys
from pathlib import Path

import pandas as pd
import yaml


def rows_of(label: str, sweep: Path) -> list[dict]:
    rows = []
    for metrics in sorted(sweep.glob("runs/*/metrics.json")):
        config = yaml.safe_load((metrics.parent / "config.yaml").read_text())
        simulation, training = config["simulation"], config["training"]
        rows.append({"run": f"{label} {metrics.parent.name}", "network": simulation["seed"],
                     "training_seed": training["seed"],
                     "measurement_noise_level": training.get("measurement_noise_level"),
                     "substrate_kinetics": simulation.get("substrate_kinetics"),
                     "michaelis_K": simulation.get("michaelis_K"),
                     "homeostasis_form": simulation.get("homeostasis_form"),
                     "homeostasis_width": simulation.get("homeostasis_width")} | json.loads(metrics.read_text()))
    return rows


def main() -> None:
    if len(sys.argv) < 3 or any("=" not in spec for spec in sys.argv[2:]):
        raise SystemExit(__doc__)
    rows = [row for spec in sys.argv[2:] for row in rows_of(*_label_and_dir(spec))]
    pd.DataFrame(rows).to_csv(sys.argv[1], index=False)
    print(f"{len(rows)} rows -> {sys.argv[1]}")


def _label_and_dir(spec: str) -> tuple[str, Path]:
    label, sweep = spec.split("=", 1)
    if not (Path(sweep) / "runs").is_dir():
        raise SystemExit(f"error: {sweep} has no runs/ directory: not a sweep's output")
    return label, Path(sweep)


if __name__ == "__main__":
    main()
