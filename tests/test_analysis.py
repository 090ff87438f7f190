"""The results analysis on hand-built experiments: a trials.csv, tree.jsonl and trial directories written
the way the reporter and the searcher write them (modelled on a real smoke search), no Ray.

The fixture's tree (rewards are replicate means; G and a replicate of C are still running):

    A 0.45 (0.40, 0.50) ── C 0.80 (+1) ── E 0.60
                        │               └─ G running
                        └─ D 0.30
    B 0.20 ── F 0.00 (diverged)
"""

import json
import math
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from metabo_tune import analysis
from metabo_tune.analysis import (
    AnalysisError,
    best_so_far,
    compare,
    counts,
    leaderboard,
    load,
    parameter_effects,
)
from metabo_tune.tree import Tree

A, B, C, D, E, F, G = "00012345", "bbbb0002", "cccc0003", "dddd0004", "eeee0005", "ffff0006", "aaaa0007"
LR, L1, RECURRENT, STEP = ("training.learning_rate_node", "training.coeff_MLP_node_L1",
                           "training.recurrent_training", "training.time_step")
BASE = {LR: 1e-4, L1: 1.0, RECURRENT: False, STEP: 1}
# node: parent, mutation, strategy, config changes from BASE
NODES = {
    A: (None, "baseline", "initial", {}),
    B: (None, f"initial: {LR}=0.0005", "initial", {LR: 5e-4}),
    C: (A, f"{LR}: 0.0001 -> 0.0002", "exploit", {LR: 2e-4}),
    D: (A, f"{L1}: 1 -> 0.5", "explore", {L1: 0.5}),
    E: (C, f"{RECURRENT}: False -> True", "principle-test", {LR: 2e-4, RECURRENT: True}),
    F: (B, f"{LR}: 0.0005 -> 0.001", "exploit", {LR: 1e-3}),
    G: (C, f"{L1}: 1 -> 2", "exploit", {LR: 2e-4, L1: 2.0}),
}
# finished trials in completion order: trial id, node, seed, status, classification, diagnosis, reward
TRIALS = [
    (A, A, 77, "completed", "partial-k", "degenerate", 0.40),
    (B, B, 77, "completed", "failed", "failed", 0.20),
    (D, D, 77, "completed", "partial", "mixed", 0.30),
    (C, C, 77, "completed", "converged", "healthy", 0.80),
    ("rep00008", A, 78, "completed", "partial-k", "degenerate", 0.50),
    (F, F, 77, "diverged", "failed", "unknown", 0.0),
    (E, E, 77, "completed", "partial-homeo", "mixed", 0.60),
]
RUNNING = [(G, G, 77), ("rep00009", C, 78)]  # trial id, node, seed: a new node and a replicate


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0\0")) + chunk(b"IEND", b"")


def metrics_of(reward: float, status: str) -> dict:
    if status == "diverged":  # a trial that stopped early has its reward inputs only
        return {"rate_constants_R2": math.nan, "avg_slope_ratio": math.nan}
    if status == "error":  # the reporter's row of a trial that raised: no metrics at all
        return {}
    return {"rate_constants_R2": 0.5 + reward / 2, "avg_slope_ratio": 0.25 + 2 * reward,
            "embedding_cluster_acc": 1.0, "test_pearson": 0.97, "MLP_node_slope_ratio_0": 2 * reward,
            "MLP_node_slope_ratio_1": 0.3, "n_outliers": 3, "embedding_n_clusters": 2}


def later_trial(trial_id: str, node_id: str, fidelity: dict[str, str]) -> tuple[str, str] | None:
    """Strategy and mutation of a node's later trial: a promotion when it is the node's first at full after
    a screen trial, else a replicate; None for the node's own trial."""
    if trial_id == node_id:
        return None
    if fidelity.get(trial_id) == "full" and fidelity.get(node_id) == "screen" and trial_id.startswith("promo"):
        return "promotion", f"promotion of {node_id}"
    return "replicate", f"replicate of {node_id}"


