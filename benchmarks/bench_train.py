"""Training speed, one torch thread: ms per iteration of the mission's base config (time_step 1 and 4) and
of configs/joint_recovery.yaml in each of its phases (conservation only; the residual fit, its refreshes
included), the residual refresh alone, the same for the noisy-data configuration (the base of
search_spaces/noisy_rank_50.yaml: the weak form on σ_m 0.01 data), the same two phases for configs/free_forms.yaml
(the forms learned), and the projected time of one trial at the mission budget (72 000 iterations) including data,
evaluation and plots, with the free forms' training time over the known forms' (from CPU ms, which another process
on the core does not inflate).

    python benchmarks/bench_train.py [--iterations 500] [--windows 10] [--compare GIT_REF] [--set KEY=VALUE ...]
                                     [--cases base,base_ts4,joint_conservation,joint_residual,noisy_...,free_...]

Every case runs in its own process. `--compare REF` times the code of a git commit in the same process:
its package, extracted with `git archive` and imported as `metabo_tune_ref`, trains a second trainer of
the same case, and the two alternate window by window (ABBA), so that both see the same machine. The
machine is shared and noisy: each figure is the median over the windows (min and max shown), in
wall-clock ms and in CPU ms (the thread's own time, which another process on the core does not
inflate). The residual phase starts at its first iteration without the training before it: its cost
per iteration does not depend on the weights.

`--scale` times configs/e_coli_core.yaml (the known-form joint configuration) on networks of growing size instead:
random 100/256, 400/1024, 1000/2600, 2000/5000, E. coli core and iJO1366 (`--networks` picks some). For each, one
process simulates (the 2 880-frame training trajectory timed alone, and the whole dataset), and a fresh process
loads it from the cache and trains: ms per iteration in the conservation and the residual phase, one residual
refresh, and the training process's peak resident memory. `--csv` writes the table and `--figure` plots ms per
iteration against nnz(S).

    python benchmarks/bench_train.py --scale [--iterations 100] [--windows 3] [--networks random_100,iJO1366]
                                     [--csv docs/results/scale.csv] [--figure docs/figures/scale.png]
                                     [--device cuda] [--parallel 4]

`--device cuda` trains on the GPU (wall times, the GPU waited for at each window's ends, and its peak allocation);
`--parallel N` also runs N trainings of each network at once, each its own process, as a search with
`--gpus-per-trial 1/N` would on one GPU, and reports their ms per iteration and throughput against one alone.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JOINT = "configs/joint_recovery.yaml"
NOISY = "search_spaces/noisy_rank_50.yaml"  # its base: joint_recovery + the weak form, on noisy data
FREE = "configs/free_forms.yaml"  # the forms learned: free MLP_sub and MLP_node with their priors
MISSION = "search_spaces/homeo_rank_50.yaml"
CASES = {  # name: (config, overrides, phase, share of --iterations per window)
    "base": (MISSION, [], "start", 1.0),
    "base_ts4": (MISSION, ["training.recurrent_training=true", "training.time_step=4"], "start", 0.25),
    "joint_conservation": (JOINT, [], "start", 1.0),
    "joint_residual": (JOINT, [], "residual", 1.0),
    "noisy_conservation": (NOISY, [], "start", 1.0),
    "noisy_residual": (NOISY, [], "residual", 1.0),
    "free_conservation": (FREE, [], "start", 1.0),
    "free_residual": (FREE, [], "residual", 1.0),
}
PHASED = {JOINT: "joint", FREE: "free"}  # configs whose trial time is projected from their two phases' cases
WARM_UP = 100  # iterations before the first window: allocator, first sampling chunk, first refresh
SCALE_CONFIG = "configs/e_coli_core.yaml"
NETWORKS = {  # name: overrides of SCALE_CONFIG
    **{f"random_{n}": ["simulation.network=random", f"simulation.n_metabolites={n}", f"simulation.n_reactions={r}"]
       for n, r in ((100, 256), (400, 1024), (1000, 2600), (2000, 5000))},
    "e_coli_core": ["simulation.network=e_coli_core"],
    "iJO1366": ["simulation.network=iJO1366"],
}
SCALE_WARM_UP = 10
REF_PACKAGE = "metabo_tune_ref"


def extract_ref(ref: str, directory: Path) -> None:
    """`ref`'s metabo_tune under directory/metabo_tune_ref, its imports renamed to match."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "metabo_tune"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True)
    (directory / "metabo_tune").rename(directory / REF_PACKAGE)
    for path in (directory / REF_PACKAGE).glob("*.py"):
        path.write_text(re.sub(r"\bmetabo_tune\b", REF_PACKAGE, path.read_text()))


