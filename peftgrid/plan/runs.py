"""The run table: `experiments` expanded into cells, one per (task, method, variant, seed),
each with its resolved hyperparameters in canonical form (a cell's directory: plan/layout.py), and
the evaluations a cell can run. Precedence, lowest first: training < tasks.<t>.training < methods.<m> (the
preset's defaults, then the config's entry) < the sweep cell < the tuned grid point.

A (task, method) that needs a choice (plan/tune.py: several variants, or several decodings and
an unreported selection set) also runs at the experiment's selection seed, which is never
reported: an untuned sweep every variant there as well as at every reported seed; a tuned one
its grid points there, and each group's winner at every reported seed. Which winners run is
decided by the workflow's selection checkpoint; all are in the table so any can be planned."""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..methods import method_of
from ..tasks import task_type
from .config import canonical, chooses_decoding, eval_set_reading_selection
from .layout import RUN_DIR, evaluation_dir, run_dir
from .report_targets import primary_decoding
from .tune import Choice, TuneGroup, extension_points, grid_points, selection_metric

def evaluations(config: dict, task: str) -> dict[str, tuple[str | None, str]]:
    """Every evaluation a cell of `task` can run, by its evaluation_dir -> (eval set, None for the
    selection set; decoding, "" unless the task generates). The evaluate rule looks a requested
    directory up here instead of parsing it."""
    t = config["tasks"][task]
    decodings = list(t["decoding"]) if task_type(t["type"]).generates else [""]
    sets = [*t["eval"], *([None] if t["selection"] is not None else [])]
    return {evaluation_dir(e, d): (e, d) for e in sets for d in decodings}


@dataclass(frozen=True)
class Cell:
    task: str
    method: str
    variant: str
    seed: int
    kind: str
    hparams: dict = field(compare=False, hash=False)
    tuned: bool = field(default=False, compare=False, hash=False)  # a grid point: at a reported seed runs only if selected
    selecting: bool = field(default=False, compare=False, hash=False)  # at the selection seed: chooses, never reported

    @property
    def dir(self) -> str:
        return run_dir(self.ident)

    @property
    def key(self) -> tuple:
        return (self.task, self.method, self.variant, self.seed)

    @property
    def ident(self) -> dict:
        """The cell's identity as it travels in params (never parsed back from a path)."""
        return {"task": self.task, "method": self.method, "variant": self.variant, "seed": self.seed}



def _format_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return format(v, "g")
    if isinstance(v, list):
        return "+".join(_format_value(x) for x in v)
    return str(v)


VARIANT_PATTERN = r"[A-Za-z0-9_.+=-]+"  # a variant's (and a tuned group's) name: a directory name


def variant_name(sweep_cell: dict) -> str:
    """`default`, or the swept keys sorted: `alpha=16_r=8` (no commas: they break cluster jobs)."""
    if not sweep_cell:
        return "default"
    name = "_".join(f"{k}={_format_value(v)}" for k, v in sorted(sweep_cell.items()))
    if not re.fullmatch(VARIANT_PATTERN, name):
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
    carve = ("give an unreported selection split, e.g. validation: {split: selection} carved from train with "
             "the dataset's split_ratio: {train: 0.9, selection: 0.1}")
    if selection["reported"]:
        raise ConfigError(f"tasks.{task}.validation: {selection['name']!r} is a reported eval set, and {method} uses "
                          f"checkpoint: best, which would select on it; {carve}")
    same = eval_set_reading_selection(config["tasks"][task])
    if same:
        raise ConfigError(f"tasks.{task}.validation: split {selection['split']!r} is also read by the reported eval set "
                          f"{same!r}, and {method} uses checkpoint: best, which would select on it; {carve}")


def build_run_table(config: dict) -> list[Cell]:
    return _expand(config)[0]


def build_tune_groups(config: dict) -> list[TuneGroup]:
    return _expand(config)[1]


def build_choices(config: dict) -> list[Choice]:
    return _expand(config)[2]


def choice_decodings(config: dict, task: str, metric: str | None) -> tuple:
    """The decodings a choice scores: every one where the task chooses its decoding (plan/config.py
    chooses_decoding), else its primary (first) one; ("",) for a task that does not generate."""
    t = config["tasks"][task]
    if not t.get("decoding") or not task_type(t["type"]).generates:
        return ("",)
    return tuple(t["decoding"]) if chooses_decoding(t, metric) else (primary_decoding(t["decoding"]),)


def _selection_target(config: dict, task: str, select: dict) -> tuple[str, str, bool]:
    """(selection set name, metric column, higher is better) an experiment's `select` means for a task."""
    from ..metrics import higher_is_better, main_column

    t = config["tasks"][task]
    metric = selection_metric(select, t)
    # loss: final_val_loss of training, logged on the selection set
    column = "loss" if metric == "loss" else main_column(metric)
    return t["selection"]["name"], column, higher_is_better(column)


