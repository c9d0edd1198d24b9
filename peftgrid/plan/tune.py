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
- `choose_best` is THE selection rule, for grids, halving's rungs and choices alike: best score
  on the selection set among finished points (decodings: among (point, decoding) pairs in grid
  order, then decoding order); equal scores go to the lower validation loss on that set at the
  step the point was scored (run.json's `final_val_loss`, `validation_losses`: early rungs and
  weak grids often tie at the majority class's accuracy), then to the first in that order (values
  sorted ascending, keys by name: the smaller learning rate). No finished point: the point at the
  method's own setting (else the first), flagged `finished = 0`, and the report lists the failure.

Strategies (`tune: {strategy: grid | halving}`; `TuneGroup.strategy`):
- `grid` (default): every point trains the full run, one selection.
- `halving` (successive halving): with n points and eta (default 3), R = ceil(log_eta n) rungs,
  rung r stopping at the share eta^(r-R) of the full run's steps (5 points: 1/9, 1/3; 3 points:
  1/3), never shorter than `min_steps` (default 10; never past the run's end). Every point trains
  rung 0 with the full run's schedule; after each rung the best ceil(k/eta) of its k points go on
  from their checkpoint to the next one, until one point remains: the winner (its run at the
  selection seed never finishes). A rung's score is exactly what the full run scores at that step
  (select.metric loss: the rung validates at its stop, engine/loop.py). If every point of a later
  stage fails, the best point whose last rung finished wins, and the edge column says so.
- `extend` (with `lr: auto`, default EXTEND_LIMIT): a winner at the lowest or highest learning
  rate of its grid competes with a point one factor 2 beyond it, trained to the winner's rung (grid:
  the full run), up to `extend` such points; the edge column says when the limit was reached.
  `axis_edge` is THE edge rule (extension and the edge column): the winner's value is the lowest or
  highest of its axis, the points that share its other tuned values (3+ numbers).
Both are planned as stages (`stage_*`, STAGE_FILE, one Snakemake checkpoint each): stage s compares
its competitors at rung min(s, rungs - 1), and says which go on to stage s + 1.
"""
from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ..columns import OK
from ..records import read_tsv
from .layout import METRICS_FILE, RUN_FILE, TRAIN_STATS_FILE, eval_dir

AUTO_LR_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
ETA = 3           # halving keeps the best 1/ETA of a rung's points
MIN_STEPS = 10    # no halving rung stops before this many steps (unless the run is shorter)
EXTEND_LIMIT = 3  # lr: auto adds at most this many points past an edge winner
EXTEND_FACTOR = 2.0
KEPT_CHECKPOINT = "kept_checkpoint"  # in a rung's folder: its last step, resumable (jobs/train.py writes it, a stage frees it)
SELECTION_SEED = 1000  # `select.seed` when not given: choices are made at this seed, never reported
LOSS_COLUMN = "final_val_loss"  # train_stats' / run.json stats' loss on the selection set: `select.metric: loss`
EXTENSION = "extension"  # a stage row's status for an extension point added to train at the next stage
TUNE_DIR = "results/tune/{task}/{method}/{group}"
SELECTION_FILE = TUNE_DIR + "/selection.tsv"
# val_loss: the point's validation loss on the selection set where it was scored (choose_best's tie-break)
SELECTION_COLUMNS = ["task", "method", "group", "variant", "decoding", "seed", "tuned", "status", "error", "on",
                     "split", "metric", "score", "val_loss", "rank", "selected", "finished", "edge"]
SELECTION_EXTRA_COLUMNS = ["rung", "rung_scores"]  # staged groups only: the rung a point stopped at, its score per rung
STAGE_FILE = TUNE_DIR + "/stage{stage}.tsv"
STAGE_COLUMNS = ["variant", "tuned", "rung", "status", "error", "score", "val_loss", "decoding", "advance", "note"]
CHOICE_FILE = "results/choices/{task}/{method}.tsv"
CHOICE_COLUMNS = ["task", "method", "variant", "decoding", "seed", "on", "dataset", "split", "metric", "score",
                  "val_loss", "status", "error", "rank", "chosen", "finished"]


def rung_dir(run_dir: str, rung: int) -> str:
    """Where a halving rung of a selection-seed run trains and is scored (RUN_DIR pattern + rung)."""
    return f"{run_dir}/rung{rung}"


def score_file(run_dir: str, metric: str, decoding: str = "") -> str:
    """What a selection-seed run is scored from: its selection-set evaluation (generation: one per
    decoding), or (select.metric: loss) the final validation loss training logged on that set."""
    if metric == "loss":
        return f"{run_dir}/{TRAIN_STATS_FILE}"
    return f"{eval_dir(run_dir, None, decoding)}/{METRICS_FILE}"


def auto_lr_grid(lr: float) -> list[float]:
    """The learning rates `lr: auto` searches around a method's resolved default `lr`."""
    return [float(f"{lr * f:.3g}") for f in AUTO_LR_FACTORS]


