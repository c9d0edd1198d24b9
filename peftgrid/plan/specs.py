"""Typed job specs: what each rule passes its script, built here and only here.

Every rule's `params:` is one spec's `to_params()` — a canonical (key-sorted, JSON-plain) dict
holding exactly what the job reads — so Snakemake re-runs a job precisely when its inputs in the
config change, and never because YAML keys were reordered. Scripts rebuild the spec with
`<Spec>.from_params(snakemake.params.spec)`; tests and benchmarks build the same specs from a
config with the same functions, so all three run jobs the same way.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..plugins import LOADED
from .config import canonical
from .report_targets import RANKS_RESAMPLES, RANKS_SEED, primary_decoding, primary_eval, primary_metric
from .layout import predictions_file, run_dir
from .runs import Cell, evaluations

SELECTION_READ_KEYS = ("name", "dataset", "split", "max_examples")  # what training and the selection eval read of it


@dataclass(frozen=True)
class Spec:
    def to_params(self) -> dict:
        """The spec, plus the plugin modules the registries came from (the job imports them first:
        jobs.common.run_job); editing `plugins:` re-runs every job, and a study without any keeps
        its params."""
        plugins = {"plugins": list(LOADED)} if LOADED else {}
        return canonical({**asdict(self), **plugins})

    @classmethod
    def from_params(cls, params):
        params = dict(params)  # a field with a default (TrainSpec.rung) may be absent from params
        return cls(**{f.name: params[f.name] for f in fields(cls) if f.name in params})


@dataclass(frozen=True)
class StageDatasetSpec(Spec):
    name: str
    source: dict


@dataclass(frozen=True)
class StageModelSpec(Spec):
    name: str
    source: dict


@dataclass(frozen=True)
class StageCometSpec(Spec):
    source: dict | None


@dataclass(frozen=True)
class CheckDataSpec(Spec):
    """A task's data, every eval set included, checked before any cell trains."""
    task: str
    data: dict


@dataclass(frozen=True)
class TrainSpec(Spec):
    cell: dict
    hparams: dict
    task: dict
    model: dict
    # successive halving's rung (peftgrid.jobs.train Rung): as rules/halving.smk gives it, {"share": float,
    # "min_steps": int, "from_checkpoint": str | None} (the job turns the share into the step it stops
    # after: the plan does not know a run's length); None trains the whole run, and is left out of
    # params so no other cell's params change
    rung: dict | None = None

    def to_params(self) -> dict:
        params = super().to_params()
        return params if self.rung is not None else {k: v for k, v in params.items() if k != "rung"}


@dataclass(frozen=True)
class EvalSpec(Spec):
    cell: dict
    hparams: dict
    task: dict
    model: dict
    eval: dict
    decoding: dict | None


@dataclass(frozen=True)
class CometSpec(Spec):
    """One task's COMET job: every cell x eval set x decoding, scored with one model load."""
    task: str
    batch_size: int
    cells: list      # cell identities, sorted by method, variant, seed
    evals: list      # sorted: the job's inputs do not depend on the order the config writes them
    decodings: list  # sorted, as evals

    def files(self) -> list[tuple[dict, str, str, str]]:
        """(cell, eval set, decoding, predictions file) of every output the job scores."""
        return [(c, e, d, predictions_file(run_dir(c), e, d)) for c in self.cells for e in self.evals
                for d in self.decodings]


@dataclass(frozen=True)
class SummarySpec(Spec):
    """What the console table shows per task: its first metric on its main eval set."""
    tasks: dict


@dataclass(frozen=True)
class TaskReportSpec(Spec):
    task: str
    evals: list
    metrics: list
    transfer: dict | None
    report: dict
    cells: list
    decodings: list  # generation: the decoding strategies (predictions under eval/<eval>/<decoding>/); else []
    selection: dict | None  # the task's selection set {name, dataset, split, reported}; None: it has none
    baseline: str | None  # the task's untrained method (compared against, never recommended); None: none
    retention: list  # the task's retention sets, config order (plan/retention.py); [] measures nothing

    def predictions(self) -> dict[tuple, str]:
        """(method, variant, seed, eval set, decoding) -> predictions file, for every reported cell."""
        return {(c["method"], c["variant"], c["seed"], e, d): predictions_file(run_dir(c), e, d)
                for c in self.cells for e in self.evals for d in (self.decodings or [""])}

    def cell_files(self, name: str) -> list[tuple[dict, str]]:
        """(cell identity, its file `name`: train_log.tsv, run.json, ...) of every reported cell."""
        return [(c, f"{run_dir(c)}/{name}") for c in self.cells]

    def retention_files(self) -> dict[tuple, tuple[str, str]]:
        """(method, variant, seed, retention set) -> (metrics.tsv, per_document.tsv) of every reported cell."""
        return {(c["method"], c["variant"], c["seed"], name): tuple(f"{retention_dir(run_dir(c), name)}/{RETENTION_FILES[k]}"
                                                                    for k in ("metrics", "per_document"))
                for c in self.cells for name in self.retention}