def make_experiment(directory: Path, nodes: dict = NODES, trials: list = TRIALS, running: list = RUNNING,
                    fidelity: dict[str, str] | None = None) -> Path:
    """trials.csv as reporter.TrialTable writes it, tree.jsonl as TreeSearcher writes it, trial dirs. With
    `fidelity` (trial id → screen | full, as a space with a fidelity section gives) the fidelity column, the
    fidelity in the trial directories' names and promotions (trial ids starting with 'promo')."""
    directory.mkdir(parents=True)
    rows = []
    for trial_id, node_id, seed, status, label, diagnosis, reward in trials:
        parent, mutation, strategy, changes = nodes[node_id]
        strategy, mutation = later_trial(trial_id, node_id, fidelity or {}) or (strategy, mutation)
        metrics = metrics_of(reward, status)
        trial_dir = Path("trials") / (f"node_{node_id}_seed_{seed}" + (f"_{fidelity[trial_id]}" if fidelity else ""))
        rows.append({
            "trial_id": trial_id, "node_id": node_id, "parent_id": parent, "strategy": strategy,
            "mutation": mutation, "seed": seed, **({"fidelity": fidelity[trial_id]} if fidelity else {}),
            "status": status,
            "classification": label, "reward": reward, "degeneracy_gap": 0.1, "diagnosis": diagnosis,
            "homeostasis_assessment": "partial", **metrics, "time_total_s": 4.5,
            "experiment_tag": f"1_node_id={node_id},seed={seed}",  # quoted in the file: it has commas
            **BASE, **changes, "trial_dir": str(trial_dir), "ray_trial_dir": f"trial_{node_id}_{trial_id}"})
        (directory / trial_dir).mkdir(parents=True)
        (directory / trial_dir / "analysis.log").write_text(f"rate_constants_R2: {metrics.get('rate_constants_R2')}\n")
        (directory / trial_dir / "metrics.json").write_text(json.dumps(metrics))
        for plot in analysis.TRIAL_PLOTS:
            (directory / trial_dir / plot).write_bytes(tiny_png())
    header = None if rows else ["trial_id", "node_id", "parent_id", "strategy", "mutation", "seed", "status",
                                "classification", "reward"]
    pd.DataFrame(rows, columns=header).to_csv(directory / "trials.csv", index=False)
    finished = {(node_id, trial_id): (seed, status, reward, metrics_of(reward, status) | {"classification": label})
                for trial_id, node_id, seed, status, label, _, reward in trials}
    with (directory / "tree.jsonl").open("w") as tree:
        for index, (node_id, (parent, mutation, strategy, changes)) in enumerate(nodes.items()):
            trials = [{"trial_id": t, "seed": s, "status": st, "reward": r, "metrics": m}
                      for (n, t), (s, st, r, m) in finished.items() if n == node_id]
            trials += [{"trial_id": t, "seed": s, "status": "running", "reward": None, "metrics": {}}
                       for t, n, s in running if n == node_id]
            if fidelity:
                trials = [trial | {"fidelity": fidelity[trial["trial_id"]]} for trial in trials]
            tree.write(json.dumps({"node_id": node_id, "parent_id": parent, "config": BASE | changes,
                                   "mutation": mutation, "strategy": strategy, "index": index, "trials": trials})
                       + "\n")
    return directory


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    return make_experiment(tmp_path / "exp")


@pytest.fixture
def df(experiment: Path) -> pd.DataFrame:
    return load(experiment)


