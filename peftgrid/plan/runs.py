"""The run table: `experiments` expanded into cells, one per (task, method, variant, seed),
each with its resolved hyperparameters in canonical form, and the one pattern that names a
cell's directory. Precedence, lowest first: training < tasks.<t>.training < methods.<m> (the
preset's defaults, then the config's entry) < the sweep cell < the tuned grid point.

An experiment with `tune:` adds, per (task, method, sweep variant), one cell per grid point and
seed: the grid points run on the first seed, the winner on the others (see plan/tune.py). Which
of them run is decided by the workflow's selection checkpoint; all are in the table so any of
them can be planned."""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..methods import method_of
from .config import canonical
from .tune import TuneGroup, grid_points

RUN_DIR = "results/runs/{task}/{method}/{variant}/seed{seed}"


@dataclass(frozen=True)
class Cell:
    task: str
    method: str
    variant: str
    seed: int
    kind: str
    hparams: dict = field(compare=False, hash=False)
    tuned: bool = field(default=False, compare=False, hash=False)  # a grid point: runs only if selected (seeds > first)

    @property
    def dir(self) -> str:
        return RUN_DIR.format(task=self.task, method=self.method, variant=self.variant, seed=self.seed)

    @property
    def key(self) -> tuple:
        return (self.task, self.method, self.variant, self.seed)

    @property
    def ident(self) -> dict:
        """The cell's identity as it travels in params (never parsed back from a path)."""
        return {"task": self.task, "method": self.method, "variant": self.variant, "seed": self.seed}

    @property
    def label(self) -> str:
        return self.method + ("" if self.variant == "default" else f" {self.variant}") + f" {self.seed}"


def _format_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return format(v, "g")
    if isinstance(v, list):
        return "+".join(_format_value(x) for x in v)
    return str(v)


def variant_name(sweep_cell: dict) -> str:
    """`default`, or the swept keys sorted: `alpha=16_r=8` (no commas: they break cluster jobs)."""
    if not sweep_cell:
        return "default"
    name = "_".join(f"{k}={_format_value(v)}" for k, v in sorted(sweep_cell.items()))
    if not re.fullmatch(r"[A-Za-z0-9_.+=-]+", name):
        raise ConfigError(f"sweep value in {name!r} gives a directory name with characters other than letters, digits, _ . + = -")
    return name


def resolve_hparams(config: dict, task: str, method: str, sweep_cell: dict) -> dict:
    hp = {**config["training"], **config["tasks"][task].get("training", {})}
    hp.update(config["methods"][method])  # kind, the preset's defaults and the entry's keys
    hp.update(sweep_cell)
    return canonical(hp)


def _check_selection(config: dict, task: str, method: str, hp: dict) -> None:
    """checkpoint: best never selects on a set whose score is reported as the result."""
    if hp["checkpoint"] != "best" or not method_of(hp["kind"]).trains(hp):
        return
    selection = config["tasks"][task]["selection"]
    if selection is None:
        raise ConfigError(f"tasks.{task}.validation: {method} uses checkpoint: best, which needs a validation set")
    if selection["reported"]:
        raise ConfigError(f"tasks.{task}.validation: {selection['name']!r} is a reported eval set, and {method} uses "
                          f"checkpoint: best, which would select on it; give an unreported selection split, e.g. "
                          f"validation: {{split: selection}} carved from train with the dataset's split_ratio")


def build_run_table(config: dict) -> list[Cell]:
    return _expand(config)[0]


def build_tune_groups(config: dict) -> list[TuneGroup]:
    return _expand(config)[1]


def _selection_target(config: dict, task: str, select: dict) -> tuple[str, str, str, bool]:
    """(set name, split, metric column, higher is better) an experiment's `select` means for a task."""
    from ..metrics import METRICS, main_column

    t = config["tasks"][task]
    metric = select.get("metric") or t["metrics"][0]
    if metric == "loss":  # final_val_loss of training, logged on the selection set
        return t["selection"]["name"], t["selection"]["split"], "loss", False
    column = main_column(metric)
    return t["selection"]["name"], t["selection"]["split"], column, METRICS[metric].higher_is_better


def _expand(config: dict) -> tuple[list[Cell], list[TuneGroup]]:
    cells: dict[tuple, Cell] = {}
    groups: dict[tuple, TuneGroup] = {}

    def add(i, cell):
        old = cells.get(cell.key)
        if old is not None and old.hparams != cell.hparams:
            raise ConfigError(f"experiments[{i}]: cell {cell.dir} is defined twice with different settings")
        if old is not None and not old.tuned:
            return  # another experiment reports it for every seed: it runs anyway
        cells[cell.key] = cell

    for i, exp in enumerate(config["experiments"]):
        tune = exp.get("tune") or {}
        for task, method in itertools.product(exp["tasks"], exp["methods"]):
            sweep = exp["sweep"].get(method, {})
            keys = sorted(sweep)
            for values in itertools.product(*(sweep[k] for k in keys)):
                sweep_cell = dict(zip(keys, values))
                base = resolve_hparams(config, task, method, sweep_cell)
                points = grid_points(tune[method], base["lr"]) if method in tune else [{}]
                variants = []
                for point in points:
                    hp0 = {**base, **canonical(point)}
                    variant = variant_name({**sweep_cell, **point})
                    variants.append(variant)
                    for seed in exp["seeds"]:
                        hp = {**hp0, "seed": seed}
                        _check_selection(config, task, method, hp)
                        add(i, Cell(task, method, variant, seed, hp["kind"], hp, tuned=method in tune))
                if method not in tune:
                    continue
                on, split, metric, higher = _selection_target(config, task, exp["select"])
                default = next((v for v, p in zip(variants, points)
                                if all(canonical(p[k]) == canonical(base.get(k)) for k in p)), variants[0])
                group = TuneGroup(task, method, variant_name(sweep_cell), tuple(exp["seeds"]), tuple(variants),
                                  tuple(canonical(p) for p in points), on, split, metric, higher, default)
                if group.key in groups and groups[group.key] != group:
                    raise ConfigError(f"experiments[{i}].tune: {task}/{method}"
                                      f"{'' if group.group == 'default' else '/' + group.group} is tuned by two "
                                      f"experiments with different grids, seeds or selection")
                groups[group.key] = group
    return sorted(cells.values(), key=lambda c: c.key), sorted(groups.values(), key=lambda g: g.key)


def stage_one_cells(cells: list[Cell], groups: list[TuneGroup]) -> list[Cell]:
    """The grid: every tuned grid point on its group's first seed."""
    by_key = {c.key: c for c in cells}
    return [by_key[(g.task, g.method, v, g.first_seed)] for g in groups for v in g.candidates]


def reported_cells(cells: list[Cell], groups: list[TuneGroup], winners: dict[tuple, tuple[str, int]]) -> list[Cell]:
    """What the tables report: every untuned cell, and each group's winner on all its seeds
    (`winners`: group key -> (variant, finished grid points); none finished: the first seed only,
    which carries the failure)."""
    by_key = {c.key: c for c in cells}
    out = {c.key: c for c in cells if not c.tuned}
    for g in groups:
        variant, finished = winners[g.key]
        for seed in (g.seeds if finished else g.seeds[:1]):
            out[(g.task, g.method, variant, seed)] = by_key[(g.task, g.method, variant, seed)]
    return sorted(out.values(), key=lambda c: c.key)
