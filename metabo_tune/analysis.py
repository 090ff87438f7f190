"""Tables and figures from an experiment directory: `load` reads `trials.csv` (with `tree.jsonl` when present)
into one typed DataFrame, the views (`leaderboard`, `counts`, `best_so_far`, `parameter_effects`, `compare`)
summarise it, and `python -m metabo_tune.analysis results/<experiment>` prints them and writes a report:

    python -m metabo_tune.analysis results/<experiment> [--format csv|parquet|json] [--out DIR]

Only files are read (no Ray, no torch), so this works on a running experiment and on one copied off a cluster.

Fidelity: in an experiment that screened (a space with a fidelity section), rewards are compared only within
one fidelity. The leaderboard ranks full-budget results first, then the nodes that were only screened; the
parameter effects use each node's search (screen) reward, as the searcher's memory does; best-so-far runs per
fidelity; and "converged" counts only full-budget trials. The `fidelity` column then shows in the tables.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
import textwrap
from collections.abc import Sequence
from os import PathLike, path
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from metabo_tune.cli import ArgumentParser
from metabo_tune.labels import LABELS, Thresholds
from metabo_tune.tree import (
    FIDELITIES,
    FULL,
    PROMOTION,
    REPLICATE,
    SCREEN,
    direction,
    later_trial_mutation,
    trial_origin,
)

REQUIRED_COLUMNS = ("trial_id", "node_id", "parent_id", "mutation", "seed", "status", "reward")
TREE_KEYS = ("node_id", "parent_id", "config", "mutation", "strategy", "index", "trials")
SECTIONS = ("simulation", "graph_model", "training")
STRING_COLUMNS = ("trial_id", "node_id", "parent_id", "mutation", "trial_dir", "ray_trial_dir")
CATEGORIES: dict[str, tuple[str, ...]] = {
    "strategy": (),
    "status": ("completed", "diverged", "error", "running"),
    "classification": LABELS,
    "diagnosis": ("healthy", "degenerate", "severely degenerate", "failed", "mixed", "unknown"),
    "homeostasis_assessment": ("correct", "partial", "wrong", "inactive", "unknown"),
    "fidelity": FIDELITIES,
}
# Mutation texts of a node's later trials: the searcher's replicates and promotions.
LATER_TRIALS = tuple(later_trial_mutation(strategy, "") for strategy in (REPLICATE, PROMOTION))
# Integer metrics that a missing value would otherwise turn into floats.
_COUNT_NAME = re.compile(r"(^|_)n_|^(iteration|total_iterations|resumed_from|test_rollout_diverged_at)$")
_INTEGER_TEXT = re.compile(r"-?\d+")
KEY_METRICS = ("rate_constants_R2", "avg_slope_ratio", "embedding_cluster_acc", "test_pearson")
TRIAL_PLOTS = ("rate_constants.png", "mlp_sub.png", "mlp_node.png", "mlp_sub_forms.png", "mlp_node_forms.png",
               "embeddings.png", "loss.png")
FIGURES = {"reward.png": "reward per trial", "tree.png": "exploration tree", "effects.png": "parameter effects",
           "recovery.png": "rate-constant R² against slope ratio"}
COLOURS = {"converged": "#2ca02c", "partial-k": "#1f77b4", "partial-homeo": "#ff7f0e", "partial": "#9467bd",
           "failed": "#d62728", "unknown": "#7f7f7f"}
EXPORT_FORMATS = ("csv", "parquet", "json")
NOTHING_FINISHED = "No trial has finished yet."
NO_PAIRS = "No parent–child pair has finished yet."


class AnalysisError(Exception):
    """The experiment cannot be read (missing, not an experiment, nothing to show, unreadable table)."""


# ------------------------------------------------------------------------------------------ loading


def load(experiment_dir: str | PathLike[str]) -> pd.DataFrame:
    """One typed row per trial of trials.csv, in completion order (`trial_number` 1, 2, ...), then the trials
    that tree.jsonl lists as running (status 'running', no `trial_number`). `index` is the node's creation
    order from tree.jsonl (without it, the order in which nodes first appear in trials.csv). `trial_dir` and
    `ray_trial_dir` are resolved against `experiment_dir`. `fidelity` is 'full' where the table has none (an
    experiment from before fidelities)."""
    directory = Path(experiment_dir).resolve()
    if not directory.is_dir():
        what = "a file, not an experiment directory" if directory.exists() else "no such directory"
        raise AnalysisError(f"{experiment_dir}: {what}")
    table = directory / "trials.csv"
    if not table.is_file():
        if any(directory.glob("experiment_state-*.json")):  # Ray's: a search that has just started
            raise AnalysisError(f"{experiment_dir}: no trial has finished yet (no trials.csv)")
        raise AnalysisError(f"{experiment_dir}: not an experiment directory (no trials.csv)")
    finished = _read_trials(table)
    nodes = _read_tree(directory / "tree.jsonl")
    done_ids = set(finished["trial_id"])
    running = [row for row in _running_rows(nodes) if row["trial_id"] not in done_ids]
    if finished.empty and not running:
        raise AnalysisError(f"{table}: no trial has finished yet (the table has no rows)")
    rows = finished.to_dict("records") + running
    columns = dict.fromkeys([*finished.columns, "classification", *(key for row in running for key in row)])
    raw = pd.DataFrame(rows, columns=list(columns), dtype=object)
    try:
        frame = _typed(raw.where(raw.notna() & raw.ne(""), None), _parameter_types(nodes))
    except ValueError as exc:
        raise AnalysisError(f"{table}: not a readable trials table ({exc})") from None
    frame.insert(0, "trial_number", pd.array(list(range(1, len(finished) + 1)) + [None] * len(running),
                                             dtype="Int64"))
    creation = ({node["node_id"]: node["index"] for node in nodes} if nodes
                else {node_id: i for i, node_id in enumerate(dict.fromkeys(frame["node_id"]))})
    frame.insert(1, "index", pd.array(frame["node_id"].map(creation).tolist(), dtype="Int64"))
    if "fidelity" not in frame or frame["fidelity"].isna().any():
        fidelity = (frame["fidelity"].astype(object) if "fidelity" in frame
                    else pd.Series(None, index=frame.index, dtype=object))
        frame["fidelity"] = _categorical(fidelity.fillna(FULL), FIDELITIES, ordered=False)
    for column in ("trial_dir", "ray_trial_dir"):
        if column in frame:
            frame[column] = pd.array([_resolve(directory, value) for value in frame[column]], dtype="string")
    return frame


def _read_trials(table: Path) -> pd.DataFrame:
    """trials.csv as text. The reporter replaces the file atomically, so a read never sees half of it."""
    try:
        raw = pd.read_csv(table, dtype=str, keep_default_na=False, encoding_errors="replace")
    except pd.errors.EmptyDataError:
        raise AnalysisError(f"{table}: empty file (no trial has finished yet)") from None
    except pd.errors.ParserError as exc:
        raise AnalysisError(f"{table}: not a readable trials table ({str(exc).strip()})") from None
    missing = [name for name in REQUIRED_COLUMNS if name not in raw.columns]
    if missing:
        raise AnalysisError(f"{table}: not a trials table (the header lacks {', '.join(missing)})")
    return raw


def _read_tree(tree_file: Path) -> list[dict[str, Any]]:
    """The nodes of tree.jsonl (written atomically by the searcher); none when the file is missing."""
    if not tree_file.is_file():
        return []
    try:
        nodes = [json.loads(line) for line in tree_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnalysisError(f"{tree_file}: not a tree of nodes ({exc})") from None
    if not all(isinstance(node, dict) and all(key in node for key in TREE_KEYS) for node in nodes):
        raise AnalysisError(f"{tree_file}: not a tree of nodes (a line lacks one of {', '.join(TREE_KEYS)})")
    return nodes


def _running_rows(nodes: list[dict[str, Any]]) -> list[dict[str, str | None]]:
    """Rows in trials.csv's text form for the running trials, labelled as the searcher made them."""
    rows = []
    for node in nodes:
        for position, trial in enumerate(node["trials"]):
            if trial.get("status") != "running":
                continue
            strategy, mutation = trial_origin(node, position)
            fidelity = trial.get("fidelity", FULL)
            rows.append({"trial_id": str(trial["trial_id"]), "node_id": str(node["node_id"]),
                         "parent_id": node["parent_id"], "strategy": strategy, "mutation": mutation,
                         "seed": str(trial["seed"]), "fidelity": fidelity, "status": "running",
                         **{name: str(value) for name, value in node["config"].items()}})
    return rows