def extension_lrs(grid: list[float], limit: int) -> list[float]:
    """The learning rates `extend` may add past an auto grid: `limit` below it, then `limit` above it."""
    low = [float(f"{min(grid) / EXTEND_FACTOR ** i:.3g}") for i in range(1, limit + 1)]
    high = [float(f"{max(grid) * EXTEND_FACTOR ** i:.3g}") for i in range(1, limit + 1)]
    return low + high


def rung_shares(n: int, eta: int) -> list[float]:
    """Each halving rung's share of the full run: eta^(r-R), r = 0..R-1, R = ceil(log_eta n) (the
    rounds that take n points down to one). 5 points, eta 3: [1/9, 1/3]."""
    rounds, reach = 0, 1
    while reach < n:
        rounds, reach = rounds + 1, reach * eta
    return [eta ** (r - rounds) for r in range(rounds)]


def rung_stop_step(total_steps: int, share: float, min_steps: int) -> int:
    """The step a rung stops after: its share of the run, at least `min_steps`, at most the run."""
    return min(total_steps, max(min_steps, math.ceil(total_steps * share - 1e-9)))


def survivors(k: int, eta: int) -> int:
    """How many of a rung's k points go on to the next one."""
    return math.ceil(k / eta)


def tuning_steps(n: int, total_steps: int, strategy: str = "grid", eta: int = ETA, min_steps: int = MIN_STEPS,
                 extensions: int = 0) -> int:
    """The training steps one group's selection costs at the selection seed, from the plan alone:
    grid, every point's full run; halving, each rung's points times the steps that rung adds
    (a survivor continues, it never restarts). Each extension point: its full run (grid) or the
    last rung's steps from step 0 (halving)."""
    if strategy == "grid":
        return (n + extensions) * total_steps
    steps, done, points = 0, 0, n
    for share in rung_shares(n, eta):
        stop = rung_stop_step(total_steps, share, min_steps)
        steps, done, points = steps + points * (stop - done), stop, survivors(points, eta)
    return steps + extensions * done


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
    strategy: str = "grid"     # or "halving" (the module docstring)
    eta: int = ETA
    min_steps: int = MIN_STEPS
    extend: int = 0            # lr: auto: at most this many points past an edge winner
    extensions: tuple = ()     # the variant names they would have (extension_lrs order)
    extension_tuned: tuple = field(default=(), compare=False)  # per extension: {tuned key: value}

    @property
    def key(self) -> tuple:
        return (self.task, self.method, self.group)

    # -- stages: halving's rungs, then one stage per extension point (the module docstring)
    @property
    def staged(self) -> bool:
        """Selected stage by stage (STAGE_FILE checkpoints), not in one go from the full grid."""
        return self.strategy == "halving" or self.extend > 0

    @property
    def shares(self) -> list[float]:
        """Each rung's share of the full run: halving's rungs, or the full run alone (grid)."""
        return rung_shares(len(self.candidates), self.eta) if self.strategy == "halving" else [1.0]

    def stage_rung(self, stage: int) -> int:
        """Stages past the last rung compare extension points at that rung."""
        return min(stage, len(self.shares) - 1)

    def keeps(self, stage: int, competitors: int) -> int:
        return survivors(competitors, self.eta) if self.strategy == "halving" and stage < len(self.shares) else 1

    def tuned_of(self, variant: str) -> dict:
        return dict(zip(self.candidates + self.extensions, self.tuned + self.extension_tuned))[variant]

    def run_of(self, run_dir_of, variant: str, rung: int) -> str:
        """The folder a (point, rung) trains in: halving's rung folder, or (grid) the point's run."""
        run = run_dir_of(variant, self.seed)
        return rung_dir(run, rung) if self.strategy == "halving" else run

    def stage_score_files(self, run_dir_of, stage: int, competitors: list) -> list[str]:
        """Per (competitor, decoding), competitors outer, at the stage's rung."""
        rung = self.stage_rung(stage)
        return [score_file(self.run_of(run_dir_of, v, rung), self.metric, d) for v in competitors for d in self.decodings]

    def run_files(self, run_dir_of, variants, rung: int = 0) -> list[str]:
        """Each point's run.json at `rung` (grid: its full run): its validation loss breaks ties
        (choose_best); halving's run length also tells min_steps_note."""
        return [f"{self.run_of(run_dir_of, v, rung)}/{RUN_FILE}" for v in variants]

    def stage_run_files(self, run_dir_of, stage: int, competitors: list) -> list[str]:
        return self.run_files(run_dir_of, competitors, self.stage_rung(stage))

    def min_steps_note(self, stage: int, total_steps: int) -> str:
        """A note when `min_steps` makes the stage's rung the whole run (the run is that short): halving
        then saves nothing; '' otherwise."""
        share = self.shares[self.stage_rung(stage)]
        if self.strategy != "halving" or share >= 1 or self.min_steps < total_steps:
            return ""
        return (f"min_steps {self.min_steps} is not below the run's {total_steps} steps: rung {self.stage_rung(stage)} "
                f"trained the whole run (halving saved nothing); lower min_steps or use strategy: grid")

    def spent_checkpoints(self, stage: int, competitors: list[str], rung_folders: list[str],
                          continuing: list[str]) -> list[str]:
        """The kept checkpoints no rung continues from once stage `stage` has decided (halving;
        `competitors` and their `rung_folders` at the stage's rung, same order; `continuing`: the next
        stage's competitors, stage_competitors): every earlier rung's (this rung has trained on from
        them), and this rung's unless the point goes on to a later rung (dropped, the search ended,
        or the last rung). A rung that later finds its checkpoint freed (an edited grid, a stage
        decided again) trains from step 0 instead: the same steps, so the same weights (engine/checkpoint.py
        Checkpointer.load)."""
        if self.strategy != "halving":
            return []
        rung = self.stage_rung(stage)
        later = self.stage_rung(stage + 1) > rung
        spent = []
        for variant, folder in zip(competitors, rung_folders, strict=True):
            run = str(PurePosixPath(folder).parent)
            spent += [f"{rung_dir(run, r)}/{KEPT_CHECKPOINT}" for r in range(rung)]
            if not (later and variant in continuing):
                spent.append(f"{folder}/{KEPT_CHECKPOINT}")
        return spent

    def continues_from(self, variant: str, rung: int) -> int | None:
        """The rung whose checkpoint (variant, rung) continues from: the one before, for a grid
        point; None for rung 0 and for an extension point (it trains from step 0 to its rung)."""
        return rung - 1 if rung > 0 and variant in self.candidates else None

    def lr_edge(self, reached: list, variant: str) -> int:
        """-1 / 1 when `variant` has the lowest / highest lr of the points `reached` (axis_edge)."""
        return axis_edge([self.tuned_of(v) for v in reached], self.tuned_of(variant), "lr")

    def edge_label(self, reached: list, variant: str) -> str:
        """selection.tsv's `edge` for `variant` among the points `reached` (edge_label)."""
        return edge_label([self.tuned_of(v) for v in reached], self.tuned_of(variant))

    def next_extension(self, reached: list, winner: str) -> str | None:
        """The point one factor 2 past `winner` when it is at an lr edge of the points `reached`;
        None when it is interior or the `extend` points on that side are spent (the limit)."""
        side = self.lr_edge(reached, winner) if self.extend else 0
        if not side:
            return None
        won = self.tuned_of(winner)
        others = {k: v for k, v in won.items() if k != "lr"}
        beyond = [(side * t["lr"], v) for v, t in zip(self.extensions, self.extension_tuned)
                  if {k: x for k, x in t.items() if k != "lr"} == others and side * (t["lr"] - won["lr"]) > 0]
        return min(beyond)[1] if beyond else None  # the nearest: one factor 2 past the winner

    def score_files(self, run_dir_of) -> list[str]:
        """Per (candidate, decoding), candidates outer: `run_dir_of(variant, seed)` names a run."""
        return [score_file(run_dir_of(v, self.seed), self.metric, d) for v in self.candidates for d in self.decodings]

    @property
    def selection_file(self) -> str:
        return SELECTION_FILE.format(task=self.task, method=self.method, group=self.group)

    @property
    def wildcards(self) -> dict:
        return {"task": self.task, "method": self.method, "group": self.group}

    def grid_order(self, variants) -> list[str]:
        """`variants` (grid and extension points) in grid order: tuned keys by name, values ascending."""
        return sorted(variants, key=lambda v: [_sort_key(x) for _, x in sorted(self.tuned_of(v).items())])

    @classmethod
    def from_params(cls, params: dict) -> TuneGroup:
        """The group back from `to_params` (a job's spec)."""
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items() if k != "shares"}
        return cls(**fields)

    def to_params(self) -> dict:
        return json.loads(json.dumps({
            "task": self.task, "method": self.method, "group": self.group, "seeds": list(self.seeds),
            "candidates": list(self.candidates), "tuned": list(self.tuned), "on": self.on, "split": self.split,
            "metric": self.metric, "higher_is_better": self.higher_is_better, "default": self.default,
            "seed": self.seed, "decodings": list(self.decodings),
            # only a staged group's params carry how it searches: a plain grid's select job stays as it was
            **({"strategy": self.strategy, "eta": self.eta, "min_steps": self.min_steps, "extend": self.extend,
                "extensions": list(self.extensions), "extension_tuned": list(self.extension_tuned),
                "shares": self.shares} if self.staged else {})}, sort_keys=True))


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
    # staged groups (halving, extension): their selection.tsv files, whose winners the choice compares
    # (their points' runs at the selection seed may stop at a rung or never run)
    selections: tuple = ()

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
        if self.selections:
            return list(self.selections)
        return [score_file(run_dir_of(v, self.seed), self.metric, d) for v, d in self.pairs()]

    def run_files(self, run_dir_of) -> list[str]:
        """Per variant its run.json at the selection seed (choose_best's tie-break); none when the
        choice is among staged groups' winners (their selection.tsv rows carry their losses)."""
        return [] if self.selections else [f"{run_dir_of(v, self.seed)}/{RUN_FILE}" for v in self.variants]

    def to_params(self) -> dict:
        return json.loads(json.dumps({
            "task": self.task, "method": self.method, "seed": self.seed, "variants": list(self.variants),
            "decodings": list(self.decodings), "on": self.on, "dataset": self.dataset, "split": self.split,
            "metric": self.metric, "higher_is_better": self.higher_is_better, "default": self.default,
            **({"selections": list(self.selections)} if self.selections else {})}, sort_keys=True))