@dataclass(frozen=True)
class ReportSpec(Spec):
    tasks: dict
    report: dict


@dataclass(frozen=True)
class RanksSpec(Spec):
    """Across-task ranks: per task its primary metric (summary column), primary eval set, the
    reported eval set variants are chosen on (or None), first decoding ("" unless generation), its
    tuned groups' selection.tsv files and its choice files (rule inputs; report/tuning.py
    read_choices); the bootstrap's resamples and seed."""
    tasks: dict
    resamples: int
    seed: int


@dataclass(frozen=True)
class TrackSpec(Spec):
    """The MLflow export: the `tracking` settings and every cell's identity, in the order of the
    rule's run.json / train_log.tsv inputs (the job pairs them by position)."""
    tracking: dict
    cells: list


# --------------------------------------------------------------------------- builders

def _pick(entry: dict, keys) -> dict:
    return {k: entry[k] for k in keys if k in entry}


def _model(config: dict, task: str) -> dict:
    name = config["tasks"][task]["model"]
    return {"name": name, "allow_pickle": config["models"][name]["allow_pickle"]}


def stage_dataset_spec(config: dict, name: str) -> StageDatasetSpec:
    return StageDatasetSpec(name=name, source=config["datasets"][name])


def stage_model_spec(config: dict, name: str) -> StageModelSpec:
    return StageModelSpec(name=name, source=config["models"][name])


def stage_comet_spec(config: dict) -> StageCometSpec:
    comet = config.get("comet")  # staging reads the source only; batch_size is the scoring job's
    return StageCometSpec(source=None if comet is None else {"source": comet["source"]})


def check_data_spec(config: dict, task: str) -> CheckDataSpec:
    t = config["tasks"][task]
    data = {**_pick(t, TASK_TYPES[t["type"]].train_keys), "eval": t["eval"], "selection": t["selection"],
            **({"retention": t["retention"]} if t.get("retention") else {})}  # absent: other studies' params unchanged
    return CheckDataSpec(task=task, data=data)


def train_spec(config: dict, cell: Cell) -> TrainSpec:
    t = config["tasks"][cell.task]
    view = _pick(t, TASK_TYPES[t["type"]].train_keys)
    if t["selection"] is not None:
        view["validation"] = _pick(t["selection"], SELECTION_READ_KEYS)
    return TrainSpec(cell=cell.ident, hparams=cell.hparams, task=view, model=_model(config, cell.task))


def eval_spec(config: dict, cell: Cell, eval_name: str, decoding: str | None = None) -> EvalSpec:
    t = config["tasks"][cell.task]
    view = _pick(t, TASK_TYPES[t["type"]].eval_keys)
    view["metrics"] = list(t["metrics"])
    if settings := metric_settings(config, t["metrics"]):  # e.g. bertscore's model and layer
        view["metric_settings"] = settings
    dec = None if decoding is None else {"name": decoding, "settings": t["decoding"][decoding]}
    return EvalSpec(cell=cell.ident, hparams=cell.hparams, task=view, model=_model(config, cell.task),
                    eval={"name": eval_name, **t["eval"][eval_name]}, decoding=dec)


def selection_eval_spec(config: dict, cell: Cell, decoding: str = "") -> EvalSpec:
    """A run at the selection seed scored on the task's unreported selection set (never a reported
    eval set); generation: with one decoding (the choice generates with each it chooses among)."""
    t = config["tasks"][cell.task]
    view = _pick(t, TASK_TYPES[t["type"]].eval_keys)
    view["metrics"] = [m for m in t["metrics"] if m not in own_rule_metrics(t["metrics"])]
    if settings := metric_settings(config, view["metrics"]):
        view["metric_settings"] = settings
    dec = {"name": decoding, "settings": t["decoding"][decoding]} if decoding else None
    return EvalSpec(cell=cell.ident, hparams=cell.hparams, task=view, model=_model(config, cell.task),
                    eval=_pick(t["selection"], SELECTION_READ_KEYS), decoding=dec)