def _parameter_types(nodes: list[dict[str, Any]]) -> dict[str, type]:
    types: dict[str, type] = {}
    for node in nodes:
        for name, value in node["config"].items():
            types.setdefault(name, type(value))
    return types


def is_parameter(column: str) -> bool:
    """Whether a column holds a tunable value ('section.key')."""
    return column.partition(".")[0] in SECTIONS and "." in column


def _typed(raw: pd.DataFrame, parameter_types: dict[str, type]) -> pd.DataFrame:
    """Convert the text columns (None where empty); parameter types come from tree.jsonl's configs when
    present, else from the text."""
    columns = {}
    for name in raw.columns:
        values = raw[name]
        if name in STRING_COLUMNS:
            columns[name] = values.astype("string")
        elif name in CATEGORIES:
            columns[name] = _categorical(values, CATEGORIES[name], ordered=name == "classification")
        elif name == "seed":
            columns[name] = pd.to_numeric(values).astype("int64")
        elif is_parameter(name):
            columns[name] = _parameter(values, parameter_types.get(name))
        else:
            columns[name] = _metric(name, values)
    return pd.DataFrame(columns)


def _categorical(values: pd.Series, known: tuple[str, ...], ordered: bool) -> pd.Series:
    seen = [value for value in dict.fromkeys(values.dropna()) if value not in known]
    return pd.Series(pd.Categorical(values, categories=[*known, *sorted(seen)], ordered=ordered), index=values.index)


def _parameter(values: pd.Series, kind: type | None) -> pd.Series:
    present = values.dropna()
    if kind is bool or (kind is None and len(present) and present.isin(["True", "False"]).all()):
        flags = values.map({"True": True, "False": False})
        return flags.astype(bool) if flags.notna().all() else flags.astype("boolean")
    numbers = pd.to_numeric(values, errors="coerce")
    if kind is int or (kind is None and len(present) and present.map(_INTEGER_TEXT.fullmatch).notna().all()):
        return numbers.astype("int64") if numbers.notna().all() else numbers.astype("Int64")
    return numbers.astype("float64")


