"""What successive halving saves: the training steps of the tuning stage, `strategy: halving`
against `strategy: grid`, on configs/cpu_small_tuned.yaml with every tuned method's grid replaced
by `lr: auto` (5 points) — computed from the plan, without training (peftgrid.plan.tune.tuning_steps:
grid, every point's full run; halving, each rung's points times the steps that rung adds).

A run's length is ceil(ceil(n_train / batch_size) * epochs), capped by max_steps (jobs/train.py);
n_train is the task's max_examples.train when its training split has at least that many rows (the
script counts them and says so). Extensions (`extend`, lr: auto) depend on the scores, so the table
shows none and the limit (3 per group) for both strategies. The reported seeds (the winner's runs)
cost the same under both strategies and are left out.

    python benchmarks/bench_halving.py                 # eta 3, min_steps 10 (the defaults)
    python benchmarks/bench_halving.py --eta 2 --min-steps 5
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from peftgrid.plan import build_tune_groups, validate_config  # noqa: E402
from peftgrid.plan.config import load_config_file  # noqa: E402
from peftgrid.plan.tune import ETA, EXTEND_LIMIT, MIN_STEPS, rung_stop_step, tuning_steps  # noqa: E402


def training_rows(config: dict, task: str, base: Path) -> int:
    """Rows of a task's training split: lines of its file, times split_ratio's train share if carved."""
    t = config["tasks"][task]
    ds = config["datasets"][t["dataset"]]
    split = t.get("train_split", "train")
    path = base / ds["splits"][split if split in ds["splits"] else "train"]
    lines = sum(1 for line in path.open(encoding=ds.get("encoding", "utf-8")) if line.strip())
    rows = lines - (1 if ds.get("header", True) else 0)
    ratio = ds.get("split_ratio")
    return math.floor(rows * ratio[split]) if ratio else rows


def run_length(config: dict, task: str, hparams: dict, base: Path) -> tuple[int, int]:
    """(n_train, the run's steps) of a cell of `task` with `hparams`."""
    limit = config["tasks"][task].get("max_examples", {}).get("train")
    rows = training_rows(config, task, base)
    n_train = min(rows, limit) if limit else rows
    steps = math.ceil(math.ceil(n_train / hparams["batch_size"]) * hparams["epochs"])
    return n_train, min(steps, hparams["max_steps"]) if hparams.get("max_steps") else steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "cpu_small_tuned.yaml"))
    ap.add_argument("--eta", type=int, default=ETA)
    ap.add_argument("--min-steps", type=int, default=MIN_STEPS)
    args = ap.parse_args()
    raw = load_config_file(args.config)
    base = REPO  # the config's ../shared/data paths resolve from the repository, as the README runs it
    for exp in raw["experiments"]:
        if exp.get("tune"):
            exp["tune"] = {"lr": "auto", "strategy": "halving", "eta": args.eta, "min_steps": args.min_steps}
    config = validate_config(raw)
    groups = build_tune_groups(config)
    print(f"{Path(args.config).name} with tune: {{lr: auto}}; halving eta {args.eta}, min_steps {args.min_steps}; "
          f"steps of the tuning stage at the selection seed (no extension | {EXTEND_LIMIT} each, the limit)\n")
    header = ["task", "method", "n_train", "run steps", "points", "rung stops", "grid", "halving", "ratio",
              "grid+ext", "halving+ext", "ratio+ext"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    total = {"grid": 0, "halving": 0, "grid+ext": 0, "halving+ext": 0}
    for g in groups:
        hp = {**config["training"], **config["tasks"][g.task].get("training", {}), **config["methods"][g.method]}
        n_train, steps = run_length(config, g.task, hp, base)
        n = len(g.candidates)
        stops = [rung_stop_step(steps, s, g.min_steps) for s in g.shares]
        row = {"grid": tuning_steps(n, steps, "grid"),
               "halving": tuning_steps(n, steps, "halving", g.eta, g.min_steps),
               "grid+ext": tuning_steps(n, steps, "grid", extensions=EXTEND_LIMIT),
               "halving+ext": tuning_steps(n, steps, "halving", g.eta, g.min_steps, EXTEND_LIMIT)}
        for k in total:
            total[k] += row[k]
        print(f"| {g.task} | {g.method} | {n_train} | {steps} | {n} | {', '.join(map(str, stops))} | {row['grid']} | "
              f"{row['halving']} | {row['halving'] / row['grid']:.0%} | {row['grid+ext']} | {row['halving+ext']} | "
              f"{row['halving+ext'] / row['grid+ext']:.0%} |")
    print(f"| all | | | | | | {total['grid']} | {total['halving']} | {total['halving'] / total['grid']:.0%} | "
          f"{total['grid+ext']} | {total['halving+ext']} | {total['halving+ext'] / total['grid+ext']:.0%} |")


if __name__ == "__main__":
    main()