def by_trial(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("trial_id")


def report_section(report: str, heading: str) -> str:
    """The text of report.md under `## heading`, up to the next section."""
    return report.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def markdown_rows(report: str, heading: str) -> list[list[str]]:
    """The body rows of the markdown table under `## heading`, each a list of stripped cells."""
    lines = [line for line in report_section(report, heading).splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def printed_section(out: str, title: str) -> list[str]:
    """The lines the command printed under a table title, up to the next blank line."""
    return out.split(f"\n{title}", 1)[1].split("\n\n", 1)[0].splitlines()[1:]


# ------------------------------------------------------------------------------------------ load


def test_load_gives_one_typed_row_per_trial(experiment, df):
    assert list(df["trial_id"]) == [t[0] for t in TRIALS] + ["rep00009", G]  # running ones in tree order
    assert list(df["trial_number"]) == [1, 2, 3, 4, 5, 6, 7, pd.NA, pd.NA]
    types = df.dtypes.astype(str)
    for column in ("trial_id", "node_id", "parent_id", "mutation", "trial_dir", "experiment_tag"):
        assert types[column] == "string", column
    for column in ("strategy", "status", "classification", "diagnosis", "homeostasis_assessment"):
        assert types[column] == "category", column
    assert df["classification"].cat.ordered and list(df["classification"].cat.categories[:2]) == ["converged",
                                                                                                 "partial-k"]
    for column in ("reward", "rate_constants_R2", "embedding_cluster_acc", "time_total_s", LR, L1):
        assert types[column] == "float64", column
    assert (types["seed"], types[RECURRENT], types[STEP]) == ("int64", "bool", "int64")
    assert (types["n_outliers"], types["embedding_n_clusters"], types["index"]) == ("Int64", "Int64", "Int64")
    rows = by_trial(df)
    assert rows.loc[A, "node_id"] == "00012345"  # an all-digit id stays text
    assert pd.isna(rows.loc[A, "parent_id"]) and rows.loc[C, "parent_id"] == A
    assert rows.loc[F, "n_outliers"] is pd.NA and math.isnan(rows.loc[F, "embedding_cluster_acc"])
    assert rows.loc[E, RECURRENT] and not rows.loc[C, RECURRENT]
    assert rows.loc[C, "experiment_tag"] == f"1_node_id={C},seed=77"
    assert list(rows.loc[[A, B, C, D, E, F, G, "rep00008", "rep00009"], "index"]) == [0, 1, 2, 3, 4, 5, 6, 0, 2]
    assert rows.loc[C, "trial_dir"] == str(experiment / "trials" / f"node_{C}_seed_77")
    assert rows.loc[C, "ray_trial_dir"] == str(experiment / f"trial_{C}_{C}")


def test_running_trials_come_from_the_tree(df):
    running = by_trial(df).loc[G]
    assert (running["status"], running["node_id"], running["parent_id"], running["seed"]) == ("running", G, C, 77)
    assert running["mutation"] == f"{L1}: 1 -> 2" and running[L1] == 2.0 and running[LR] == 2e-4
    assert math.isnan(running["reward"]) and pd.isna(running["trial_dir"])
    replicate = by_trial(df).loc["rep00009"]
    assert (replicate["strategy"], replicate["mutation"]) == ("replicate", f"replicate of {C}")
    assert tuple(replicate[["status", "node_id", "parent_id", "seed"]]) == ("running", C, A, 78)


def test_a_copied_experiment_resolves_its_trial_directories(experiment, tmp_path):
    table = pd.read_csv(experiment / "trials.csv", dtype=str)
    # An older experiment stored absolute paths of the machine it ran on.
    table["trial_dir"] = "/mnt/shared/results/exp/" + table["trial_dir"]
    table.to_csv(experiment / "trials.csv", index=False)
    copy = Path(shutil.copytree(experiment, tmp_path / "elsewhere" / "exp"))
    shutil.rmtree(experiment)
    rows = by_trial(load(copy))
    assert rows.loc[C, "trial_dir"] == str(copy / "trials" / f"node_{C}_seed_77")
    assert Path(rows.loc[C, "trial_dir"]).is_dir()


def test_without_a_tree_the_index_is_the_order_of_first_appearance(experiment):
    (experiment / "tree.jsonl").unlink()
    df = load(experiment)
    assert len(df) == len(TRIALS) and (df["status"] != "running").all()
    assert dict(zip(df["node_id"], df["index"], strict=True)) == {A: 0, B: 1, D: 2, C: 3, F: 4, E: 5}
    assert (str(df[RECURRENT].dtype), str(df[STEP].dtype), str(df[LR].dtype)) == ("bool", "int64", "float64")


# ------------------------------------------------------------------------------------------ views


def test_leaderboard_ranks_nodes_by_replicate_mean(df):
    board = leaderboard(df)
    assert list(board["node_id"]) == [C, E, A, D, B, F]  # G is running: no reward yet
    assert list(board.index) == [1, 2, 3, 4, 5, 6]
    a = board.set_index("node_id").loc[A]
    assert a["reward_mean"] == pytest.approx(0.45) and a["reward_sd"] == pytest.approx(math.sqrt(0.005))
    assert (a["n"], a["classification"], a["mutation"]) == (2, "partial-k", "baseline")
    assert a["rate_constants_R2"] == pytest.approx((0.7 + 0.75) / 2)
    c = board.set_index("node_id").loc[C]
    assert math.isnan(c["reward_sd"]) and (c["n"], c["parent_id"], c["classification"]) == (1, A, "converged")
    assert list(leaderboard(df, top=2)["node_id"]) == [C, E]


def test_leaderboard_breaks_ties_by_replicates_then_age(df):
    df = df.copy()
    df.loc[df["node_id"] == D, "reward"] = 0.45  # D ties A's mean but has one trial
    df.loc[df["node_id"] == B, "reward"] = 0.45  # B is older than D
    assert list(leaderboard(df)["node_id"])[2:5] == [A, B, D]


def test_counts_by_classification_and_diagnosis(df):
    table = counts(df)
    assert table.loc["classification", "trials"].to_dict() == {
        "converged": 1, "partial-k": 2, "partial-homeo": 1, "partial": 1, "failed": 2}
    assert table.loc["diagnosis", "trials"].to_dict() == {
        "healthy": 1, "degenerate": 2, "failed": 1, "mixed": 2, "unknown": 1}
    assert table.loc[("classification", "partial-k"), "share"] == pytest.approx(2 / 7)


def test_best_so_far_follows_completion_order(df):
    best = best_so_far(df)
    assert list(best.index) == [1, 2, 3, 4, 5, 6, 7]
    assert list(best["best_reward"]) == [0.4, 0.4, 0.4, 0.8, 0.8, 0.8, 0.8]
    assert list(best["best_node"]) == [A, A, A, C, C, C, C]
    assert list(best["improved"]) == [True, False, False, True, False, False, False]
    assert list(best["reward"]) == [t[6] for t in TRIALS]
    df = df.copy()
    df.loc[df["trial_id"] == "rep00008", "reward"] = 0.8  # reaching the best again does not take it over
    assert list(best_so_far(df)["best_node"]) == [A, A, A, C, C, C, C]


def test_parameter_effects_by_hand(df):
    effects = parameter_effects(df).set_index(["parameter", "direction"])
    assert list(effects.index) == [(RECURRENT, "on"), (L1, "down"), (LR, "up")]  # strongest first
    on = effects.loc[(RECURRENT, "on")]
    assert on["mean_delta"] == pytest.approx(0.6 - 0.8) and on["count"] == 1 and math.isnan(on["stderr"])
    down = effects.loc[(L1, "down")]
    assert down["mean_delta"] == pytest.approx(0.3 - 0.45) and down["evidence"] == D
    up = effects.loc[(LR, "up")]  # C − A = +0.35 and F − B = −0.20
    assert up["mean_delta"] == pytest.approx(0.075) and up["count"] == 2
    assert up["stderr"] == pytest.approx(0.55 / math.sqrt(2) / math.sqrt(2)) and up["evidence"] == f"{C}, {F}"


def test_parameter_effects_agree_with_the_searchers_memory(experiment, df):
    lines = (experiment / "tree.jsonl").read_text().splitlines()
    tree = Tree.from_json(json.dumps({"nodes": [json.loads(line) for line in lines]}))
    expected = {(e.parameter, e.direction): (e.mean_delta, e.stderr, e.count) for e in tree.parameter_effects()}
    effects = parameter_effects(df)
    assert len(effects) == len(expected)
    for row in effects.itertuples():
        mean, stderr, count = expected[(row.parameter, row.direction)]
        assert row.mean_delta == pytest.approx(mean) and row.count == count
        assert (stderr is None and math.isnan(row.stderr)) or row.stderr == pytest.approx(stderr)


def test_compare_two_experiments(df):
    table = compare(df, df[df["trial_number"] <= 3], names=("full", "first three"))
    assert list(table.columns) == ["full", "first three"]
    assert table.loc["finished trials"].tolist() == [7, 3]
    assert table.loc["running trials"].tolist() == [2, 0]
    assert table.loc["best node"].tolist() == [C, A]
    assert table.loc["best reward (replicate mean)"].tolist() == pytest.approx([0.8, 0.4])
    assert table.loc["trials until the first converged"].tolist() == [4, None]
    assert table.loc["classification: converged"].tolist() == [1, 0]
    assert table.loc["classification: failed"].tolist() == [2, 1]
    assert "classification: unknown" not in table.index


def test_tree_layout_puts_parents_between_their_children(df):
    where = analysis.tree_layout(analysis.nodes(df))
    assert where == {E: (2, 0), G: (2, 1), C: (1, 0.5), D: (1, 2), A: (0, 1.25), F: (1, 3), B: (0, 3)}


def test_markdown_table():
    frame = pd.DataFrame({"node": ["a|b", "c"], "reward": [0.5, math.nan]}, index=pd.Index([1, 2], name="rank"))
    assert analysis.markdown_table(frame).splitlines() == [
        "|   rank | node   |   reward |",
        "|-------:|:-------|---------:|",
        "|      1 | a\\|b   |    0.500 |",
        "|      2 | c      |          |"]


# ------------------------------------------------------------------------------------------ command


def test_command_prints_the_tables_and_writes_the_report(experiment, capsys):
    assert analysis.main([str(experiment), "--format", "parquet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"exp: 7 finished trials, 2 running, 7 nodes; best node {C} with reward 0.800")
    assert "first converged trial: #4" in out
    assert "0.450 ± 0.071" in out and "Parameter effects" in out and "recurrent_training" in out
    report = experiment / "report"
    text = (report / "report.md").read_text()
    for figure in analysis.FIGURES:
        assert (report / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
        assert (report / figure).stat().st_size > 5000, figure
        assert f"]({figure})" in text, figure
    for plot in analysis.TRIAL_PLOTS:
        assert (report / "best_node" / plot).read_bytes() == tiny_png()
        assert f"](best_node/{plot})" in text
    assert f"## Best node {C}" in text and f"](../trials/node_{C}_seed_77)" in text
    assert markdown_rows(text, "Leaderboard")[0][:4] == [C, "0.800", "1", "converged"]
    assert pd.read_parquet(report / "trials.parquet").shape == load(experiment).shape


def test_report_without_effects_or_trial_directory(experiment, tmp_path):
    df = load(experiment)
    roots = df[df["node_id"].isin([A, B])]
    shutil.rmtree(experiment / "trials" / f"node_{A}_seed_78")
    report = analysis.write_report(roots, tmp_path / "report", "roots")
    text = report.read_text()
    assert "No parent–child pair has finished yet." in text
    assert f"## Best node {A}" in text and "is not there: no plots to show" in text
    assert (tmp_path / "report" / "effects.png").stat().st_size > 1000
    assert not (tmp_path / "report" / "best_node").exists()


def test_command_writes_elsewhere_with_out(experiment, tmp_path, capsys):
    assert analysis.main([str(experiment), "--out", str(tmp_path / "elsewhere"), "--format", "csv"]) == 0
    assert (tmp_path / "elsewhere" / "report.md").is_file() and (tmp_path / "elsewhere" / "trials.csv").is_file()
    assert not (experiment / "report").exists()


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export_round_trip(df, tmp_path, fmt):
    target = analysis.export(df, tmp_path / f"trials.{fmt}", fmt)
    if fmt == "csv":
        back = pd.read_csv(target, dtype={"trial_id": str, "node_id": str, "parent_id": str})
        assert list(back.columns) == list(df.columns)
        assert list(back["node_id"]) == list(df["node_id"])
        pd.testing.assert_series_equal(back["reward"], df["reward"])
        assert list(back[RECURRENT]) == list(df[RECURRENT])
    else:
        back = pd.read_parquet(target) if fmt == "parquet" else pd.read_json(target, orient="table")
        pd.testing.assert_frame_equal(back, df)


def test_parquet_without_pyarrow_is_a_clear_error(experiment, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    assert analysis.main([str(experiment), "--format", "parquet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --format parquet needs pyarrow") and err.count("\n") == 1
    assert not (experiment / "report").exists()


# ------------------------------------------------------------------------------------------ fidelity

# A screened search: every node's own trial at screen; A and C promoted (C converged at screen only, partial
# at full); D's promotion still runs. Nodes and configs as in NODES.
SCREENED_NODES = {node: NODES[node] for node in (A, B, C, D)}
SCREENED_TRIALS = [
    (A, A, 77, "completed", "partial", "mixed", 0.40),
    (B, B, 77, "completed", "failed", "failed", 0.20),
    ("promoA", A, 77, "completed", "partial-k", "degenerate", 0.55),
    (C, C, 77, "completed", "converged", "healthy", 0.80),
    (D, D, 77, "completed", "partial", "mixed", 0.30),
    ("promoC", C, 77, "completed", "partial", "mixed", 0.50),
]
SCREENED_FIDELITY = {A: "screen", B: "screen", C: "screen", D: "screen", "promoA": "full", "promoC": "full",
                     "promoD": "full"}


@pytest.fixture
def screened(tmp_path: Path) -> Path:
    return make_experiment(tmp_path / "screened", SCREENED_NODES, SCREENED_TRIALS, [("promoD", D, 77)],
                           fidelity=SCREENED_FIDELITY)


def test_the_fidelity_column_of_a_screened_experiment(screened, df):
    rows = by_trial(load(screened))
    assert str(rows["fidelity"].dtype) == "category"
    assert rows["fidelity"].astype(str).to_dict() == SCREENED_FIDELITY
    promotion = rows.loc["promoD"]  # running: from tree.jsonl
    assert (promotion["strategy"], promotion["mutation"], promotion["status"]) == ("promotion", f"promotion of {D}",
                                                                                   "running")
    assert set(df["fidelity"]) == {"full"}  # an experiment from before fidelities: every trial at full


def test_the_leaderboard_ranks_full_budget_results_first(screened, df):
    board = leaderboard(load(screened)).set_index("node_id")
    assert list(board.index) == [A, C, D, B]  # C's screen 0.80 never competes with A's full 0.55
    assert list(board["fidelity"]) == ["full", "full", "screen", "screen"]
    assert list(board["reward_mean"]) == pytest.approx([0.55, 0.50, 0.30, 0.20])
    assert list(board["classification"]) == ["partial-k", "partial", "partial", "failed"]
    assert board.loc[C, "rate_constants_R2"] == pytest.approx(0.75)  # its full trial's metrics
    assert "fidelity" not in leaderboard(df).columns  # shown only where the experiment screened


def test_effects_use_screen_rewards_and_agree_with_the_searchers_memory(screened):
    df = load(screened)
    effects = parameter_effects(df).set_index(["parameter", "direction"])
    assert effects.loc[(LR, "up"), "mean_delta"] == pytest.approx(0.80 - 0.40)
    assert effects.loc[(L1, "down"), "mean_delta"] == pytest.approx(0.30 - 0.40)
    lines = (screened / "tree.jsonl").read_text().splitlines()
    tree = Tree.from_json(json.dumps({"nodes": [json.loads(line) for line in lines]}))
    expected = {(e.parameter, e.direction): e.mean_delta for e in tree.parameter_effects()}
    assert {key: pytest.approx(value) for key, value in expected.items()} == effects["mean_delta"].to_dict()


def test_counts_best_so_far_and_convergence_are_per_fidelity(screened, df):
    plain, df = df, load(screened)
    table = counts(df)
    assert table.loc[("screen", "classification"), "trials"].to_dict() == {"converged": 1, "partial": 2, "failed": 1}
    assert table.loc[("full", "classification"), "trials"].to_dict() == {"partial-k": 1, "partial": 1}
    assert table.loc[("full", "classification", "partial"), "share"] == 0.5
    best = best_so_far(df)
    assert list(best["fidelity"]) == ["screen", "screen", "full", "screen", "screen", "full"]
    assert list(best["best_reward"]) == [0.40, 0.40, 0.55, 0.80, 0.80, 0.55]
    assert list(best["best_node"]) == [A, A, A, C, C, A]
    assert list(best["improved"]) == [True, False, True, True, False, False]
    facts = analysis.summary(df)
    assert facts["trials until the first converged"] is None  # C converged at screen only
    assert (facts["screen trials"], facts["classification: converged"], facts["best node"]) == (4, 0, A)
    assert compare(plain, df).loc["screen trials"].tolist() == [0, 4]
    assert "screen trials" not in compare(plain, plain).index
    assert "fidelity" not in best_so_far(plain) and counts(plain).index.names == ["by", "label"]


def test_the_report_of_a_screened_experiment(screened, capsys):
    assert analysis.main([str(screened)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"screened: 6 finished trials, 1 running, 4 nodes; best node {A} with full reward 0.550 "
                          "(partial-k); first converged trial: none")
    text = (screened / "report" / "report.md").read_text()
    assert "Full-budget results first" in text
    assert markdown_rows(text, "Leaderboard")[0][:5] == [A, "0.550", "1", "full", "partial-k"]
    assert "Trial promoA (seed 77 at full): reward 0.550" in text
    assert f"](../trials/node_{A}_seed_77_full)" in text


# ------------------------------------------------------------------------------------------ young experiments

ROOTS = {A: NODES[A], B: NODES[B]}
EFFECTS_TITLE = "Parameter effects (Δreward child − parent ± stderr)"
BOARD_TITLE = "Leaderboard (reward: mean ± sd over n replicates)"


def analyse(experiment: Path, capsys) -> SimpleNamespace:
    """Every view, the command (printed tables, report.md, figures) and the export of one experiment."""
    df = load(experiment)
    seen = SimpleNamespace(df=df, board=leaderboard(df), counts=counts(df), best=best_so_far(df),
                           effects=parameter_effects(df), compare=compare(df, df),
                           layout=analysis.tree_layout(analysis.nodes(df)))
    assert analysis.main([str(experiment), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    report = experiment / "report"
    for figure in analysis.FIGURES:
        assert (report / figure).stat().st_size > 5000, figure
    pd.testing.assert_frame_equal(pd.read_json(report / "trials.json", orient="table"), df)
    seen.out, seen.report = captured.out, (report / "report.md").read_text()
    return seen


def test_no_child_node_yet(tmp_path, capsys):
    """A search's whole first block: initial nodes only, so there is no parameter effect yet."""
    seen = analyse(make_experiment(tmp_path / "exp", ROOTS, TRIALS[:2], []), capsys)
    assert seen.effects.empty
    assert list(seen.effects.columns) == ["parameter", "direction", "mean_delta", "stderr", "count", "evidence"]
    assert printed_section(seen.out, EFFECTS_TITLE) == ["No parent–child pair has finished yet."]
    assert report_section(seen.report, "Parameter effects").strip().endswith("No parent–child pair has finished yet.")
    assert [row[0] for row in markdown_rows(seen.report, "Leaderboard")] == [A, B]
    assert seen.layout == {A: (0, 0), B: (0, 1)}


def test_no_trial_of_a_classification_yet(tmp_path, capsys):
    """Every trial so far raised: all failed, no metric column at all, nothing converged or partial."""
    errors = [(A, A, 77, "error", "failed", "unknown", 0.0), (B, B, 77, "error", "failed", "unknown", 0.0)]
    seen = analyse(make_experiment(tmp_path / "exp", ROOTS, errors, []), capsys)
    assert not {"rate_constants_R2", "avg_slope_ratio"} & set(seen.df.columns)
    assert seen.counts["trials"].to_dict() == {("classification", "failed"): 2, ("diagnosis", "unknown"): 2}
    assert markdown_rows(seen.report, "Trials by classification and diagnosis") == [
        ["classification", "failed", "2", "1.000"], ["diagnosis", "unknown", "2", "1.000"]]
    assert seen.compare.loc["classification: failed"].tolist() == [2, 2]
    assert "classification: converged" not in seen.compare.index
    assert list(seen.board.columns) == ["node_id", "reward_mean", "reward_sd", "n", "classification", "mutation",
                                        "parent_id"]
    assert seen.out.splitlines()[0].endswith(f"best node {A} with reward 0.000 (failed); first converged trial: none")


def test_a_running_trial_without_metrics(tmp_path, capsys):
    seen = analyse(make_experiment(tmp_path / "exp", ROOTS, TRIALS[:1], [(B, B, 77)]), capsys)
    running = by_trial(seen.df).loc[B]
    assert running["status"] == "running" and pd.isna(running["trial_number"])
    assert math.isnan(running["reward"]) and math.isnan(running["rate_constants_R2"])
    assert list(seen.board["node_id"]) == [A] and [row[0] for row in markdown_rows(seen.report, "Leaderboard")] == [A]
    assert seen.out.startswith(f"exp: 1 finished trials, 1 running, 2 nodes; best node {A} with reward 0.400")
    assert seen.compare.loc["running trials"].tolist() == [1, 1]
    assert seen.layout == {A: (0, 0), B: (0, 1)}


def test_exactly_one_trial(tmp_path, capsys):
    seen = analyse(make_experiment(tmp_path / "exp", {A: NODES[A]}, TRIALS[:1], []), capsys)
    assert len(seen.df) == 1
    assert markdown_rows(seen.report, "Leaderboard") == [
        [A, "0.400", "1", "partial-k", "0.700", "1.050", "1.000", "0.970", "baseline", ""]]
    assert printed_section(seen.out, BOARD_TITLE)[2].split() == [
        "1", A, "0.400", "1", "partial-k", "0.700", "1.050", "1.000", "0.970", "baseline"]
    assert seen.counts.loc[("classification", "partial-k"), "share"] == 1.0
    assert (list(seen.best["improved"]), list(seen.best["best_node"])) == ([True], [A])
    assert seen.effects.empty and seen.layout == {A: (0, 0)}
    assert f"## Best node {A}" in seen.report


def test_no_finished_trial_yet(tmp_path, capsys):
    """trials.csv has only its header and tree.jsonl lists the initial trials as running."""
    seen = analyse(make_experiment(tmp_path / "exp", ROOTS, [], [(A, A, 77), (B, B, 77)]), capsys)
    assert list(seen.df["status"]) == ["running", "running"] and seen.df["trial_number"].isna().all()
    assert seen.board.empty and seen.counts.empty and seen.best.empty and seen.effects.empty
    assert seen.compare.loc["finished trials"].tolist() == [0, 0]
    assert seen.compare.loc["best node"].tolist() == [None, None]
    assert seen.layout == {A: (0, 0), B: (0, 1)}
    assert seen.out.startswith("exp: 0 finished trials, 2 running, 2 nodes; no trial has finished yet\n")
    assert printed_section(seen.out, BOARD_TITLE) == ["No trial has finished yet."]
    for heading in ("Leaderboard", "Trials by classification and diagnosis", "Best so far"):
        assert report_section(seen.report, heading).strip().endswith("No trial has finished yet."), heading
    assert "## Best node" not in seen.report


@pytest.mark.slow
def test_the_command_on_a_search_in_its_first_block(tmp_path, record_property):
    """The real smoke search (four initial nodes, so no parameter effect), analysed as soon as a trial has
    finished: while the search still runs if it is caught running, else right after it ended."""
    from conftest import kill_ray_of
    from test_search import SMOKE, environment, search_command

    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths have a length limit
    storage = tmp_path / "results"
    args = ["--space", str(SMOKE), "--num-trials", "4", "--concurrency", "2", "--name", "live", "--storage",
            str(storage)]
    with (tmp_path / "search.log").open("w") as log:
        search = subprocess.Popen(search_command(*args), env=environment(ray_tmp, tmp_path), cwd=tmp_path,
                                  stdout=log, stderr=log)
    try:
        deadline = time.time() + 300  # seconds on an idle machine; generous for a loaded one
        while time.time() < deadline and search.poll() is None and not (storage / "live" / "trials.csv").is_file():
            time.sleep(0.1)
        while_running = search.poll() is None
        assert (storage / "live" / "trials.csv").is_file(), "no trial finished in time"
        record_property("analysed_while_the_search_ran", while_running)
        print(f"analysed {'while the search ran' if while_running else 'after the search ended'}")
        result = subprocess.run([sys.executable, "-m", "metabo_tune.analysis", str(storage / "live")],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        report = (storage / "live" / "report" / "report.md").read_text()
        assert markdown_rows(report, "Leaderboard")
        assert "No parent–child pair has finished yet." in report_section(report, "Parameter effects")
        assert search.wait(timeout=120) == 0, (tmp_path / "search.log").read_text()[-3000:]
    finally:
        search.kill()
        search.wait()
        kill_ray_of(ray_tmp, tmp_path)
        shutil.rmtree(ray_tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------ bad input


def no_directory(path: Path) -> Path:
    return path / "missing"


def a_file(path: Path) -> Path:
    (path / "trials.csv").write_text("trial_id\n")
    return path / "trials.csv"


def no_table(path: Path) -> Path:
    (path / "not_an_experiment").mkdir()
    return path / "not_an_experiment"


def just_started(path: Path) -> Path:
    (path / "exp").mkdir()
    (path / "exp" / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    return path / "exp"


def header_only(path: Path) -> Path:
    experiment = make_experiment(path / "exp")
    lines = (experiment / "trials.csv").read_text().splitlines(keepends=True)
    (experiment / "trials.csv").write_text(lines[0])
    (experiment / "tree.jsonl").unlink()  # no running trial either: nothing to show
    return experiment


def empty_file(path: Path) -> Path:
    experiment = make_experiment(path / "exp")
    (experiment / "trials.csv").write_text("")
    return experiment


def foreign_table(path: Path) -> Path:
    experiment = make_experiment(path / "exp")
    (experiment / "trials.csv").write_text("garbage,not,a,table\n1,2,3,4\n")
    return experiment


def binary_file(path: Path) -> Path:
    experiment = make_experiment(path / "exp")
    (experiment / "trials.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00garbage,not,a,table\n1,2,3,4\n")
    return experiment


def corrupted_rows(path: Path) -> Path:
    experiment = make_experiment(path / "exp")
    header = (experiment / "trials.csv").read_text().splitlines()[0]
    (experiment / "trials.csv").write_text(header + "\nx,y,z\n\"unterminated,1,2\n")
    return experiment


def seed_not_a_number(path: Path) -> Path:
    experiment = make_experiment(path / "exp")
    text = (experiment / "trials.csv").read_text()
    (experiment / "trials.csv").write_text(text.replace(",78,", ",seventy-eight,"))
    return experiment


def broken_tree(path: Path) -> Path:
    experiment = make_experiment(path / "exp")
    (experiment / "tree.jsonl").write_text('{"node_id": "a"}\n')
    return experiment


@pytest.mark.parametrize(("make", "message"), [
    (no_directory, "no such directory"), (a_file, "a file, not an experiment directory"),
    (no_table, "not an experiment directory (no trials.csv)"),
    (just_started, "no trial has finished yet (no trials.csv)"),
    (header_only, "no trial has finished yet (the table has no rows)"), (empty_file, "empty file"),
    (foreign_table, "not a trials table (the header lacks trial_id"),
    (binary_file, "not a readable trials table (Error tokenizing data"),
    (corrupted_rows, "not a readable trials table (Error tokenizing data"),
    (seed_not_a_number, "not a readable trials table ("),
    (broken_tree, "tree.jsonl: not a tree of nodes (a line lacks one of")])
def test_bad_input_is_one_clear_line(tmp_path, capsys, make, message):
    directory = make(tmp_path)
    with pytest.raises(AnalysisError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(directory)
    assert analysis.main([str(directory)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err and captured.err.count("\n") == 1
    assert captured.out == ""


def test_command_line_entry_point_and_imports(tmp_path):
    """`python -m` works, bad input exits 2 with one line, and neither Ray nor torch is imported."""
    result = subprocess.run([sys.executable, "-m", "metabo_tune.analysis", str(tmp_path / "missing")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr == f"error: {tmp_path / 'missing'}: no such directory\n"
    probe = "import sys, metabo_tune.analysis; print(sorted({'ray', 'torch'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60).stdout.strip() == "[]"


def test_the_report_sets_the_best_node_beside_the_regression_of_the_same_data(experiment, capsys):
    """The search writes regression/metrics.json (the known-form regression on the experiment's data); the
    command prints it under the best node and report.md has both in one table."""
    (experiment / "regression").mkdir()
    (experiment / "regression" / "metrics.json").write_text(json.dumps(
        {"method": "regression", "classification": "partial-k", "rate_constants_R2": 0.9999,
         "embedding_cluster_acc": 0.97}))
    assert analysis.main([str(experiment)]) == 0
    printed = printed_section(capsys.readouterr().out, "Beside the known-form regression on the same data")
    assert any(line.startswith(f"best node {C} (GNN)") for line in printed)
    assert any(line.startswith("known-form regression") and "partial-k" in line for line in printed)
    rows = markdown_rows((experiment / "report" / "report.md").read_text(), "Beside the known-form regression")
    assert [row[0] for row in rows] == [f"best node {C} (GNN)", "known-form regression"]
    assert rows[1][1] == "partial-k"


def test_an_experiment_without_a_regression_has_no_baseline_section(experiment):
    assert analysis.regression_baseline(experiment) is None
    assert analysis.main([str(experiment)]) == 0
    assert "known-form regression" not in (experiment / "report" / "report.md").read_text()