def make_trainer(package: str, case: str, extra: list[str]):
    config, overrides, phase, _ = CASES[case]
    overrides = [*overrides, *extra]
    load_config = importlib.import_module(f"{package}.config").load_config
    simulate = importlib.import_module(f"{package}.simulate")
    cfg = load_config(REPO / config, overrides)
    noise = getattr(cfg.training, "measurement_noise_level", 0.0)  # a reference commit may predate the key
    dataset = simulate.load_or_simulate(cfg.simulation, **({"measurement_noise_level": noise} if noise else {}))
    trainer = importlib.import_module(f"{package}.train").Trainer(cfg, dataset.observed, device="cpu")
    if phase == "residual":
        trainer.iteration = trainer.homeostasis_losses.residual_start
    trainer.run(until=trainer.iteration + WARM_UP)
    return trainer


def worker(case: str, iterations: int, windows: int, ref_dir: str | None, extra: list[str]) -> dict:
    """Time `windows` windows of `iterations` iterations of one case, alternating with the reference."""
    import torch

    torch.set_num_threads(1)
    iterations = max(1, int(iterations * CASES[case][3]))
    packages = {"this tree": "metabo_tune"}
    if ref_dir:
        sys.path.insert(0, ref_dir)
        packages = {"ref": REF_PACKAGE, "this tree": "metabo_tune"}
    trainers = {label: make_trainer(package, case, extra) for label, package in packages.items()}
    for label, package in packages.items():
        imported = Path(importlib.import_module(f"{package}.train").__file__)
        if not imported.is_relative_to(Path(ref_dir) if label == "ref" else REPO):
            raise SystemExit(f"error: {label} imported {imported}")
    for trainer in trainers.values():
        if trainer.iteration + windows * iterations > trainer.total_iterations:
            raise SystemExit(f"error: {case}: {windows} windows of {iterations} iterations run past the end")
    out = {label: {"wall": [], "cpu": []} for label in trainers}
    labels = list(trainers)
    for window in range(windows):
        for label in labels if window % 2 == 0 else labels[::-1]:
            trainer = trainers[label]
            start_wall, start_cpu = time.perf_counter(), time.thread_time()
            trainer.run(until=trainer.iteration + iterations)
            out[label]["cpu"].append((time.thread_time() - start_cpu) / iterations * 1e3)
            out[label]["wall"].append((time.perf_counter() - start_wall) / iterations * 1e3)
    if CASES[case][2] == "residual":  # the refresh alone, ms per call
        for window in range(windows):
            for label in labels if window % 2 == 0 else labels[::-1]:
                start_wall, start_cpu = time.perf_counter(), time.thread_time()
                trainers[label].homeostasis_losses.residual_moments()
                out[label].setdefault("refresh_cpu", []).append((time.thread_time() - start_cpu) * 1e3)
                out[label].setdefault("refresh_wall", []).append((time.perf_counter() - start_wall) * 1e3)
    return out


def scale_simulate(network: str) -> dict:
    """Simulate one network into the cache; the training trajectory's integration timed alone."""
    import numpy as np

    from metabo_tune import simulate
    from metabo_tune.config import load_config

    cfg = load_config(REPO / SCALE_CONFIG, NETWORKS[network]).simulation
    start = time.perf_counter()
    net, truth = simulate.network_and_truth(cfg)
    network_s = time.perf_counter() - start
    c0 = np.random.default_rng(0).uniform(cfg.concentration_min, cfg.concentration_max, net.n_metabolites)
    start = time.perf_counter()
    simulate.integrate(net, truth, c0, cfg.n_frames, cfg.delta_t)
    trajectory_s = time.perf_counter() - start
    start = time.perf_counter()
    simulate.load_or_simulate(cfg)
    return {"network_s": network_s, "trajectory_s": trajectory_s, "dataset_s": time.perf_counter() - start}