def _metric(name: str, values: pd.Series) -> pd.Series:
    """Numbers as float64 (counts as Int64); a column with any non-numeric text stays text."""
    try:
        numbers = pd.to_numeric(values)
    except (ValueError, TypeError):
        return values.astype("string")
    present = values.dropna()
    if _COUNT_NAME.search(name) or (len(present) and present.map(_INTEGER_TEXT.fullmatch).notna().all()):
        return numbers.astype("Int64")
    return numbers.astype("float64")


def _resolve(directory: Path, value: Any) -> str | None:
    """Relative paths (the reporter's) join the experiment directory; an absolute one from another
    machine falls back to the directory of the same name in the experiment's `trials/` (or top level)."""
    if value is None or pd.isna(value):
        return None
    given = Path(value)
    if not given.is_absolute():
        return str(directory / given)
    if given.exists():
        return str(given)
    moved = [candidate for candidate in (directory / "trials" / given.name, directory / given.name)
             if candidate.exists()]
    return str(moved[0]) if moved else str(given)


# ------------------------------------------------------------------------------------------ views


def _finished(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] != "running"]


def screened(df: pd.DataFrame) -> bool:
    """Whether the experiment has screening trials (its space had a fidelity section)."""
    return "fidelity" in df and bool((df["fidelity"] == SCREEN).any())


def _fidelities(df: pd.DataFrame) -> pd.Series:
    """Each trial's fidelity as text ('full' where the frame has no fidelity column)."""
    return df["fidelity"].astype(str) if "fidelity" in df else pd.Series(FULL, index=df.index)


def parameters(df: pd.DataFrame) -> list[str]:
    """The tunable-value columns, in table order."""
    return [column for column in df.columns if is_parameter(column)]


def nodes(df: pd.DataFrame, fidelity: str | None = None) -> pd.DataFrame:
    """One row per node, in creation order: its own trial's columns (parent, strategy, mutation, config),
    the reward mean, sd and count over its finished replicates at `fidelity` (None: at the node's search
    fidelity, that of its own trial), the key metrics averaged over them, the classification of its last
    finished trial there, and that `fidelity`. Indexed by node_id."""
    own = (df.assign(_later=df["mutation"].fillna("").str.startswith(LATER_TRIALS))
           .sort_values(["_later", "trial_number"], na_position="last", kind="stable")
           .drop_duplicates("node_id").set_index("node_id"))
    own_fidelity = _fidelities(own)
    done = _finished(df)
    wanted = done["node_id"].map(own_fidelity) if fidelity is None else fidelity
    done = done[_fidelities(done) == wanted]
    by_node = done.groupby("node_id", sort=False)
    table = own[["index", "parent_id", "strategy", "mutation", *parameters(df)]].join(
        by_node["reward"].agg(reward_mean="mean", reward_sd="std", n="count"))
    table["n"] = table["n"].fillna(0).astype("int64")
    table["fidelity"] = pd.Categorical(own_fidelity if fidelity is None else [fidelity] * len(table),
                                       categories=FIDELITIES)
    last = done.sort_values("trial_number", kind="stable").groupby("node_id", sort=False)["classification"].last()
    table["classification"] = pd.Categorical(last.reindex(table.index), dtype=df["classification"].dtype)
    metrics = [name for name in KEY_METRICS if name in df]
    table = table.join(by_node[metrics].mean())
    return table.sort_values("index", kind="stable")


def leaderboard(df: pd.DataFrame, top: int | None = 10) -> pd.DataFrame:
    """Nodes by replicate-mean reward, best first (ties: more replicates, then the older node); index: rank.
    Full-budget results rank first, then the nodes that were only screened (by their screen reward), so
    rewards are compared within one fidelity; the `fidelity` column says which, when the experiment screened."""
    full = nodes(df, FULL)
    full = full[full["n"] > 0]
    own = nodes(df)
    parts = [part.sort_values(["reward_mean", "n", "index"], ascending=[False, False, True])
             for part in (full, own[(own["n"] > 0) & ~own.index.isin(full.index)]) if len(part)]
    ranked = pd.concat(parts) if parts else full
    columns = ["reward_mean", "reward_sd", "n", *(["fidelity"] if screened(df) else []), "classification",
               *[name for name in KEY_METRICS if name in ranked], "mutation", "parent_id"]
    board = ranked[columns].reset_index().head(top)
    board.index = pd.RangeIndex(1, len(board) + 1, name="rank")
    return board


def counts(df: pd.DataFrame) -> pd.DataFrame:
    """Finished trials by classification and by diagnosis: index (by, label), columns trials and share; in an
    experiment that screened, per fidelity first: index (fidelity, by, label), shares within the fidelity."""
    done = _finished(df)
    fidelities = _fidelities(done)
    parts = {fidelity: _counts(done[fidelities == fidelity]) for fidelity in FIDELITIES
             if screened(df) and (fidelities == fidelity).any()}
    return pd.concat(parts, names=["fidelity"]) if parts else _counts(done)


def _counts(done: pd.DataFrame) -> pd.DataFrame:
    parts = {}
    for column in ("classification", "diagnosis"):
        if column in done:
            tally = done[column].value_counts(sort=False)
            parts[column] = tally[tally > 0]
    table = pd.concat(parts, names=["by", "label"]).rename("trials").to_frame()
    table["share"] = table["trials"] / len(done)
    return table


