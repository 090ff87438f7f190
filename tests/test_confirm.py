import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from metabo_tune import sweep
from metabo_tune.config import config_from_dict
from metabo_tune.confirm import fresh_seeds, main
from metabo_tune.train import run_trial

TINY = {
    "simulation": {"n_metabolites": 20, "n_reactions": 30, "n_frames": 300},
    "graph_model": {"hidden_dim_sub": 16, "n_layers_sub": 3, "hidden_dim_node": 16},
    "training": {"data_augmentation_loop": 10, "learning_rate_k": 5e-3, "seed": 77},
}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METABO_TUNE_CACHE", str(tmp_path / "cache"))


def write_experiment(directory: Path, train: bool) -> Path:
    """An experiment directory as the search leaves it: trials.csv rows pointing at trial directories.
    Node 'good' (seeds 77 and 0) outranks node 'weak'. Without `train` a trial directory holds only the
    config.yaml that confirm reads."""
    rows = []
    for node, seed, reward in (("good", 77, 0.7), ("good", 0, 0.6), ("weak", 77, 0.2)):
        trial_dir = directory / "trials" / f"node_{node}_seed_{seed}"
        lr = 5e-3 if node == "good" else 1e-4
        cfg = config_from_dict(TINY | {"training": TINY["training"] | {"seed": seed, "learning_rate_k": lr}})
        if train:
            run_trial(cfg, trial_dir, show_progress=False)
        else:
            trial_dir.mkdir(parents=True)
            (trial_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        rows.append({"trial_id": f"{node}{seed}", "node_id": node, "parent_id": "", "strategy": "initial",
                     "mutation": "baseline",
                     "seed": seed, "status": "completed", "reward": reward, "classification": "partial",
                     "trial_dir": f"trials/node_{node}_seed_{seed}"})
    with open(directory / "trials.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return directory


@pytest.fixture
def experiment(tmp_path):
    return write_experiment(tmp_path / "exp", train=True)


def test_fresh_seeds_skip_the_seeds_the_search_used():
    assert fresh_seeds({0, 2, 77}, 3) == [1, 3, 4]
    assert fresh_seeds(set(), 2) == [0, 1]


def test_confirm_retrains_the_best_node_on_fresh_seeds(experiment, capsys):
    code = main([str(experiment), "--n-seeds", "2"])
    out_dir = experiment / "confirm" / "node_good"
    per_seed = list(csv.DictReader((out_dir / "confirm.csv").read_text().splitlines()))
    assert [row["seed"] for row in per_seed] == ["1", "2"]  # 0 and 77 were the search's
    # 75 iterations recover no rate constant (R² ~ 0.001 on this problem): nothing converges, exit 1
    assert code == 1
    assert all(row["classification"] != "converged" for row in per_seed)
    # each seed is a full trial of the node's config with only the seed changed
    trained = json.loads((out_dir / "seed_1" / "metrics.json").read_text())
    assert float(per_seed[0]["rate_constants_R2"]) == pytest.approx(trained["rate_constants_R2"])
    node_config = (experiment / "trials" / "node_good_seed_77" / "config.yaml").read_text()
    assert (out_dir / "seed_1" / "config.yaml").read_text() == node_config.replace("seed: 77", "seed: 1")
    report = capsys.readouterr().out
    assert report == (out_dir / "confirm.md").read_text()
    assert re.search(r"^\| rate_constants_R2 +\|", report, re.MULTILINE)
    assert "mean ± sd" in report and "seed 2" in report


def test_confirm_a_named_node_with_given_seeds(experiment):
    assert main([str(experiment), "--node", "weak", "--seeds", "5", "6"]) == 1
    assert sorted(p.name for p in (experiment / "confirm" / "node_weak").glob("seed_*")) == ["seed_5", "seed_6"]


@pytest.mark.parametrize(("labels", "code"), [(("converged", "converged"), 0), (("converged", "partial-k"), 1)])
def test_exit_code_is_0_only_when_every_seed_converged(tmp_path, monkeypatch, capsys, labels, code):
    experiment = write_experiment(tmp_path / "exp", train=False)
    trained = []

    def fake_train(cfg, out_dir, method):
        out_dir.mkdir(parents=True)
        trained.append((cfg.training.learning_rate_k, cfg.training.seed))
        return {"status": "completed", "classification": labels[len(trained) - 1], "rate_constants_R2": 0.95,
                "avg_slope_ratio": 1.0, "embedding_cluster_acc": 1.0}

    monkeypatch.setattr(sweep, "_train", fake_train)
    assert main([str(experiment), "--n-seeds", "2"]) == code
    assert trained == [(5e-3, 1), (5e-3, 2)]  # the best node's config, on the seeds the search did not use
    assert f"{labels.count('converged')} of 2 seeds classified converged." in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["missing_dir"], "no such directory"),
    (["{exp}", "--node", "nosuch"], "no finished trial of node 'nosuch'"),
])
def test_bad_input_is_one_line_and_exit_2(experiment, capsys, args, message):
    code = main([arg.format(exp=experiment) for arg in args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and message in err


@pytest.mark.parametrize(("args", "option"), [(["--n-seeds", "1"], "--n-seeds"), (["--seeds", "5"], "--seeds")])
def test_one_seed_is_refused_whether_counted_or_given(tmp_path, capsys, args, option):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and option in err and "an sd needs two" in err


def test_a_seed_given_twice_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--seeds", "5", "6", "5"])
    assert exit_info.value.code == 2
    assert "error: --seeds 5 6 5: a seed given twice would train into one folder" in capsys.readouterr().err


def test_a_screened_search_is_confirmed_with_the_full_budget_config(tmp_path, monkeypatch, capsys):
    """Node 'good' was screened (budget 5) and promoted (budget 10); 'weak' has the higher reward, but at
    screen only, so the leaderboard puts 'good' first, and confirm trains its full-budget config."""
    directory = tmp_path / "exp"
    rows = []
    for trial_id, node, fidelity, budget, reward in (("g", "good", "screen", 5, 0.6), ("w", "weak", "screen", 5, 0.9),
                                                    ("promo", "good", "full", 10, 0.7)):
        trial_dir = Path("trials") / f"node_{node}_seed_77_{fidelity}"
        cfg = config_from_dict(TINY | {"training": TINY["training"] | {"data_augmentation_loop": budget}})
        (directory / trial_dir).mkdir(parents=True)
        (directory / trial_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        rows.append({"trial_id": trial_id, "node_id": node, "parent_id": "", "strategy": "initial",
                     "mutation": "promotion of good" if trial_id == "promo" else "baseline", "seed": 77,
                     "fidelity": fidelity, "status": "completed", "reward": reward, "classification": "partial",
                     "trial_dir": str(trial_dir)})
    with open(directory / "trials.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    trained = []

    def fake_train(cfg, out_dir, method):
        out_dir.mkdir(parents=True)
        trained.append(cfg.training.data_augmentation_loop)
        return {"status": "completed", "classification": "converged", "rate_constants_R2": 0.95}

    monkeypatch.setattr(sweep, "_train", fake_train)
    assert main([str(directory), "--n-seeds", "2"]) == 0
    assert trained == [10, 10] and (directory / "confirm" / "node_good").is_dir()
    capsys.readouterr()
    assert main([str(directory), "--node", "weak"]) == 2
    assert "node 'weak' was only screened" in capsys.readouterr().err
