"""One node of a benchmark log trained again at one fidelity, its reward's inputs printed every 10 % of its iterations
(the interim reports a search trial makes), for docs/results.md, "The screen under-ranks slow k learners".

    python docs/results/bench_free_forms/screen_trace.py COMPLETIONS.csv NODE_ID NETWORK {screen,full} OUT.csv \
        [--set section.key=VALUE ...] [--at 0,10,100] [--final FINAL.json]

The node's values and seed come from its row in COMPLETIONS.csv (a bench_search log); the space is
search_spaces/free_forms.yaml with its simulation seed set to NETWORK. The last row is the trial's final report: it
equals the logged reward when nothing is --set (the training is deterministic). --at reports at the iterations given
instead (0: before the first step) and stops after the last. --final writes every scalar of the trial's final report
(the group solve's included) to FINAL.json.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from bench_search import on_network

from metabo_tune import trainable
from metabo_tune.simulate import load_or_simulate
from metabo_tune.space import load_space
from metabo_tune.train import Trainer

SPACE = Path(__file__).resolve().parents[3] / "search_spaces" / "free_forms.yaml"
COLUMNS = ("rate_constants_R2", "MLP_sub_shape_R2_s1", "avg_slope_ratio", "embedding_cluster_acc", "reward",
           "classification")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("completions")
    parser.add_argument("node_id")
    parser.add_argument("network", type=int)
    parser.add_argument("fidelity", choices=("screen", "full"))
    parser.add_argument("out")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--at", type=lambda text: [int(x) for x in text.split(",")], default=None)
    parser.add_argument("--final", default=None, metavar="FINAL.json")
    args = parser.parse_args()
    log = pd.read_csv(args.completions, dtype={"node_id": str})
    row = log[log["node_id"] == args.node_id].iloc[0]
    values = json.loads(row["values"]) | {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    torch.set_num_threads(1)
    space = on_network(load_space(SPACE), args.network)
    cfg = space.config_for(values, seed=int(row["seed"]), fidelity=args.fidelity)
    dataset = load_or_simulate(cfg.simulation, measurement_noise_level=cfg.training.measurement_noise_level)
    trainer = Trainer(cfg, dataset.observed, device="cpu")
    every = max(1, trainer.total_iterations // trainable.REPORTS_PER_TRIAL)
    stops = args.at or range(every, trainer.total_iterations + every, every)
    interim = dataclasses.replace(dataset, heldout=None)
    rows = []
    for stop in stops:
        trainer.run(until=stop)
        metrics = trainable._metrics(trainer, dataset if trainer.done else interim, space)
        rows.append({"iteration": trainer.iteration, **{key: metrics.get(key) for key in COLUMNS}})
        print(json.dumps(rows[-1]), flush=True)
        if trainer.done:
            if args.final:
                scalars = {key: value for key, value in metrics.items() if isinstance(value, (int, float, str))}
                Path(args.final).write_text(json.dumps(scalars, indent=1) + "\n")
            break
    pd.DataFrame(rows).assign(node_id=args.node_id, network=args.network, fidelity=args.fidelity,
                              set="; ".join(args.set)).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
