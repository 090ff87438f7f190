"""Full-budget trials of the free-form benchmarks by which of their switches they had on: the residual fit
(coeff_residual_fit > 0), the type grouping (type_grouping_at set), the group solve (group_solve_moves set, in effect
with the grouping only) and the restoring prior (coeff_MLP_node_restoring > 0). Reads every `*_completions.csv` and
`*_completions_partial.csv` (runs still going) under docs/results/bench_free_forms*/ (network 9001, and the
benchmarks on 9201 and 9202), writes switch_table.csv beside it.

    python docs/results/bench_free_forms/switch_table.py
"""

import json
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
SWITCHES = ["residual_fit", "grouping", "group_solve", "restoring"]


def switches(values: str) -> pd.Series:
    config = json.loads(values)
    grouping = config.get("training.type_grouping_at") is not None
    return pd.Series({"residual_fit": config["training.coeff_residual_fit"] > 0, "grouping": grouping,
                      "group_solve": grouping and config.get("training.group_solve_moves") is not None,
                      "restoring": config["training.coeff_MLP_node_restoring"] > 0})


def main() -> None:
    runs = []
    for path in sorted(HERE.parent.glob("bench_free_forms*/*_completions*.csv")):
        trials = pd.read_csv(path)
        trials = trials[trials["fidelity"] == "full"]
        run = path.name.removesuffix(".csv").replace("_completions", "")
        runs.append(pd.concat([trials[["classification"]], trials["values"].apply(switches)], axis=1)
                    .assign(benchmark=path.parent.name, run=run))
    table = (pd.concat(runs).groupby(["benchmark", "run", *SWITCHES, "classification"])
             .size().unstack("classification", fill_value=0).reset_index())
    table.to_csv(HERE / "switch_table.csv", index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
