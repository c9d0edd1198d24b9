"""Choosing fairly. Every choice — a `tune:` grid point, the variant of an untuned sweep that the
comparisons use, a generation task's decoding — is made on the task's unreported selection set,
among runs at the experiment's selection seed (`select.seed`, default SELECTION_SEED), which is
never a reported seed: a reported mean never includes the run that won the choice (a winner
picked on seed s and reported on s is optimistic by up to ~0.4 seed standard deviations with 5
grid points and 3 seeds, ~1 with one seed). Tuned: the grid trains at the selection seed, the
best point per (task, method, sweep variant) then trains at every reported seed. Untuned sweeps
train every variant at every reported seed (the sweep table shows them all) and at the selection
seed. Torch-free: the Snakefile plans from here, the selection jobs and the tests call the same
functions.

- `Choice` is one (task, method)'s choice of (variant, decoding): written to CHOICE_FILE, read
  by the report through `peftgrid.report.tuning.read_choices`. A (task, method) with one variant
  and no decoding to choose has none. A generation task without an unreported selection set
  chooses no decoding: its primary decoding is the first in config order (pre-registered).

- `auto_lr_grid` is THE auto grid (`tune: {lr: auto}`): the method's resolved learning rate
  times 1/4, 1/2, 1, 2, 4 (five log-spaced points, a factor 2 apart, 16x wide), 3 significant digits.
- `choose_best` is THE selection rule: best score on the selection set among finished grid
  points (decodings: among (point, decoding) pairs in grid order, then decoding order); a tie
  goes to the first in that order (values sorted ascending, keys by name: the smaller learning
  rate). No finished point: the point at the method's own setting (else the first), flagged
  `finished = 0`, and the report lists the failure.
"""
from __future__ import annotations

import csv
import itertools
import json
import math
from dataclasses import dataclass, field

from .layout import METRICS_FILE, TRAIN_STATS_FILE, eval_dir

AUTO_LR_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
SELECTION_SEED = 1000  # `select.seed` when not given: choices are made at this seed, never reported
TUNE_DIR = "results/tune/{task}/{method}/{group}"
SELECTION_FILE = TUNE_DIR + "/selection.tsv"
SELECTION_COLUMNS = ["task", "method", "group", "variant", "decoding", "seed", "tuned", "status", "error", "on",
                     "split", "metric", "score", "rank", "selected", "finished", "edge"]
CHOICE_FILE = "results/choices/{task}/{method}.tsv"
CHOICE_COLUMNS = ["task", "method", "variant", "decoding", "seed", "on", "dataset", "split", "metric", "score",
                  "status", "error", "rank", "chosen", "finished"]


def score_file(run_dir: str, metric: str, decoding: str = "") -> str:
    """What a selection-seed run is scored from: its selection-set evaluation (generation: one per
    decoding), or (select.metric: loss) the final validation loss training logged on that set."""
    if metric == "loss":
        return f"{run_dir}/{TRAIN_STATS_FILE}"
    return f"{eval_dir(run_dir, None, decoding)}/{METRICS_FILE}"


def auto_lr_grid(lr: float) -> list[float]:
    """The learning rates `lr: auto` searches around a method's resolved default `lr`."""
    return [float(f"{lr * f:.3g}") for f in AUTO_LR_FACTORS]


@dataclass(frozen=True)
class TuneGroup:
    """One (task, method, sweep variant) whose tuned keys are selected on the selection set."""
    task: str
    method: str
    group: str                 # the sweep variant tuned within: 'default' when the method is not swept
    seeds: tuple               # the reported seeds: the winner runs each of them
    candidates: tuple          # variant names of the grid points, in grid order
    tuned: tuple = field(compare=False)  # per candidate: {tuned key: value}
    on: str = "selection"      # the selection set's name (never a reported eval set)
    split: str = "validation"  # its split
    metric: str = "accuracy"   # a metric column of the selection eval, or 'loss' (final_val_loss)
    higher_is_better: bool = True
    default: str = ""          # the candidate at the method's own setting (fallback when none finished)
    seed: int = SELECTION_SEED  # the grid runs at this seed, never a reported one
    decodings: tuple = ("",)   # generation: each grid point is scored with each decoding; else ("",)

    @property
    def key(self) -> tuple:
        return (self.task, self.method, self.group)

    def score_files(self, run_dir_of) -> list[str]:
        """Per (candidate, decoding), candidates outer: `run_dir_of(variant, seed)` names a run."""
        return [score_file(run_dir_of(v, self.seed), self.metric, d) for v in self.candidates for d in self.decodings]

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
            "metric": self.metric, "higher_is_better": self.higher_is_better, "default": self.default,
            "seed": self.seed, "decodings": list(self.decodings)}, sort_keys=True))


@dataclass(frozen=True)
class Choice:
    """One (task, method)'s (variant, decoding), chosen on the selection set among its runs at the
    selection seed: every variant of an untuned sweep, or every grid point of every tuned group
    (the overall best is its own group's winner, so it has reported-seed runs)."""
    task: str
    method: str
    seed: int                  # the selection seed
    variants: tuple            # candidates in order: sweep order, or tuned groups by name then grid order
    decodings: tuple           # generation with an unreported selection set: every decoding; else ("",)
    on: str                    # the selection set, as the report names it: '<dataset>/<split>'
    dataset: str
    split: str
    metric: str                # a metric column of the selection eval, or 'loss' (final_val_loss)
    higher_is_better: bool
    default: str               # the fallback when no run finished

    @property
    def key(self) -> tuple:
        return (self.task, self.method)

    @property
    def file(self) -> str:
        return CHOICE_FILE.format(task=self.task, method=self.method)

    def pairs(self) -> list[tuple[str, str]]:
        """(variant, decoding) in choice order: variants outer."""
        return [(v, d) for v in self.variants for d in self.decodings]

    def score_files(self, run_dir_of) -> list[str]:
        return [score_file(run_dir_of(v, self.seed), self.metric, d) for v, d in self.pairs()]

    def to_params(self) -> dict:
        return json.loads(json.dumps({
            "task": self.task, "method": self.method, "seed": self.seed, "variants": list(self.variants),
            "decodings": list(self.decodings), "on": self.on, "dataset": self.dataset, "split": self.split,
            "metric": self.metric, "higher_is_better": self.higher_is_better, "default": self.default},
            sort_keys=True))


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