def grid_points(grid: dict, resolved_lr: float) -> list[dict]:
    """The cartesian grid of one method's tuned keys ('auto' expanded), in grid order."""
    keys = sorted(grid)
    axes = [sorted(auto_lr_grid(resolved_lr) if grid[k] == "auto" else grid[k], key=_sort_key) for k in keys]
    return [dict(zip(keys, values)) for values in itertools.product(*axes)]


def extension_points(grid: dict, resolved_lr: float, limit: int) -> list[dict]:
    """The points `extend` may add to an lr: auto grid: each value of the other tuned keys with
    each of extension_lrs (none without lr: auto or a limit)."""
    if grid.get("lr") != "auto" or not limit:
        return []
    others = grid_points({k: v for k, v in grid.items() if k != "lr"}, resolved_lr)
    return [{**o, "lr": lr} for o in others for lr in extension_lrs(auto_lr_grid(resolved_lr), limit)]


def axis_edge(tuned: list[dict], won: dict, key: str) -> int:
    """THE edge rule: -1 / 1 when the winning point `won` has the lowest / highest `key` on its axis —
    the points of `tuned` that share its other tuned values — if that axis has 3+ numeric values;
    else 0 (interior, or no axis to be at the edge of)."""
    others = {k: v for k, v in won.items() if k != key}
    axis = [t[key] for t in tuned if {k: x for k, x in t.items() if k != key} == others]
    if any(not isinstance(x, (int, float)) or isinstance(x, bool) for x in axis) or len(set(axis)) < 3:
        return 0
    return -1 if won[key] == min(axis) else 1 if won[key] == max(axis) else 0