def _expand(config: dict) -> tuple[list[Cell], list[TuneGroup], list[Choice]]:
    cells: dict[tuple, Cell] = {}
    groups: dict[tuple, TuneGroup] = {}
    choices: dict[tuple, Choice] = {}
    by_settings: dict[tuple, Cell] = {}  # (task, method, seed, settings) -> the first cell with them

    def add(i, cell):
        settings = (cell.task, cell.method, cell.seed, json.dumps(cell.hparams, sort_keys=True))
        same = by_settings.setdefault(settings, cell)
        if same.variant != cell.variant:
            raise ConfigError(f"experiments[{i}]: {cell.dir} and {same.dir} are one cell under two names (the same "
                              f"settings); drop one, e.g. list {cell.method} in only one experiment")
        old = cells.get(cell.key)
        if old is not None and old.hparams != cell.hparams:
            raise ConfigError(f"experiments[{i}]: cell {cell.dir} is defined twice with different settings")
        if old is not None and old.selecting != cell.selecting:
            raise ConfigError(f"experiments[{i}]: {cell.dir} would both choose (seed {cell.seed} is a select.seed) "
                              f"and be reported; give select.seed a seed that no experiment reports")
        if old is not None and not old.tuned:
            return  # another experiment reports it for every seed: it runs anyway
        cells[cell.key] = cell

    for i, exp in enumerate(config["experiments"]):
        tune, select = exp["tune"], exp["select"]
        for task, method in itertools.product(exp["tasks"], exp["methods"]):
            sweep = exp["sweep"].get(method, {})
            keys = sorted(sweep)
            variants, task_groups = {}, []  # variant -> its hparams (without seed)
            for values in itertools.product(*(sweep[k] for k in keys)):
                sweep_cell = dict(zip(keys, values))
                base = resolve_hparams(config, task, method, sweep_cell)
                if method not in tune:
                    variants[variant_name(sweep_cell)] = base
                    continue
                points = grid_points(tune[method], base["lr"])
                grid = {variant_name({**sweep_cell, **p}): {**base, **canonical(p)} for p in points}
                variants.update(grid)
                on, metric, higher = _selection_target(config, task, select)
                default = next((v for v, p in zip(grid, points)
                                if all(canonical(p[k]) == canonical(base.get(k)) for k in p)), next(iter(grid)))
                how = exp["tuning"]
                extend = how["extend"] if tune[method].get("lr") == "auto" else 0
                beyond = extension_points(tune[method], base["lr"], extend)  # planned like grid points: any may run
                extensions = {variant_name({**sweep_cell, **p}): {**base, **canonical(p)} for p in beyond}
                variants.update(extensions)
                task_groups.append(TuneGroup(task, method, variant_name(sweep_cell), tuple(exp["seeds"]), tuple(grid),
                                             tuple(canonical(p) for p in points), on,
                                             config["tasks"][task]["selection"]["split"], metric, higher, default,
                                             select["seed"], choice_decodings(config, task, metric), how["strategy"],
                                             how["eta"], how["min_steps"], extend, tuple(extensions),
                                             tuple(canonical(p) for p in beyond)))
            tuned = method in tune
            several_decodings = len(choice_decodings(config, task, select["metric"])) > 1
            choice = (_choice(config, task, method, select, list(variants), task_groups)
                      if tuned or len(variants) > 1 or several_decodings else None)
            for variant, hp0 in variants.items():
                # tuned: every grid point may win, so each is planned at every reported seed
                for seed in exp["seeds"]:
                    hp = canonical({**hp0, "seed": seed})
                    _check_selection(config, task, method, hp)
                    add(i, Cell(task, method, variant, seed, hp["kind"], hp, tuned=tuned))
                if choice is not None:
                    hp = canonical({**hp0, "seed": select["seed"]})
                    add(i, Cell(task, method, variant, select["seed"], hp["kind"], hp, tuned=tuned, selecting=True))
            for group in task_groups:
                if group.key in groups and groups[group.key] != group:
                    raise ConfigError(f"experiments[{i}].tune: {task}/{method}"
                                      f"{'' if group.group == 'default' else '/' + group.group} is tuned by two "
                                      f"experiments with different grids, seeds or selection")
                groups[group.key] = group
            if choice is not None:
                if choice.key in choices and choices[choice.key] != choice:
                    raise ConfigError(f"experiments[{i}]: {task}/{method} is chosen by two experiments among "
                                      f"different variants or at different select settings; list it in one of them")
                choices[choice.key] = choice
    return (sorted(cells.values(), key=lambda c: c.key), sorted(groups.values(), key=lambda g: g.key),
            sorted(choices.values(), key=lambda c: c.key))


def _choice(config: dict, task: str, method: str, select: dict, variants: list[str], groups: list[TuneGroup]) -> Choice:
    """The (variant, decoding) choice of one (task, method); the config check has made sure that its
    selection set is unreported. Tuned: over every group's grid points, groups by name."""
    selection = config["tasks"][task]["selection"]
    _, metric, higher = _selection_target(config, task, select)
    if groups:
        groups = sorted(groups, key=lambda g: g.group)
        variants, default = [v for g in groups for v in g.candidates], groups[0].default
    else:
        default = variants[0]
    return Choice(task, method, select["seed"], tuple(variants), choice_decodings(config, task, metric),
                  f"{selection['dataset']}/{selection['split']}", selection["dataset"], selection["split"], metric,
                  higher, default, tuple(g.selection_file for g in groups if g.staged))


def reported_cells(cells: list[Cell], groups: list[TuneGroup], winners: dict[tuple, tuple[str, int]]) -> list[Cell]:
    """What the tables report: every untuned cell at a reported seed (never one at a selection
    seed), and each group's winner on all its reported seeds (`winners`: group key -> (variant,
    finished grid points); none finished: the first reported seed only, which carries the failure)."""
    by_key = {c.key: c for c in cells}
    out = {c.key: c for c in cells if not c.tuned and not c.selecting}
    for g in groups:
        variant, finished = winners[g.key]
        for seed in (g.seeds if finished else g.seeds[:1]):
            out[(g.task, g.method, variant, seed)] = by_key[(g.task, g.method, variant, seed)]
    return sorted(out.values(), key=lambda c: c.key)