def best_so_far(df: pd.DataFrame) -> pd.DataFrame:
    """Per finished trial, in completion order: its reward, the best trial reward so far and the node that
    holds it (the first to reach it), and whether this trial set a new best. In an experiment that screened
    the best is kept per fidelity (a `fidelity` column says which), as rewards compare only within one."""
    done = df[df["trial_number"].notna()].sort_values("trial_number").set_index("trial_number")
    table = done[["trial_id", "node_id", "reward"]].copy()
    split = screened(df)
    groups = _fidelities(done) if split else pd.Series("", index=done.index)
    running_max = table["reward"].fillna(-math.inf).groupby(groups).cummax()
    before = running_max.groupby(groups).shift(fill_value=-math.inf)
    table["best_reward"] = running_max.replace(-math.inf, math.nan)
    table["improved"] = table["reward"] > before
    table["best_node"] = table["node_id"].where(table["improved"]).groupby(groups).ffill()
    table["fidelity"] = _fidelities(done)
    return table[["trial_id", "node_id", *(["fidelity"] if split else []), "reward", "best_reward", "best_node",
                  "improved"]]


def parameter_effects(df: pd.DataFrame) -> pd.DataFrame:
    """Δreward = child − parent (replicate means) per changed parameter and direction (up/down, on/off for
    bools), from the configs of every rewarded child of a rewarded parent; a child that changed two
    parameters counts for each. Columns: parameter, direction, mean_delta, stderr (nan for a single
    pair), count, evidence (the children's node ids). Strongest first."""
    table = nodes(df)
    rewarded = table[table["n"] > 0]
    pairs = []
    for node_id, child in rewarded.iterrows():
        if pd.isna(child["parent_id"]) or child["parent_id"] not in rewarded.index:
            continue
        parent = rewarded.loc[child["parent_id"]]
        for name in parameters(df):
            old, new = parent[name], child[name]
            if pd.isna(old) or pd.isna(new) or old == new:
                continue
            way = ("on" if new else "off") if pd.api.types.is_bool_dtype(df[name]) else direction(old, new)
            pairs.append((name, way, child["reward_mean"] - parent["reward_mean"], str(node_id)))
    effects = (pd.DataFrame(pairs, columns=["parameter", "direction", "delta", "node"])
               .groupby(["parameter", "direction"], sort=False)
               .agg(mean_delta=("delta", "mean"), stderr=("delta", "sem"), count=("delta", "size"),
                    evidence=("node", ", ".join)).reset_index())
    effects = effects.assign(_strength=effects["mean_delta"].abs()).sort_values(
        ["_strength", "parameter", "direction"], ascending=[False, True, True]).drop(columns="_strength")
    return effects.reset_index(drop=True).astype({"count": "int64"})


def summary(df: pd.DataFrame) -> pd.Series:
    """One experiment in a few numbers: trials, nodes, best node, first converged trial, classification counts.
    Only full-budget trials count as converged and in the classification counts; `screen trials` counts the
    finished screening trials."""
    done = _finished(df)
    board = leaderboard(df, top=1)
    full = done[_fidelities(done) == FULL]
    converged = full.loc[full["classification"] == "converged", "trial_number"]
    values: dict[str, Any] = {
        "finished trials": len(done), "running trials": len(df) - len(done),
        "screen trials": len(done) - len(full), "nodes": df["node_id"].nunique(),
        "best node": board["node_id"].iloc[0] if len(board) else None,
        "best reward (replicate mean)": board["reward_mean"].iloc[0] if len(board) else math.nan,
        "best classification": board["classification"].iloc[0] if len(board) else None,
        "trials until the first converged": converged.min() if len(converged) else None,
    }
    by_class = full["classification"].value_counts()
    values |= {f"classification: {label}": int(by_class.get(label, 0)) for label in LABELS}
    return pd.Series(values, dtype=object)


def compare(df_a: pd.DataFrame, df_b: pd.DataFrame, names: Sequence[str] = ("a", "b")) -> pd.DataFrame:
    """Two experiments side by side (one column each): the rows of `summary`; classifications that neither
    experiment has, and screen trials when neither screened, are left out."""
    table = pd.DataFrame({names[0]: summary(df_a), names[1]: summary(df_b)})
    unused = [row for row in table.index if (row.startswith("classification: ") or row == "screen trials")
              and (table.loc[row] == 0).all()]
    table = table.drop(index=unused)
    table.index.name = "measure"
    return table


# ------------------------------------------------------------------------------------------ text


def short(text: Any) -> str:
    """Mutation or parameter text for display: section prefixes dropped, arrows drawn."""
    if text is None or (not isinstance(text, str) and pd.isna(text)):
        return ""
    return re.sub(rf"\b(?:{'|'.join(SECTIONS)})\.", "", str(text)).replace(" -> ", " → ")


def _cell(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, float | np.floating):
        return f"{value:.3f}"
    return str(value)


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """Strings for printing: floats with three decimals, missing values empty, text columns shortened."""
    shown = frame.copy()
    for column in ("mutation", "parameter"):
        if column in shown:
            shown[column] = shown[column].map(short)
    return shown.map(_cell)


def _with_spread(frame: pd.DataFrame, mean: str, spread: str, label: str, position: int,
                 sign: str = "") -> pd.DataFrame:
    """Replace a mean and a spread column by one 'mean ± spread' text column."""
    text = [f"{m:{sign}.3f}" + ("" if pd.isna(s) else f" ± {s:.3f}")
            for m, s in zip(frame[mean], frame[spread], strict=True)]
    shown = frame.drop(columns=[mean, spread])
    shown.insert(position, label, pd.Series(text, index=frame.index, dtype=object))
    return shown