def edge_label(tuned: list[dict], won: dict) -> str:
    """selection.tsv's `edge`: each tuned key at an edge of its axis (axis_edge), e.g. 'lr (highest)' —
    the optimum may lie outside the grid."""
    sides = {key: axis_edge(tuned, won, key) for key in sorted(won)}
    return ", ".join(f"{k} ({'lowest' if s < 0 else 'highest'})" for k, s in sides.items() if s)


def edge_and_notes(edge: str) -> tuple[str, str]:
    """selection.tsv's `edge` split into the winner's edges (edge_label's text, '' if none) and what
    a staged group's stages noted after them ('; '-joined: the extension limit, a fallback, min_steps)."""
    first, _, rest = edge.partition("; ")
    if re.fullmatch(r"\w+ \((?:lowest|highest)\)(?:, \w+ \((?:lowest|highest)\))*", first):
        return first, rest
    return "", edge


def grid_size(grid: dict) -> int:
    """How many points a tune grid has (`auto`: the AUTO_LR_FACTORS)."""
    return math.prod(len(AUTO_LR_FACTORS) if v == "auto" else len(v) for v in grid.values())


def _sort_key(value):
    return (0, float(value), "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0.0, json.dumps(value, sort_keys=True))


def choose_best(points: list[dict], higher_is_better: bool, default: int = 0,
                losses: list | None = None) -> tuple[int, int]:
    """(index of the winner, number of finished points). `points`, in grid order, each hold
    `status` and `score` (a float or None); `losses`: per point its validation loss (None: unknown).
    The winner is the point `ranks` puts first; none finished: `default`."""
    rank = ranks(points, higher_is_better, losses)
    finished = sum(r is not None for r in rank)
    return (rank.index(1) if finished else default), finished


def selection_metric(select: dict, task: dict) -> str:
    """What an experiment's `select` chooses on for a task: its `metric`, else the task's first metric."""
    return select.get("metric") or task["metrics"][0]


def validation_losses(run_records: list[dict]) -> list:
    """Per run.json record its final validation loss on the selection set (None if it has none):
    choose_best's tie-break."""
    return [(r.get("stats") or {}).get(LOSS_COLUMN) for r in run_records]


def loss_key(loss) -> float:
    """A validation loss as choose_best orders it: lower first, unknown (None or NaN) after every known one."""
    return math.inf if loss is None or loss != loss else loss


def tie_note(points: list[dict], losses: list | None = None) -> str:
    """selection.tsv's note when every finished point (2 or more) has the same score, e.g. every run
    predicts the majority class: the selection metric does not separate them, the winner is a
    tie-break (choose_best: `losses`, else grid order) and an edge says nothing about where the
    optimum lies; '' otherwise."""
    finished = [i for i, p in enumerate(points) if scored(p)]
    if len(finished) < 2 or len({points[i]["score"] for i in finished}) > 1:
        return ""
    keys = [loss_key(losses[i] if losses else None) for i in finished]
    best = keys.count(min(keys))  # ranks' order: the lowest loss (unknown last), then grid order
    by = ("grid order" if min(keys) == math.inf or best == len(keys) else
          "the lowest validation loss" if best == 1 else "the lowest validation loss, then grid order")
    return (f"every point scored {points[finished[0]]['score']:.4g}: the selection metric does not separate them "
            f"(the tie went to {by})")


def scored(point: dict) -> bool:
    """A point that competes: its run finished (status ok) with a score that is a number, not NaN."""
    score = point.get("score")
    return point.get("status") == OK and score is not None and score == score


def ranks(points: list[dict], higher_is_better: bool, losses: list | None = None) -> list[int | None]:
    """1 for the best finished point, None for unfinished (failed, unscored, NaN) ones; equal
    scores: the lower of `losses` (per point, None or NaN: after every known loss), then grid order."""
    ok = [i for i, p in enumerate(points) if scored(p)]
    second = [loss_key(t) for t in (losses or [None] * len(points))]
    order = sorted(ok, key=lambda i: ((-1 if higher_is_better else 1) * points[i]["score"], second[i], i))
    out: list[int | None] = [None] * len(points)
    for r, i in enumerate(order, 1):
        out[i] = r
    return out


def stage_competitors(group: TuneGroup, stage: int, previous: list[dict] | None) -> list[str]:
    """The points stage `stage` compares, in grid order: every grid point at stage 0, then the rows
    the previous stage file (`previous`, read_tsv rows) marked `advance`. [] when that stage ended it."""
    if stage == 0:
        return list(group.candidates)
    going = [r["variant"] for r in previous if r["advance"] == "True"]
    return group.grid_order(going) if len(going) > 1 else []


def read_selection(path) -> tuple[str, int]:
    """(the selected variant, how many grid points finished) from a selection.tsv."""
    chosen = [r for r in read_tsv(path) if r["selected"] == "True"]
    if len(chosen) != 1:
        raise ValueError(f"{path}: expected exactly one selected grid point, found {len(chosen)}")
    return chosen[0]["variant"], int(chosen[0]["finished"])