def scale_train(network: str, iterations: int, windows: int, device: str = "cpu") -> dict:
    """ms per iteration in both phases, one refresh, and the peak memory of a process that only trains (on a GPU
    also the device's peak allocation; its wall times wait for the device at each window's ends)."""
    import resource

    import numpy as np
    import torch

    from metabo_tune.config import load_config
    from metabo_tune.simulate import load_or_simulate
    from metabo_tune.train import Trainer

    torch.set_num_threads(1)
    cuda = device.startswith("cuda")

    def synchronised() -> None:
        if cuda:
            torch.cuda.synchronize()

    cfg = load_config(REPO / SCALE_CONFIG, NETWORKS[network])
    dataset = load_or_simulate(cfg.simulation)
    net = dataset.observed.network
    start = time.perf_counter()
    trainer = Trainer(cfg, dataset.observed, device=device)
    out: dict = {"n_metabolites": net.n_metabolites, "n_reactions": net.n_reactions,
                 "nnz_S": int(np.count_nonzero(net.stoichiometry)), "n_edges": len(net.substrate_metabolite),
                 "n_pairs": int(trainer.model.pair_metabolite.shape[0]),
                 "sparse_S": bool(trainer.model.sparse_stoichiometry), "trainer_setup_s": time.perf_counter() - start}
    for phase in ("conservation", "residual"):
        if phase == "residual":
            trainer.iteration = trainer.homeostasis_losses.residual_start  # its first iteration refreshes
        trainer.run(until=trainer.iteration + SCALE_WARM_UP)
        wall, cpu = [], []
        for _ in range(windows):
            synchronised()
            start_wall, start_cpu = time.perf_counter(), time.thread_time()
            trainer.run(until=trainer.iteration + iterations)
            synchronised()
            cpu.append((time.thread_time() - start_cpu) / iterations * 1e3)
            wall.append((time.perf_counter() - start_wall) / iterations * 1e3)
        out[f"{phase}_ms_per_it"], out[f"{phase}_cpu_ms_per_it"] = statistics.median(wall), statistics.median(cpu)
    start = time.perf_counter()
    trainer.homeostasis_losses.residual_moments()
    synchronised()
    out["refresh_s"] = time.perf_counter() - start
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda:
        out["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_scale(args: argparse.Namespace) -> None:
    import pandas as pd

    names = args.networks.split(",")
    unknown = sorted(set(names) - set(NETWORKS))
    if unknown:
        raise SystemExit(f"error: unknown network {unknown[0]}; choose from {', '.join(NETWORKS)}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["METABO_TUNE_CACHE"] = str(Path(scratch) / "cache")
        for name in names:
            row = {"network": name}
            for stage in ("simulate", "train"):
                row |= scale_workers(args, stage, name, 1)[0]
            if args.parallel > 1:  # as many trials at once on the one device (or core), each its own process
                alone = row["conservation_ms_per_it"]
                shared = [out["conservation_ms_per_it"] for out in scale_workers(args, "train", name, args.parallel)]
                row["parallel_ms_per_it"] = statistics.median(shared)
                row["parallel_throughput_x"] = args.parallel * alone / row["parallel_ms_per_it"]
            rows.append(row)
            print(f"{name} done", file=sys.stderr)
    table = pd.DataFrame(rows)
    measure = "conservation_cpu_ms_per_it" if args.device == "cpu" else "conservation_ms_per_it"
    mission = table.loc[table["network"] == "random_100", measure]
    if not mission.empty:
        table["vs_mission"] = table[measure] / float(mission.iloc[0])
    columns = ["network", "n_metabolites", "n_reactions", "nnz_S", "n_pairs", "sparse_S", "conservation_ms_per_it",
               "conservation_cpu_ms_per_it", "residual_ms_per_it", "residual_cpu_ms_per_it", "refresh_s", "peak_rss_mb",
               "trajectory_s", "dataset_s", "trainer_setup_s"]
    columns += [column for column in ("vs_mission", "peak_device_mb", "parallel_ms_per_it", "parallel_throughput_x")
                if column in table]
    print(f"{SCALE_CONFIG} on {args.device}, 1 torch thread; wall and CPU (the thread's own) ms per iteration, "
          f"median over {args.windows} windows of {args.iterations} iterations; vs_mission: {measure} against "
          f"random_100" + (f"; parallel: {args.parallel} trials at once, wall ms per iteration of each and their "
                           f"throughput against one alone" if args.parallel > 1 else ""))
    print(table[columns].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    if args.csv:
        table[columns].round(4).to_csv(args.csv, index=False)
    if args.figure:
        scale_figure(table, args.figure)


def scale_workers(args: argparse.Namespace, stage: str, name: str, count: int) -> list[dict]:
    """`count` scale workers of one stage run at once, each in its own process: their JSON results."""
    command = [sys.executable, str(Path(__file__).resolve()), "--scale-worker", f"{stage}:{name}",
               "--iterations", str(args.iterations), "--windows", str(args.windows), "--device", args.device]
    running = [subprocess.Popen(command, env=os.environ | {"PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(count)]
    results = []
    for process in running:
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            for other in running:  # none left behind on the device
                other.kill()
            raise SystemExit(f"error: {name} ({stage}) failed:\n{stderr}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def scale_figure(table, path: str) -> None:
    """Cost and memory against nnz(S): the random networks as lines, the models as squares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    table = table.sort_values("nnz_S")
    random = table["network"].str.startswith("random_")
    fig, (cost, memory) = plt.subplots(1, 2, figsize=(10, 4))
    for (column, label), colour in zip((("conservation_cpu_ms_per_it", "conservation phase (90 %)"),
                                        ("residual_cpu_ms_per_it", "residual phase (last 10 %)")), ("C0", "C1"),
                                       strict=True):
        cost.loglog(table.loc[random, "nnz_S"], table.loc[random, column], "o-", color=colour,
                    label=f"{label}, random")
        cost.loglog(table.loc[~random, "nnz_S"], table.loc[~random, column], "s", color=colour, markersize=8,
                    label=f"{label}, cobra model")
    memory.loglog(table.loc[random, "nnz_S"], table.loc[random, "peak_rss_mb"], "o-", color="C2")
    memory.loglog(table.loc[~random, "nnz_S"], table.loc[~random, "peak_rss_mb"], "s", color="C2", markersize=8)
    for _, row in table.iterrows():
        name = row["network"].replace("random_", "random ")
        cost.annotate(name, (row["nnz_S"], row["conservation_cpu_ms_per_it"]), fontsize=7, xytext=(4, -11),
                      textcoords="offset points")
        memory.annotate(name, (row["nnz_S"], row["peak_rss_mb"]), fontsize=7, xytext=(4, -11),
                        textcoords="offset points")
    anchor = table.iloc[0]
    line = np.array([table["nnz_S"].min(), table["nnz_S"].max()])
    cost.loglog(line, anchor["conservation_cpu_ms_per_it"] * line / anchor["nnz_S"], "k:", label="∝ nnz(S)")
    cost.set(xlabel="nnz(S)", ylabel="CPU ms per iteration (1 thread)", title="training cost against network size")
    cost.legend(fontsize=7)
    memory.set(xlabel="nnz(S)", ylabel="peak resident memory of training (MB)", title="memory")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_worker(case: str, args: argparse.Namespace, ref_dir: Path | None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", case,
               "--iterations", str(args.iterations), "--windows", str(args.windows)]
    if ref_dir is not None:
        command += ["--ref-dir", str(ref_dir)]
    command += [item for override in args.set for item in ("--set", override)]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"error: {case} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):7.3f} ({min(values):.3f}–{max(values):.3f})"


def trial_overhead(cases: dict[str, dict], extra: list[str]) -> None:
    """Data, evaluation and plots of one trial (this tree), and the projected trials."""
    import torch

    from metabo_tune import metrics, plots
    from metabo_tune.config import load_config
    from metabo_tune.simulate import load_or_simulate, simulate
    from metabo_tune.train import Trainer

    def seconds(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    torch.set_num_threads(1)
    cfg = load_config(REPO / MISSION)
    simulate_s = seconds(lambda: simulate(cfg.simulation))
    cached_s = seconds(lambda: load_or_simulate(cfg.simulation))
    dataset = load_or_simulate(cfg.simulation)
    trainer = Trainer(cfg, dataset.observed, device="cpu")
    trainer.run(until=200)
    result = trainer.result()
    eval_s = seconds(lambda: metrics.compute_metrics(result.model, dataset, status="completed",
                                                     loss_history=result.loss_history, training_time_s=1.0,
                                                     iterations=result.iterations))
    with tempfile.TemporaryDirectory() as out:
        plot_s = seconds(lambda: plots.write_trial_plots(result.model, dataset, result.loss_history, out))
    overhead = cached_s + eval_s + plot_s
    print(f"\ndata: simulate {simulate_s:.2f} s (first trial on a machine), cached load {cached_s:.2f} s; "
          f"evaluation {eval_s:.2f} s; plots {plot_s:.2f} s")
    total = trainer.total_iterations
    if "base" in cases:
        training_s = statistics.median(cases["base"]["wall"]) * total / 1e3
        print(f"projected base trial ({total} iterations, cached data): {(training_s + overhead) / 60:.2f} min")
    projected = {}
    for config, prefix in PHASED.items():
        first, residual = f"{prefix}_conservation", f"{prefix}_residual"
        if first not in cases or residual not in cases:
            continue
        trainer = Trainer(load_config(REPO / config, extra), dataset.observed, device="cpu")
        start = trainer.homeostasis_losses.residual_start
        training_s = (statistics.median(cases[first]["cpu"]) * start
                      + statistics.median(cases[residual]["cpu"]) * (trainer.total_iterations - start)) / 1e3
        projected[config] = training_s
        print(f"projected {Path(config).name} trial ({trainer.total_iterations} iterations, residual phase from "
              f"{start}, CPU ms): {(training_s + overhead) / 60:.2f} min")
    if len(projected) == 2:
        print(f"free forms / known forms, training per trial: {projected[FREE] / projected[JOINT]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=500,
                        help="iterations per timing window (a quarter of them at time_step 4)")
    parser.add_argument("--windows", type=int, default=10, help="timing windows per case (and tree)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="an override applied to every case (repeatable): what a variant of a config costs")
    parser.add_argument("--compare", metavar="GIT_REF", help="also time this commit, alternating with this tree")
    parser.add_argument("--scale", action="store_true", help="time the network sizes of NETWORKS instead")
    parser.add_argument("--networks", default=",".join(NETWORKS), help="with --scale: a comma-separated subset of "
                                                                      + ", ".join(NETWORKS))
    parser.add_argument("--device", default="cpu", help="with --scale: train on this torch device (cuda: wall "
                        "times wait for the GPU at each window's ends, and vs_mission compares them)")
    parser.add_argument("--parallel", type=int, default=1, help="with --scale: also time this many trials of each "
                        "network training at once, each its own process (on one GPU: the search's "
                        "--gpus-per-trial 1/N)")
    parser.add_argument("--csv", help="with --scale: write the table here")
    parser.add_argument("--figure", help="with --scale: write the figure here (with --from-csv: from that table)")
    parser.add_argument("--from-csv", help="with --scale --figure: plot an earlier --csv instead of measuring")
    parser.add_argument("--scale-worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--ref-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.scale and (args.csv or args.figure or args.from_csv):
        parser.error("--csv, --figure and --from-csv apply with --scale only; the cases' table is printed")
    sys.path.insert(0, str(REPO))  # this tree's metabo_tune, installed or not
    if args.worker:
        print(json.dumps(worker(args.worker, args.iterations, args.windows, args.ref_dir, args.set)))
        return
    if args.scale_worker:
        stage, name = args.scale_worker.split(":")
        print(json.dumps(scale_simulate(name) if stage == "simulate"
                         else scale_train(name, args.iterations, args.windows, args.device)))
        return
    if args.scale and args.from_csv:
        import pandas as pd

        scale_figure(pd.read_csv(args.from_csv), args.figure)
        return
    if args.scale:
        run_scale(args)
        return
    cases = args.cases.split(",")
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise SystemExit(f"error: unknown case {unknown[0]}; choose from {', '.join(CASES)}")

    with tempfile.TemporaryDirectory() as scratch:
        os.environ["METABO_TUNE_CACHE"] = str(Path(scratch) / "cache")  # simulated once, the same data for both
        ref_dir = None
        if args.compare:
            ref_dir = Path(scratch) / "ref"
            ref_dir.mkdir()
            extract_ref(args.compare, ref_dir)
        results = {}
        for case in cases:
            results[case] = run_worker(case, args, ref_dir)
            print(f"{case} done", file=sys.stderr)

        import torch

        print(f"torch {torch.__version__}, 1 thread; ms per iteration, median (min–max) over {args.windows} "
              f"windows of {args.iterations} iterations" + (f"; ref = {args.compare}" if args.compare else ""))
        print(f"{'case':<20} {'tree':<10} {'wall ms/it':>24} {'CPU ms/it':>24}")
        for case in cases:
            for label, values in results[case].items():
                print(f"{case:<20} {label:<10} {cell(values['wall']):>24} {cell(values['cpu']):>24}")
                if "refresh_wall" in values:
                    print(f"{'  residual refresh':<20} {label:<10} {cell(values['refresh_wall']):>21} ms "
                          f"{cell(values['refresh_cpu']):>21} ms")
            if args.compare:
                ref, new = (results[case][label] for label in ("ref", "this tree"))
                ratio = statistics.median(r / n for r, n in zip(ref["cpu"], new["cpu"], strict=True))
                print(f"{'':<20} {'speed-up':<10} {'':>24} {ratio:>23.2f}×")
        trial_overhead({case: values["this tree"] for case, values in results.items()}, args.set)


if __name__ == "__main__":
    main()