def _board_display(board: pd.DataFrame) -> pd.DataFrame:
    return _with_spread(board, "reward_mean", "reward_sd", "reward", 1)


def _effects_display(effects: pd.DataFrame) -> pd.DataFrame:
    return _with_spread(effects, "mean_delta", "stderr", "Δreward", 2, sign="+")


def _table(frame: pd.DataFrame, tablefmt: str) -> str:
    """The frame with its index (when named) as a tabulate table: numbers right-aligned, text left-aligned."""
    flat = frame.reset_index() if any(name is not None for name in frame.index.names) else frame
    cells = _display(flat)
    if tablefmt == "pipe":
        cells = cells.map(lambda cell: cell.replace("|", "\\|"))
    align = ["right" if pd.api.types.is_numeric_dtype(flat[column]) else "left" for column in flat.columns]
    return cells.to_markdown(index=False, tablefmt=tablefmt, disable_numparse=True, colalign=align)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table of the frame with its index (numbers right-aligned)."""
    return _table(frame, "pipe")


def _headline(df: pd.DataFrame, name: str) -> str:
    facts = summary(df)
    first = facts["trials until the first converged"]
    counted = (f"{name}: {facts['finished trials']} finished trials, {facts['running trials']} running, "
               f"{facts['nodes']} nodes; ")
    if facts["best node"] is None:
        return counted + "no trial has finished yet"
    board = leaderboard(df, top=1)
    reward = f"{board['fidelity'].iloc[0]} reward" if "fidelity" in board else "reward"
    return (counted + f"best node {facts['best node']} with {reward} {facts['best reward (replicate mean)']:.3f} "
            f"({facts['best classification']}); first converged trial: " + ("none" if first is None else f"#{first}"))


# ------------------------------------------------------------------------------------------ figures


def _colour(label: Any) -> str:
    return COLOURS.get(str(label), COLOURS["unknown"])


def _save(figure: Figure, target: Path) -> Path:
    figure.savefig(target, dpi=110)
    return target


def _class_legend(ax: Any, labels: Sequence[Any], **extra: Any) -> None:
    handles = [Line2D([], [], marker="o", linestyle="", markerfacecolor=_colour(label), markeredgecolor="black",
                      markersize=7, label=str(label)) for label in labels]
    ax.legend(handles=handles + extra.pop("handles", []), fontsize=8, **extra)


def reward_figure(df: pd.DataFrame, target: Path, title: str = "") -> Path:
    """Reward per trial in completion order, coloured by classification, with the best-so-far line; in an
    experiment that screened, screening trials are squares and each fidelity has its own best-so-far line."""
    done = df[df["trial_number"].notna()].sort_values("trial_number")
    best = best_so_far(df)
    split = screened(df)
    figure = Figure(figsize=(10, 4.8), layout="constrained")
    ax = figure.add_subplot()
    labels = [label for label in done["classification"].cat.categories if (done["classification"] == label).any()]
    fidelities = _fidelities(done)
    for label in labels:
        for fidelity, marker in ((FULL, "o"), (SCREEN, "s")):
            rows = done[(done["classification"] == label) & (fidelities == fidelity)]
            ax.scatter(rows["trial_number"].astype(float), rows["reward"], s=40 if fidelity == FULL else 24,
                       marker=marker, color=_colour(label), edgecolors="black", linewidths=0.5, zorder=3)
    handles = []
    for fidelity, style in ((FULL, "-"), (SCREEN, "--")) if split else ((None, "-"),):
        line = best if fidelity is None else best[best["fidelity"] == fidelity]
        if fidelity is not None and line.empty:
            continue
        ax.step(line.index.astype(float), line["best_reward"], where="post", color="black", linewidth=1.3,
                linestyle=style, zorder=2)
        if line["improved"].any():
            top = line[line["improved"]].iloc[-1]
            ax.annotate(f"node {top['best_node']}", (float(top.name), top["best_reward"]), xytext=(6, 6),
                        textcoords="offset points", fontsize=8)
        handles.append(Line2D([], [], color="black", linewidth=1.3, linestyle=style,
                              label="best so far" + (f" ({fidelity})" if fidelity else "")))
    if split:
        handles.append(Line2D([], [], marker="s", linestyle="", markerfacecolor="white", markeredgecolor="black",
                              markersize=6, label="screening trial"))
    ax.set_ylim(bottom=0)
    boundaries = [tier for tier in (0.25, 0.5, 0.75) if tier < ax.get_ylim()[1]]
    for tier in boundaries:
        ax.axhline(tier, color="grey", linewidth=0.6, linestyle=":", zorder=1)
    if boundaries:
        handles.append(Line2D([], [], color="grey", linewidth=0.6, linestyle=":",
                              label="class boundary (reward = tier/4)"))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="trial (completion order)", ylabel="reward", title=f"{title}: reward per trial".lstrip(": "))
    _class_legend(ax, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), handles=handles)
    return _save(figure, target)


def tree_layout(table: pd.DataFrame) -> dict[str, tuple[int, float]]:
    """(depth, row) per node: leaves take consecutive rows in depth-first order (children by creation order),
    a parent sits midway between its first and last child, so no edges cross."""
    children: dict[str, list[str]] = {str(node_id): [] for node_id in table.index}
    roots = []
    for node_id, parent in table["parent_id"].items():
        if pd.isna(parent) or str(parent) not in children:
            roots.append(str(node_id))
        else:
            children[str(parent)].append(str(node_id))
    where: dict[str, tuple[int, float]] = {}
    next_row = 0

    def place(node_id: str, depth: int) -> float:
        nonlocal next_row
        rows = [place(child, depth + 1) for child in children[node_id]]
        if rows:
            row = (rows[0] + rows[-1]) / 2
        else:
            row, next_row = next_row, next_row + 1
        where[node_id] = (depth, row)
        return row

    for root in roots:
        place(root, 0)
    return where


def _wrap(text: str, width: int = 40) -> str:
    """Break at the '; ' between changes where possible."""
    lines: list[str] = []
    for part in text.split("; "):
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += "; " + part
        else:
            lines += textwrap.wrap(part, width) or [""]
    return "\n".join(lines)


def tree_figure(df: pd.DataFrame, target: Path, title: str = "") -> Path:
    """The exploration tree, depth left to right: each node coloured by classification and sized by reward
    (hollow while running), each edge labelled with the mutation that made the child."""
    table = nodes(df)
    full = nodes(df, FULL)["reward_mean"] if screened(df) else pd.Series(math.nan, index=table.index)
    where = tree_layout(table)
    depth = max(d for d, _ in where.values())
    rows = max(r for _, r in where.values()) + 1
    figure = Figure(figsize=(max(7.0, 3.0 * (depth + 1.4) + 1.6), max(3.0, 0.62 * rows + 1.3)), layout="constrained")
    ax = figure.add_subplot()
    stub = 0.15  # where an edge turns from its parent towards the child
    for node_id, node in table.iterrows():
        x, y = where[str(node_id)]
        # A root gets a stub edge from the left, so that its own mutation text ('baseline', 'initial: ...')
        # sits where a child's does.
        start, start_row = where.get(str(node["parent_id"]), (x - 1, y))
        ax.plot([start, start + stub, start + stub, x], [start_row, start_row, y, y], color="grey", linewidth=0.9,
                zorder=1)
        ax.text(start + stub + 0.04, y - 0.1, _wrap(short(node["mutation"])), fontsize=7, va="bottom", ha="left",
                zorder=2)
        rewarded = node["n"] > 0
        size = 40 + 460 * max(float(node["reward_mean"]), 0.0) if rewarded else 40
        ax.scatter([x], [y], s=size, zorder=3, linewidths=0.8,
                   color=_colour(node["classification"]) if rewarded else "white",
                   edgecolors="black" if rewarded else "grey")
        caption = f"{node_id}\n" + (f"{node['reward_mean']:.3f}" + (f" ×{node['n']}" if node["n"] > 1 else "")
                                    if rewarded else "running")
        if not pd.isna(full[node_id]):
            caption += f"\nfull {full[node_id]:.3f}"
        ax.text(x, y + 0.27, caption, fontsize=6.5, ha="center", va="top", zorder=4)
    ax.set_xlim(-1.05, depth + 0.45)
    ax.set_ylim(rows - 0.35, -0.75)
    ax.set_xticks(range(depth + 1), [f"depth {d}" for d in range(depth + 1)])
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    labels = [label for label in table["classification"].cat.categories if (table["classification"] == label).any()]
    _class_legend(ax, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="size ∝ reward", handles=[
        Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor="grey", markersize=7,
               label="running")] if (table["n"] == 0).any() else [])
    figure.suptitle(f"{title}: exploration tree".lstrip(": "))
    ax.set_title("node id and reward (mean, × replicates); edge: the mutation that made the child", fontsize=9)
    return _save(figure, target)


def effects_figure(effects: pd.DataFrame, target: Path, title: str = "") -> Path:
    """Mean Δreward per parameter and direction, with standard-error bars; strongest on top."""
    figure = Figure(figsize=(8, max(2.6, 0.42 * len(effects) + 1.4)), layout="constrained")
    ax = figure.add_subplot()
    ax.set_title(f"{title}: parameter effects, Δreward child − parent (± stderr)".lstrip(": "))
    if effects.empty:
        ax.text(0.5, 0.5, NO_PAIRS, ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _save(figure, target)
    positions = np.arange(len(effects))
    ax.barh(positions, effects["mean_delta"], xerr=effects["stderr"], capsize=3,
            color=["#2ca02c" if delta > 0 else "#d62728" for delta in effects["mean_delta"]], edgecolor="black",
            linewidth=0.5)
    for position, delta, stderr in zip(positions, effects["mean_delta"], effects["stderr"].fillna(0.0), strict=True):
        side = 1 if delta >= 0 else -1  # the value goes beyond the error bar, on the bar's side
        ax.annotate(f"{delta:+.3f}", (delta + side * stderr, position), xytext=(4 * side, 0),
                    textcoords="offset points", ha="left" if side > 0 else "right", va="center", fontsize=8)
    ax.margins(x=0.15)
    ax.set_yticks(positions, [f"{short(p)} {d} (n={n})"
                              for p, d, n in zip(effects["parameter"], effects["direction"], effects["count"],
                                                 strict=True)], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("mean Δreward (child − parent, replicate means)")
    return _save(figure, target)


def recovery_figure(df: pd.DataFrame, target: Path, title: str = "") -> Path:
    """rate_constants_R2 against avg_slope_ratio (log x) per trial, with the converged region shaded."""
    th = Thresholds()
    figure = Figure(figsize=(8, 5.8), layout="constrained")
    ax = figure.add_subplot()
    done = _finished(df)
    points = done.reindex(columns=["classification", "avg_slope_ratio", "rate_constants_R2"])  # an error has none
    usable = points[(points["avg_slope_ratio"] > 0) & points["rate_constants_R2"].notna()]
    ratio_max = max(th.slope_ratio_max * 2, float(usable["avg_slope_ratio"].max()) * 1.5) if len(usable) else 4.0
    ratio_min = min(th.slope_ratio_min / 2, float(usable["avg_slope_ratio"].min()) / 1.5) if len(usable) else 0.25
    r2_min = min(0.0, float(usable["rate_constants_R2"].min()) - 0.05) if len(usable) else 0.0
    ax.add_patch(Rectangle((th.slope_ratio_min, th.converged_r2), th.slope_ratio_max - th.slope_ratio_min,
                           1.05 - th.converged_r2, color="#2ca02c", alpha=0.15, zorder=0))
    ax.axvline(1.0, color="grey", linewidth=0.6, linestyle=":")
    labels = [label for label in done["classification"].cat.categories if (usable["classification"] == label).any()]
    for label in labels:
        rows = usable[usable["classification"] == label]
        ax.scatter(rows["avg_slope_ratio"], rows["rate_constants_R2"], s=40, color=_colour(label),
                   edgecolors="black", linewidths=0.5, zorder=3)
    ax.set_xscale("log")
    ax.set_xlim(ratio_min, ratio_max)
    ticks = [2.0**k for k in range(math.ceil(math.log2(ratio_min)), math.floor(math.log2(ratio_max)) + 1)]
    ax.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
    ax.xaxis.set_minor_formatter("")
    ax.set_ylim(r2_min, 1.05)
    ax.set(xlabel="avg_slope_ratio (learned / true homeostasis slope)", ylabel="rate_constants_R2")
    hidden = len(done) - len(usable)
    ax.set_title(f"{title}: joint recovery per trial".lstrip(": ")
                 + (f" ({hidden} without a positive slope ratio not shown)" if hidden else ""), fontsize=10)
    region = Rectangle((0, 0), 1, 1, color="#2ca02c", alpha=0.15,
                       label=f"converged region: R² > {th.converged_r2:g}, ratio in "
                             f"[{th.slope_ratio_min:g}, {th.slope_ratio_max:g}] (and cluster accuracy 1)")
    _class_legend(ax, labels, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=3, handles=[region])
    return _save(figure, target)


# ------------------------------------------------------------------------------------------ regression

# The columns of the best node set beside the known-form regression on the same data.
BASELINE_METRICS = ("classification", "rate_constants_R2", "log_k_rmse", "MLP_node_slope_ratio_0",
                    "MLP_node_slope_ratio_1", "MLP_node_baseline_0", "MLP_node_baseline_1", "embedding_cluster_acc",
                    "measurement_noise_estimate")


def regression_baseline(experiment_dir: str | PathLike[str]) -> dict[str, Any] | None:
    """The metrics of the known-form regression the search fitted on the experiment's data (regression/
    metrics.json), None for an experiment without one."""
    path = Path(experiment_dir) / "regression" / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def beside_regression(df: pd.DataFrame, baseline: dict[str, Any]) -> pd.DataFrame:
    """Two rows, the best node's best trial (at its leaderboard fidelity) and the regression, over the headline
    metrics both have."""
    board = leaderboard(df)
    rows = {}
    if len(board):
        fidelity = str(board["fidelity"].iloc[0]) if "fidelity" in board else FULL
        trial = _best_trial(df, str(board["node_id"].iloc[0]), fidelity)
        rows[f"best node {board['node_id'].iloc[0]} (GNN)"] = {key: trial.get(key) for key in BASELINE_METRICS}
    rows["known-form regression"] = {key: baseline.get(key) for key in BASELINE_METRICS}
    table = pd.DataFrame.from_dict(rows, orient="index").dropna(axis=1, how="all")
    return table.rename_axis("method").reset_index()


# ------------------------------------------------------------------------------------------ report


def _best_trial(df: pd.DataFrame, node_id: str, fidelity: str) -> pd.Series:
    trials = _finished(df)
    trials = trials[(trials["node_id"] == node_id) & (_fidelities(trials) == fidelity)]
    return trials.loc[trials["reward"].fillna(-math.inf).idxmax()]


def write_report(df: pd.DataFrame, report_dir: str | PathLike[str], name: str = "",
                 baseline: dict[str, Any] | None = None) -> Path:
    """report.md with the tables and the four figures, the best node beside the known-form regression
    (`baseline`, when the experiment has one), plus the best node's trial plots copied into `best_node/`;
    returns the path of report.md."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    board, effects, best = leaderboard(df), parameter_effects(df), best_so_far(df)
    reward_figure(df, out / "reward.png", name)
    tree_figure(df, out / "tree.png", name)
    effects_figure(effects, out / "effects.png", name)
    recovery_figure(df, out / "recovery.png", name)
    lines = [f"# Experiment {name}".rstrip(), "", _headline(df, name), "",
             "## Leaderboard", "", "Nodes by reward (mean ± sd over replicates, n = replicates), best first."
             + (" Full-budget results first, then the nodes only screened: rewards compare within one fidelity."
                if screened(df) else ""), "",
             _markdown_or(_board_display(board).set_index("node_id"), NOTHING_FINISHED), "",
             *_baseline_section(df, baseline),
             "## Trials by classification and diagnosis", "", _markdown_or(counts(df), NOTHING_FINISHED), "",
             "## Best so far", "", f"![{FIGURES['reward.png']}](reward.png)", "",
             "Trials that set a new best reward:", "",
             _markdown_or(best[best["improved"]].drop(columns="improved"), NOTHING_FINISHED), "",
             "## Parameter effects", "", f"![{FIGURES['effects.png']}](effects.png)", "",
             _markdown_or(_effects_display(effects).set_index("parameter"), NO_PAIRS), "",
             "## Recovery", "", f"![{FIGURES['recovery.png']}](recovery.png)", "",
             "## Exploration tree", "", f"![{FIGURES['tree.png']}](tree.png)", ""]
    if len(board):
        fidelity = str(board["fidelity"].iloc[0]) if "fidelity" in board else FULL
        lines += _best_node_section(df, str(board["node_id"].iloc[0]), fidelity, out)
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


