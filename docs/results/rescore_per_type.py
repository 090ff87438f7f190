"""The committed evidence re-scored under the per-type label (issue 28): every type's slope within
[0.5, 2] of the truth and its baseline within 10 %, each type on its own, instead of the average slope
ratio across types.

The committed CSVs predate the new metrics (the slope at the zero of each type's median curve, and that
zero). They carry each type's line-fit slope ratio (MLP_node_slope_ratio_t, the mean over the type's
metabolites of their line fits over their own ranges) and its implied baseline (MLP_node_baseline_t);
this script uses those as stand-ins. For the linear head, whose h is a line per metabolite, the line-fit
slope is the slope at any point; the stand-in differs from the new metric only where a type's members
differ (mean against median) or h is curved (the free MLP_node). Every committed network has the default
baselines 4, 6 (and 8 for a third type), as their configs under docs/results show.

    python docs/results/rescore_per_type.py   # writes docs/results/rescore_per_type.csv, prints a table
"""

import math
from pathlib import Path

import pandas as pd

from metabo_tune.labels import Thresholds, classify

HERE = Path(__file__).resolve().parent
NEEDED = ("classification", "rate_constants_R2", "embedding_cluster_acc", "MLP_node_slope_ratio_0",
          "MLP_node_baseline_0")
OUT = HERE / "rescore_per_type.csv"


def true_baseline(t: int) -> float:
    return 4.0 + 2.0 * t


def old_label(row: pd.Series, ratios: list[float], th: Thresholds) -> str:
    """The label before issue 28: the average slope ratio across types decided the homeostasis."""
    status = row.get("status", "completed")
    if status in ("diverged", "error"):
        return "failed"
    r2, acc = float(row["rate_constants_R2"]), float(row["embedding_cluster_acc"])
    ratio = float(row["avg_slope_ratio"]) if "avg_slope_ratio" in row else sum(ratios) / len(ratios)
    if not (r2 >= th.failed_r2 and ratio >= th.failed_slope_ratio):
        return "failed"
    slopes_ok = th.slope_ratio_min <= ratio <= th.slope_ratio_max
    if r2 > th.converged_r2 and slopes_ok and acc >= th.converged_cluster_acc:
        return "converged"
    return "partial-k" if r2 > th.converged_r2 else "partial-homeo" if slopes_ok else "partial"


def rescore(path: Path, th: Thresholds) -> pd.DataFrame:
    table = pd.read_csv(path)
    types = sorted(int(c.rsplit("_", 1)[1]) for c in table.columns if c.startswith("MLP_node_slope_ratio_"))
    rows = []
    for index, row in table.iterrows():
        present = [t for t in types if math.isfinite(float(row[f"MLP_node_slope_ratio_{t}"]))]
        ratios = [float(row[f"MLP_node_slope_ratio_{t}"]) for t in present]
        errors = [abs(float(row[f"MLP_node_baseline_{t}"]) - true_baseline(t)) / true_baseline(t) for t in present]
        metrics = {"rate_constants_R2": float(row["rate_constants_R2"]),
                   "embedding_cluster_acc": float(row["embedding_cluster_acc"]),
                   "avg_slope_ratio": float(row["avg_slope_ratio"]) if "avg_slope_ratio" in row
                   else sum(ratios) / len(ratios)}
        metrics |= {f"MLP_node_slope_at_zero_ratio_{t}": r for t, r in zip(present, ratios, strict=True)}
        metrics |= {f"MLP_node_zero_rel_err_{t}": e for t, e in zip(present, errors, strict=True)}
        rows.append({"file": str(path.relative_to(HERE)), "row": index,
                     "run": " ".join(str(row[c]) for c in table.columns[:2]),
                     "stored": row["classification"], "old_rule": old_label(row, ratios, th),
                     "new": classify(metrics, row.get("status", "completed"), th),
                     "min_slope_ratio": min(ratios), "max_slope_ratio": max(ratios),
                     "max_baseline_rel_err": max(errors)})
    return pd.DataFrame(rows)


def main() -> None:
    th = Thresholds()
    usable, lacking = [], []
    for path in sorted(HERE.rglob("*.csv")):
        if path == OUT:
            continue
        columns = pd.read_csv(path, nrows=0).columns
        (usable if all(c in columns for c in NEEDED) else lacking).append(path)
    scored = pd.concat([rescore(path, th) for path in usable], ignore_index=True)
    scored.to_csv(OUT, index=False)
    mismatch = scored[scored["stored"] != scored["old_rule"]]
    print(f"{len(scored)} rows in {len(usable)} files; the old rule reproduces {len(scored) - len(mismatch)} "
          f"stored labels")
    for _, row in mismatch.iterrows():
        print(f"  stored {row['stored']} but the old rule gives {row['old_rule']}: {row['file']} {row['run']}")
    print("\n| file | rows | converged before → after | changed rows (run: before → after, why) |")
    print("|---|---|---|---|")
    for name, group in scored.groupby("file", sort=False):
        changed = group[group["stored"] != group["new"]]
        why = "; ".join(f"{r['run']}: {r['stored']} → {r['new']} (slopes {r['min_slope_ratio']:.2f}–"
                        f"{r['max_slope_ratio']:.2f}, baseline error {r['max_baseline_rel_err']:.0%})"
                        for _, r in changed.iterrows())
        print(f"| {name} | {len(group)} | {(group['stored'] == 'converged').sum()} → "
              f"{(group['new'] == 'converged').sum()} | {why or 'none'} |")
    print("\nwithout per-type slope and baseline columns:", ", ".join(str(p.relative_to(HERE)) for p in lacking))


if __name__ == "__main__":
    main()