def evaluation_spec(config: dict, cell: Cell, evaluation: str) -> EvalSpec:
    """The spec of one of a cell's evaluations, named by its directory in the run (plan/runs.py
    evaluations): a reported eval set, or the selection set; with a decoding where the task generates."""
    found = evaluations(config, cell.task).get(evaluation)
    if found is None:
        raise ValueError(f"{cell.dir}/{evaluation}: no such evaluation in the config's task {cell.task!r}")
    eval_name, decoding = found
    if eval_name is None:
        return selection_eval_spec(config, cell, decoding)
    return eval_spec(config, cell, eval_name, decoding or None)


@dataclass(frozen=True)
class SelectSpec(Spec):
    """One tuned (task, method, sweep variant): its grid points in grid order and how to pick
    (plan/tune.py). The job pairs the rule's score files with `group.candidates` by position."""
    group: dict


@dataclass(frozen=True)
class ChooseSpec(Spec):
    """One (task, method)'s choice of (variant, decoding) at the selection seed (plan/tune.py
    Choice); the job pairs the rule's score files with `choice.pairs()` by position."""
    choice: dict


@dataclass(frozen=True)
class TuningReportSpec(Spec):
    """One task's tuned groups (their selection.tsv files in this order)."""
    task: str
    groups: list


def select_spec(group) -> SelectSpec:
    return SelectSpec(group=group.to_params())


def choose_spec(choice) -> ChooseSpec:
    return ChooseSpec(choice=choice.to_params())


def tuning_report_spec(task: str, groups: list) -> TuningReportSpec:
    return TuningReportSpec(task=task, groups=[g.to_params() for g in groups if g.task == task])


def comet_spec(config: dict, task: str, cells: list[Cell]) -> CometSpec:
    mine = sorted((c for c in cells if c.task == task), key=lambda c: (c.method, c.variant, c.seed))
    t = config["tasks"][task]
    return CometSpec(task=task, batch_size=config["comet"]["batch_size"], cells=[c.ident for c in mine],
                     evals=sorted(t["eval"]), decodings=sorted(t["decoding"]))


def summary_spec(config: dict, tasks: list[str]) -> SummarySpec:
    report = config["report"]
    shown = {t: {"metric": primary_metric(config["tasks"][t], report, t),
                 "eval": primary_eval(config["tasks"][t], report, t),
                 "decoding": primary_decoding(config["tasks"][t].get("decoding"))}
             for t in tasks}
    return SummarySpec(tasks=shown)


def _baseline(config: dict, task: str) -> str | None:
    """The task's untrained method (methods.baseline_names), the reference its report compares
    against; None when the task has none. Its report sees method names only."""
    studied = {m for exp in config["experiments"] if task in exp["tasks"] for m in exp["methods"]}
    return next(iter(n for n in baseline_names(config["methods"]) if n in studied), None)


def task_report_spec(config: dict, task: str, cells: list[Cell]) -> TaskReportSpec:
    t = config["tasks"][task]
    return TaskReportSpec(task=task, evals=list(t["eval"]), metrics=list(t["metrics"]), transfer=t.get("transfer"),
                          baseline=_baseline(config, task), retention=retention_sets(t),
                          report=config["report"], cells=[c.ident for c in cells if c.task == task],
                          decodings=list(t["decoding"]) if generates(t["type"]) else [],
                          selection=None if t["selection"] is None else _pick(t["selection"], ("name", "dataset", "split",
                                                                                               "reported")))


def report_spec(config: dict, tasks: list[str]) -> ReportSpec:
    return ReportSpec(tasks={t: {"evals": list(config["tasks"][t]["eval"]), "metrics": config["tasks"][t]["metrics"],
                                 "transfer": config["tasks"][t].get("transfer"),
                                 "generates": generates(config["tasks"][t]["type"]),
                                 "retention": retention_sets(config["tasks"][t])}
                             for t in tasks},
                      report=config["report"])


def ranks_spec(config: dict, tasks: list[str], choices: list = ()) -> RanksSpec:
    out = {}
    report = config["report"]
    for t in tasks:
        entry = config["tasks"][t]
        out[t] = {"metric": primary_metric(entry, report, t), "eval": primary_eval(entry, report, t),
                  "baseline": _baseline(config, t),
                  "decodings": list(entry["decoding"]) if generates(entry["type"]) and entry.get("decoding") else [],
                  "choices": [c.file for c in choices if c.task == t]}
    return RanksSpec(tasks=out, resamples=RANKS_RESAMPLES, seed=RANKS_SEED)


