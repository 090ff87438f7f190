"""The command line the per-run diagnostics here share: RUN_DIR ... [--csv OUT.csv], one table over every run."""

import argparse
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch


def main_over_runs(doc: str, diagnose: Callable[[Path], pd.DataFrame]) -> None:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = pd.concat([diagnose(run) for run in args.runs], ignore_index=True)
    if args.csv:
        table.to_csv(args.csv, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
