"""Screen against full-budget outcome of every promoted node in the free-form benchmarks' logs on development
networks (9001: bench_free_forms, 9201, 9202), split by whether the node's config has the type grouping and the group
solve. Writes one row per (run, node, seed) that has both a screen and a full trial.

    python docs/results/bench_free_forms/screen_vs_full.py docs/results/bench_free_forms/screen_vs_full.csv
"""

import json
import sys
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).resolve().parents[1]
DEVELOPMENT = {"bench_free_forms": 9001, "bench_free_forms_9201": 9201, "bench_free_forms_9202": 9202}
KEYS = ["network", "run", "node_id", "seed"]


def logs() -> pd.DataFrame:
    tables = []
    for folder, network in DEVELOPMENT.items():
        for path in sorted((RESULTS / folder).glob("*completions*.csv")):
            log = pd.read_csv(path, dtype={"node_id": str, "trial_id": str})
            values = [json.loads(text) for text in log["values"]]
            log["network"], log["run"] = network, path.stem
            log["grouping"] = [v.get("training.type_grouping_at") is not None for v in values]
            log["group_solve"] = [v.get("training.group_solve_moves") is not None for v in values]
            tables.append(log)
    return pd.concat(tables, ignore_index=True)


def main() -> None:
    log = logs()
    columns = [*KEYS, "grouping", "group_solve", "reward", "classification"]
    screens = log.loc[log["fidelity"] == "screen", columns]
    fulls = log.loc[log["fidelity"] == "full", [*KEYS, "reward", "classification"]]
    pairs = screens.merge(fulls, on=KEYS, suffixes=("_screen", "_full"), validate="one_to_one")
    pairs.to_csv(sys.argv[1], index=False)
    summary = pairs.groupby(["grouping", "group_solve"]).agg(
        pairs=("reward_full", "size"),
        converged_at_screen=("classification_screen", lambda c: int((c == "converged").sum())),
        converged_at_full=("classification_full", lambda c: int((c == "converged").sum())))
    late = pairs[(pairs["classification_full"] == "converged") & (pairs["classification_screen"] != "converged")]
    print(summary.to_string())
    print(f"converged at full budget but not at screen: {len(late)}; their screen rewards "
          f"{late['reward_screen'].min():.3f}–{late['reward_screen'].max():.3f}")


if __name__ == "__main__":
    main()