TRACKING_RECORD = "results/tracking.json"


def track_spec(config: dict, cells: list[Cell]) -> TrackSpec:
    return TrackSpec(tracking=dict(config["tracking"]), cells=[c.ident for c in cells])


def tracking_targets(config: dict) -> list[str]:
    """What `rule all` adds for tracking: the export's record, only when `tracking:` is set."""
    return [TRACKING_RECORD] if config.get("tracking") is not None else []


from ..methods import baseline_names  # noqa: E402  (registry, torch-free)
from ..metrics import metric_settings, own_rule_metrics  # noqa: E402  (registry, torch-free)
from ..tasks import TASK_TYPES  # noqa: E402  (registry, torch-free)


def generates(type_name: str) -> bool:
    """Asked when a spec is built, not at import: a plugin's task types are registered by then."""
    return TASK_TYPES[type_name].generates


# --------------------------------------------------------------------------- retention (issue 20)

@dataclass(frozen=True)
class RetentionBaseSpec(Spec):
    """The pretrained model scored once on one retention set (plan/retention.py): the reference of
    every cell of every task that uses both."""
    task: dict       # {"type": ...}: how the model is loaded
    model: dict
    retention: dict  # {"name", "dataset", "split", "max_examples", "max_length"}
    family: str      # causal | seq2seq | encoder (plan/retention.py family)


@dataclass(frozen=True)
class RetentionSpec(RetentionBaseSpec):
    """One reported cell scored on one retention set: the base reference's fields (of the cell's
    task), plus the cell, whose trained model it loads as evaluation does."""
    cell: dict
    hparams: dict


def _retention_fields(config: dict, task: str, name: str) -> dict:
    """RetentionBaseSpec's fields for task `task` on its retention set `name`."""
    t = config["tasks"][task]
    return {"task": {"type": t["type"]}, "model": _model(config, task),
            "retention": {"name": name, **_pick(t["retention"][name], RETENTION_SET_KEYS)},
            "family": retention_family(TASK_TYPES[t["type"]])}


def retention_spec(config: dict, cell: Cell, name: str) -> RetentionSpec:
    return RetentionSpec(cell=cell.ident, hparams=cell.hparams, **_retention_fields(config, cell.task, name))


def retention_base_spec(config: dict, model: str, name: str) -> RetentionBaseSpec:
    """From the first task (by name) that scores `model` on set `name`; the config check makes
    every such task's set and model family the same."""
    task = next(t for t in sorted(config["tasks"]) if config["tasks"][t]["model"] == model
                and name in (config["tasks"][t].get("retention") or {}))
    return RetentionBaseSpec(**_retention_fields(config, task, name))


from .retention import FILES as RETENTION_FILES, SET_KEYS as RETENTION_SET_KEYS, family as retention_family  # noqa: E402
from .retention import retention_dir, retention_sets  # noqa: E402  (torch-free)


@dataclass(frozen=True)
class StageSpec(Spec):
    """One stage of a staged tuning group (plan/tune.py: halving's rungs, extension points): its
    competitors in grid order, which the job pairs with the rule's score files by position."""
    group: dict
    stage: int
    competitors: list


def stage_spec(group, stage: int, competitors: list) -> StageSpec:
    return StageSpec(group=group.to_params(), stage=stage, competitors=list(competitors))


def rung_train_spec(config: dict, cell: Cell, rung: dict) -> TrainSpec:
    """A halving rung of a selection-seed run: the run's own spec with the rung (jobs/train.py Rung)."""
    from dataclasses import replace

    return replace(train_spec(config, cell), rung=rung)


@dataclass(frozen=True)
class DistancesSpec(Spec):
    """One task's weight-distance job: each reported cell's train spec (TrainSpec.to_params), in the
    order of the rule's run.json / model inputs. The job keys each cell's cached rows on its spec and
    its run.json (jobs/distances.py), so a cell that trained again is measured again."""
    task: str
    cells: list

    def train_specs(self) -> list[TrainSpec]:
        return [TrainSpec.from_params(c) for c in self.cells]


def distances_spec(config: dict, task: str, cells: list[Cell]) -> DistancesSpec:
    return DistancesSpec(task=task, cells=[train_spec(config, c).to_params() for c in cells if c.task == task])