def _baseline_section(df: pd.DataFrame, baseline: dict[str, Any] | None) -> list[str]:
    if baseline is None:
        return []
    return ["## Beside the known-form regression", "",
            "The same data fitted by least squares with mass action and linear relaxation assumed "
            "(`python -m metabo_tune.regress`; its files in `regression/`).", "",
            markdown_table(beside_regression(df, baseline)), ""]


def _markdown_or(frame: pd.DataFrame, empty: str) -> str:
    return markdown_table(frame) if len(frame) else empty


def _best_node_section(df: pd.DataFrame, node_id: str, fidelity: str, out: Path) -> list[str]:
    trial = _best_trial(df, node_id, fidelity)
    at = f" at {fidelity}" if screened(df) else ""
    lines = [f"## Best node {node_id}", "",
             f"Trial {trial['trial_id']} (seed {trial['seed']}{at}): reward {_cell(trial['reward'])}, "
             f"{trial['classification']}, mutation `{trial['mutation']}`.", ""]
    source = Path(str(trial["trial_dir"])) if not pd.isna(trial.get("trial_dir")) else None
    if source is None or not source.is_dir():
        return [*lines, f"Its trial directory ({source}) is not there: no plots to show.", ""]
    lines += [f"Trial directory: [{source.name}]({Path(path.relpath(source, out)).as_posix()})", ""]
    copies = out / "best_node"
    shutil.rmtree(copies, ignore_errors=True)
    found = [plot for plot in TRIAL_PLOTS if (source / plot).is_file()]
    if found:
        copies.mkdir()
    for plot in found:
        shutil.copy2(source / plot, copies / plot)
        lines += [f"![{plot}](best_node/{plot})", ""]
    return lines


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise AnalysisError("--format parquet needs pyarrow, which is not installed (pip install pyarrow)") from None


