"""Tuning fairly: an experiment's `tune:` grid runs on its first seed, the best grid point per
(task, method, sweep variant) is picked on the task's unreported selection set, and only that
winner runs the remaining seeds. Torch-free: the Snakefile plans both stages from here, the
selection job and the tests call the same functions.

- `auto_lr_grid` is THE auto grid (`tune: {lr: auto}`): the method's resolved learning rate
  times 1/4, 1/2, 1, 2, 4 (five log-spaced points, a factor 2 apart, 16x wide), 3 significant digits.
- `choose_best` is THE selection rule: best score on the selection set among finished grid
  points; a tie goes to the first point in grid order (values sorted ascending, keys by name:
  the smaller learning rate). No finished point: the point at the method's own setting (else the
  first), flagged `finished = 0`, and the report lists the failure.
"""
from __future__ import annotations

import csv
import itertools
import json
import math
from dataclasses import dataclass, field

AUTO_LR_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
TUNE_DIR = "results/tune/{task}/{method}/{group}"
SELECTION_FILE = TUNE_DIR + "/selection.tsv"
SELECTION_COLUMNS = ["task", "method", "group", "variant", "seed", "tuned", "status", "error", "on", "split", "metric",
                     "score", "rank", "selected", "finished", "edge"]


def auto_lr_grid(lr: float) -> list[float]:
    """The learning rates `lr: auto` searches around a method's resolved default `lr`."""
    return [float(f"{lr * f:.3g}") for f in AUTO_LR_FACTORS]


@dataclass(frozen=True)
class TuneGroup:
    """One (task, method, sweep variant) whose tuned keys are selected on the selection set."""
    task: str
    method: str
    group: str                 # the sweep variant tuned within: 'default' when the method is not swept
    seeds: tuple               # seeds[0] runs the grid; the winner runs all of them
    candidates: tuple          # variant names of the grid points, in grid order
    tuned: tuple = field(compare=False)  # per candidate: {tuned key: value}
    on: str = "selection"      # the selection set's name (never a reported eval set)
    split: str = "validation"  # its split
    metric: str = "accuracy"   # a metric column of the selection eval, or 'loss' (final_val_loss)
    higher_is_better: bool = True
    default: str = ""          # the candidate at the method's own setting (fallback when none finished)

    @property
    def key(self) -> tuple:
        return (self.task, self.method, self.group)

    @property
    def first_seed(self) -> int:
        return self.seeds[0]

    @property
    def selection_file(self) -> str:
        return SELECTION_FILE.format(task=self.task, method=self.method, group=self.group)

    @property
    def wildcards(self) -> dict:
        return {"task": self.task, "method": self.method, "group": self.group}

    def to_params(self) -> dict:
        return json.loads(json.dumps({
            "task": self.task, "method": self.method, "group": self.group, "seeds": list(self.seeds),
            "candidates": list(self.candidates), "tuned": list(self.tuned), "on": self.on, "split": self.split,
            "metric": self.metric, "higher_is_better": self.higher_is_better, "default": self.default}, sort_keys=True))


def grid_points(grid: dict, resolved_lr: float) -> list[dict]:
    """The cartesian grid of one method's tuned keys ('auto' expanded), in grid order."""
    keys = sorted(grid)
    axes = [sorted(auto_lr_grid(resolved_lr) if grid[k] == "auto" else grid[k], key=_sort_key) for k in keys]
    return [dict(zip(keys, values)) for values in itertools.product(*axes)]


def _sort_key(value):
    return (0, float(value), "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0.0, json.dumps(value, sort_keys=True))


def choose_best(points: list[dict], higher_is_better: bool, default: int = 0) -> tuple[int, int]:
    """(index of the winner, number of finished points). `points`, in grid order, each hold
    `status` and `score` (a float or None). Ties keep the earliest point."""
    best, finished = None, 0
    for i, p in enumerate(points):
        score = p.get("score")
        if p.get("status") != "ok" or score is None or (isinstance(score, float) and math.isnan(score)):
            continue
        finished += 1
        if best is None:
            best = i
            continue
        b = points[best]["score"]
        if (score > b) if higher_is_better else (score < b):
            best = i
    return (default if best is None else best), finished


def ranks(points: list[dict], higher_is_better: bool) -> list[int | None]:
    """1 for the best finished point (ties: grid order), None for unfinished ones."""
    ok = [i for i, p in enumerate(points) if p.get("status") == "ok" and p.get("score") is not None
          and not (isinstance(p["score"], float) and math.isnan(p["score"]))]
    order = sorted(ok, key=lambda i: ((-1 if higher_is_better else 1) * points[i]["score"], i))
    out: list[int | None] = [None] * len(points)
    for r, i in enumerate(order, 1):
        out[i] = r
    return out


def read_selection(path) -> tuple[str, int]:
    """(the selected variant, how many grid points finished) from a selection.tsv."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    chosen = [r for r in rows if r["selected"] == "True"]
    if len(chosen) != 1:
        raise ValueError(f"{path}: expected exactly one selected grid point, found {len(chosen)}")
    return chosen[0]["variant"], int(chosen[0]["finished"])
