"""Does successive halving pick the grid's winner? Compares the tuning stage of two finished copies
of one study that differ only in `tune: {strategy: grid}` / `{strategy: halving}` (same grid, same
`select.seed`): per (task, method, group), each strategy's winner, the grid's full-run score of
halving's winner and its gap to the grid's best; and what each tuning stage cost — training steps
at the selection seed (a halving rung counts only the steps it added to the one before) and the
summed wall and CPU time of its jobs (their `[peftgrid] job time` lines in logs/).

Each folder is a copy of the workflow run for the tuning stage only (each method's selection.tsv):

    snakemake --configfile study.yaml --cores 2 --resources gpu=1 --keep-going \\
        results/tune/cola/full/default/selection.tsv results/tune/cola/lora/default/selection.tsv
    python benchmarks/halving_agreement.py GRID_FOLDER HALVING_FOLDER

Prints the rows of benchmarks/README.md's agreement table ("Successive halving").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from peftgrid.jobs.common import read_job_times  # noqa: E402
from peftgrid.plan.layout import TRAIN_STATS_FILE, run_dir  # noqa: E402
from peftgrid.plan.tune import rung_dir  # noqa: E402
from peftgrid.records import read_tsv  # noqa: E402


def selections(study: Path) -> dict[tuple, list[dict]]:
    """(task, method, group) -> its selection.tsv rows."""
    return {tuple(p.relative_to(study / "results" / "tune").parts[:3]): read_tsv(p)
            for p in sorted((study / "results" / "tune").glob("*/*/*/selection.tsv"))}


def winner(rows: list[dict]) -> dict:
    return next(r for r in rows if r["selected"] == "True")


def steps_trained(study: Path, rows: list[dict]) -> int:
    """Training steps of a group's points at the selection seed: a full run's, or each rung's added ones."""
    total = 0
    for r in rows:
        run = study / run_dir({"task": r["task"], "method": r["method"], "variant": r["variant"], "seed": r["seed"]})
        if not r.get("rung"):  # grid: the point's full run
            total += int(float(read_tsv(run / TRAIN_STATS_FILE)[0]["steps"]))
            continue
        done = 0
        for rung in range(int(r["rung"]) + 1):  # a rung's `steps` is the step it stopped at
            stats = Path(rung_dir(str(run), rung)) / TRAIN_STATS_FILE
            if not stats.is_file():  # an extension point starts at a later rung, from step 0
                continue
            stop = int(float(read_tsv(stats)[0]["steps"]))
            total, done = total + stop - done, stop
    return total


def job_seconds(study: Path, seed: str, kind: str) -> float:
    """`wall_s` or `cpu_s` (CPU seconds hold up better on a busy machine) summed over the jobs that
    trained or scored at the selection seed (logs/<RUN_DIR>/...): the tuning stage, without the
    one-second staging and selection jobs, nor whatever the folder ran after it."""
    total = 0.0
    for log in (study / "logs" / "results" / "runs").glob(f"*/*/*/seed{seed}/**/*.log"):
        total += sum(float(fields[kind]) for fields in read_job_times(log))
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("grid", type=Path, help="the study folder run with strategy: grid")
    ap.add_argument("halving", type=Path, help="the same study run with strategy: halving")
    args = ap.parse_args()
    grid, halving = selections(args.grid), selections(args.halving)
    agree = 0
    print("| task | method | seed | grid's winner (score) | halving's winner (rung) | grid's score of it | gap | agree |")
    print("|---|---|---|---|---|---|---|---|")
    common = sorted(grid.keys() & halving.keys())
    if not common:
        raise SystemExit("the two folders share no (task, method, group): run the same study in both")
    for key in common:
        g, h = winner(grid[key]), winner(halving[key])
        full_score = {r["variant"]: float(r["score"]) for r in grid[key] if r["score"] not in ("", None)}
        best, got = full_score[g["variant"]], full_score.get(h["variant"])  # None: a point the grid never ran
        agree += g["variant"] == h["variant"]
        sign = 1 if g["metric"] != "loss" else -1  # the gap is how much worse halving's pick is: >= 0
        gap = "n/a" if got is None else f"{sign * (best - got):+.3f}"
        print(f"| {key[0]} | {key[1]} | {g['seed']} | {g['variant']} ({best:.3f}) | {h['variant']} (rung {h['rung']}) "
              f"| {'n/a' if got is None else f'{got:.3f}'} | {gap} | {'yes' if g['variant'] == h['variant'] else 'no'} |")
    seed = grid[common[0]][0]["seed"]
    steps = [sum(steps_trained(study, sel[k]) for k in common) for study, sel in ((args.grid, grid), (args.halving, halving))]
    print(f"\n{agree} of {len(common)} agree; steps at the selection seed: grid {steps[0]}, halving {steps[1]} "
          f"({steps[1] / max(steps[0], 1):.0%}); summed job wall: grid {job_seconds(args.grid, seed, 'wall_s'):.0f} s, "
          f"halving {job_seconds(args.halving, seed, 'wall_s'):.0f} s; summed job CPU: grid {job_seconds(args.grid, seed, 'cpu_s'):.0f} s, "
          f"halving {job_seconds(args.halving, seed, 'cpu_s'):.0f} s")


if __name__ == "__main__":
    main()
