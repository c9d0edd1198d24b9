"""The run table: `experiments` expanded into cells, one per (task, method, variant, seed),
each with its resolved hyperparameters in canonical form, and the one pattern that names a
cell's directory. Precedence, lowest first: training < tasks.<t>.training < methods.<m> (the
preset's defaults, then the config's entry) < the sweep cell."""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..methods import method_of
from .config import canonical

RUN_DIR = "results/runs/{task}/{method}/{variant}/seed{seed}"


@dataclass(frozen=True)
class Cell:
    task: str
    method: str
    variant: str
    seed: int
    kind: str
    hparams: dict = field(compare=False, hash=False)

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
    cells: dict[tuple, Cell] = {}
    for i, exp in enumerate(config["experiments"]):
        for task, method, seed in itertools.product(exp["tasks"], exp["methods"], exp["seeds"]):
            sweep = exp["sweep"].get(method, {})
            keys = sorted(sweep)
            for values in itertools.product(*(sweep[k] for k in keys)):
                sweep_cell = dict(zip(keys, values))
                hp = resolve_hparams(config, task, method, sweep_cell)
                hp["seed"] = seed
                _check_selection(config, task, method, hp)
                cell = Cell(task, method, variant_name(sweep_cell), seed, hp["kind"], hp)
                if cell.key in cells and cells[cell.key].hparams != hp:
                    raise ConfigError(f"experiments[{i}]: cell {cell.dir} is defined twice with different settings")
                cells[cell.key] = cell
    return sorted(cells.values(), key=lambda c: c.key)