def export(df: pd.DataFrame, target: str | PathLike[str], fmt: str) -> Path:
    """The loaded table as csv, parquet (needs pyarrow) or json (pandas' table orient, which keeps dtypes)."""
    target = Path(target)
    if fmt == "parquet":
        _require_pyarrow()
        df.to_parquet(target, index=False)
    elif fmt == "json":
        target.write_text(df.to_json(orient="table", index=False), encoding="utf-8")
    elif fmt == "csv":
        df.to_csv(target, index=False)
    else:
        raise AnalysisError(f"unknown format {fmt!r} (one of {', '.join(EXPORT_FORMATS)})")
    return target


# ------------------------------------------------------------------------------------------ command


def _print_table(title: str, frame: pd.DataFrame, empty: str = NOTHING_FINISHED) -> None:
    print(f"\n{title}\n" + (_table(frame, "simple") if len(frame) else empty))


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m metabo_tune.analysis",
                            description="Tables and figures of a metabo_tune experiment.")
    parser.add_argument("experiment", help="the experiment directory (results/<name>)")
    parser.add_argument("--format", choices=EXPORT_FORMATS, help="also export the loaded table as report/trials.<ext>")
    parser.add_argument("--out", help="report directory (default: EXPERIMENT/report)")
    args = parser.parse_args(argv)
    try:
        if args.format == "parquet":
            _require_pyarrow()  # before the report is written, not after
        df = load(args.experiment)
        name = Path(args.experiment).resolve().name
        out = Path(args.out) if args.out else Path(args.experiment) / "report"
        print(_headline(df, name))
        _print_table("Leaderboard (reward: mean ± sd over n replicates)", _board_display(leaderboard(df)))
        _print_table("Finished trials by classification and diagnosis", counts(df))
        best = best_so_far(df)
        _print_table("Trials that set a new best reward", best[best["improved"]].drop(columns="improved"))
        _print_table("Parameter effects (Δreward child − parent ± stderr)",
                     _effects_display(parameter_effects(df)).set_index("parameter"), NO_PAIRS)
        baseline = regression_baseline(args.experiment)
        if baseline is not None:
            _print_table("Beside the known-form regression on the same data", beside_regression(df, baseline))
        report = write_report(df, out, name, baseline)
        written = [report.name, *FIGURES] + (["best_node/"] if (out / "best_node").is_dir() else [])
        if args.format:
            written.append(export(df, out / f"trials.{args.format}", args.format).name)
        print(f"\nreport written to {out}: {', '.join(written)}")
    except (AnalysisError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
