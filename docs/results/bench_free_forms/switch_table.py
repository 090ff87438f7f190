"""Full-budget trials of the free-form benchmark by which of its three switches they had on: the residual fit
(coeff_residual_fit > 0), the type grouping (type_grouping_at set) and the group solve (group_solve_moves set,
in effect with the grouping only). Reads every `*_completions.csv` beside it and under `partial/` (runs still going),
writes switch_table.csv.

    python docs/results/bench_free_forms/switch_table.py
"""

import json
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent


def switches(values: str) -> pd.Series:
    config = json.loads(values)
    grouping = config.get("training.type_grouping_at") is not None
    return pd.Series({"residual_fit": config["training.coeff_residual_fit"] > 0, "grouping": grouping,
                      "group_solve": grouping and config.get("training.group_solve_moves") is not None})


def main() -> None:
    runs = []
    for path in sorted(HERE.glob("**/*_completions.csv")):
        trials = pd.read_csv(path)
        trials = trials[trials["fidelity"] == "full"]
        runs.append(pd.concat([trials[["classification"]], trials["values"].apply(switches)], axis=1)
                    .assign(run=str(path.relative_to(HERE)).removesuffix("_completions.csv")))
    table = (pd.concat(runs).groupby(["run", "residual_fit", "grouping", "group_solve", "classification"])
             .size().unstack("classification", fill_value=0).reset_index())
    table.to_csv(HERE / "switch_table.csv", index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
