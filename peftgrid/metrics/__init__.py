"""The Metric registry: every quality metric a task may ask for, with what a reader needs to
compare it — which tasks it applies to, whether higher is better, its scale (0-1 or 0-100),
the columns it writes and whether per-example scores are kept (for significance tests).

Computation lives beside it (classification.py, text.py, comet.py) and imports its libraries
only when called, so the planning layer can read this registry without them."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str                         # "label" (classification, tagging) or "text" (generation)
    scale: float = 1.0                # 1.0: a 0-1 score; 100.0: a 0-100 score
    higher_is_better: bool = True
    columns: tuple[str, ...] = ()     # summary columns it fills (default: its name)
    per_example: str | None = None    # per-example score kept in predictions.jsonl
    per_example_columns: bool = False  # every column is also kept per example, under its own name
    own_rule: bool = False            # scored by its own rule (COMET: one model load per task)

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.columns or (self.name,)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", "label", per_example="correct"),
    Metric("f1_macro", "label"), Metric("precision_macro", "label"), Metric("recall_macro", "label"),
    Metric("f1_weighted", "label"),
    Metric("f1", "label"), Metric("precision", "label"), Metric("recall", "label"),  # binary: the positive label
    Metric("mcc", "label"),
    Metric("bleu", "text", scale=100.0, per_example="sentence_bleu"),
    Metric("sentence_bleu", "text", scale=100.0, per_example="sentence_bleu"),
    Metric("chrf", "text", scale=100.0, per_example="sentence_chrf"),
    Metric("rouge", "text", scale=100.0, columns=("rouge1", "rouge2", "rougeL", "rougeLsum"), per_example="rougeL",
           per_example_columns=True),
    # its job's segment scores are attached to each predictions line (report.analysis.read_predictions)
    Metric("comet", "text", scale=100.0, per_example="comet", own_rule=True),
)}


# name -> the function computing a registered metric (plugins; the built-ins' live beside this file)
COMPUTE: dict = {}
CHECKS: dict = {}  # name -> check(settings, base_dir) of its config entry, run when the workflow is parsed


def register(metric: Metric, compute, check=None) -> Metric:
    """Add a metric computed in the evaluation job (from a plugin module: see peftgrid.plugins).
    `compute(**data)` gets what the task type's evaluation gives its kind of metric — text:
    `hypotheses`, `references`; label and other kinds: `gold`, `pred` (ids, or a regression
    task's numbers), `num_labels`, `predictions` (the task type's predictions lines, inputs
    included); all: `metric_settings` — and returns (score, per-example scores or None): score is a
    number, or a dict by column for a metric with several `columns`. Per-example scores are kept in
    predictions.jsonl under `metric.per_example` (set it to keep them: the paired significance
    tests use them); without them the report re-scores runs from each line's `label` and
    `prediction`. Its direction and scale are the Metric's. `check(settings, base_dir)`, if given,
    checks the config's entry of the metric's name (its local model, ...) before any job runs, raising
    ConfigError."""
    known = METRICS.get(metric.name)
    if known is not None and known != metric:
        raise ValueError(f"metric {metric.name!r} is already registered, differently")
    METRICS[metric.name] = metric
    COMPUTE[metric.name] = compute
    if check is not None:
        CHECKS[metric.name] = check
    return metric


def check_settings(config: dict, base_dir) -> None:
    """Each check of a metric some task asks for, on its config entry (plan.paths, at parse time)."""
    asked = {m for t in config["tasks"].values() for m in t["metrics"]}
    for name in sorted(asked & set(CHECKS)):
        CHECKS[name](config.get(name), base_dir)


def main_column(name: str) -> str:
    """The summary column that ranks cells by this metric: a metric filling several columns is
    ranked by its per-example one (rouge -> rougeL); any other name is its own column."""
    m = METRICS.get(name)
    return m.per_example if m is not None and m.per_example in m.columns else name


def metric_settings(config: dict, names) -> dict:
    """The config's settings of the in-job metrics `names`, for the evaluation job: a metric's
    settings sit under the top-level key of its name (bertscore: {model, layer})."""
    return {n: config[n] for n in names if config.get(n) is not None and not METRICS[n].own_rule}


def owner(column: str) -> Metric | None:
    """The metric filling a summary column (rouge1 -> rouge); None if no metric does."""
    return next((m for m in METRICS.values() if column in m.outputs), None)


def metric_kind(column: str) -> str | None:
    """The kind of the metric filling a summary column (rouge1 -> "text"); None if no metric does."""
    m = owner(column)
    return m.kind if m is not None else None

def metrics_of_kind(kind: str) -> list[str]:
    return sorted(n for n, m in METRICS.items() if m.kind == kind)


def check_metrics(where: str, names: list[str], kind: str, task_type: str) -> None:
    allowed = metrics_of_kind(kind)
    for name in names:
        if name not in allowed:
            raise ConfigError(f"{where}: unknown metric {name!r} for {task_type}{did_you_mean(name, allowed)}")


LOSSES = ("loss", "final_val_loss")  # training losses a tuning group may select on


def higher_is_better(column: str) -> bool:
    """The direction of a summary column: its metric's (rouge1 -> rouge's); a loss is lower-is-better."""
    if column in LOSSES:
        return False
    m = owner(column)
    return m.higher_is_better if m is not None else True


def per_example_key(column: str) -> str | None:
    """The predictions.jsonl key holding a summary column's per-example score (rouge -> rougeL,
    rouge1 -> rouge1, accuracy -> correct); None where none is kept."""
    if column in METRICS:
        return METRICS[column].per_example
    for m in METRICS.values():
        if column in m.columns and m.per_example_columns:
            return column
    return None


def own_rule_metrics(names) -> list[str]:
    """Those of `names` scored by a rule of their own, not inside the evaluation job (COMET)."""
    return [n for n in names if n in METRICS and METRICS[n].own_rule]


def scale_of(column: str) -> float:
    """The scale of a summary column (rouge1 -> rouge's 100)."""
    m = owner(column)
    return m.scale if m is not None else 1.0


def compute(names: list[str], kind: str, **data) -> tuple[dict, list[dict]]:
    """(scores by column, per-example scores) of the in-job metrics (not COMET)."""
    names = [n for n in names if not METRICS[n].own_rule]
    builtin = [n for n in names if n not in COMPUTE]
    if not builtin:
        scores, per_example = {}, []
    elif kind == "label":
        from .classification import classification_metrics

        scores, per_example = classification_metrics(data["gold"], data["pred"], data["num_labels"], builtin), []
    else:
        from .text import generation_metrics

        scores, per_example = generation_metrics(data["hypotheses"], data["references"], builtin, data.get("rouge"))
    for name in names:
        if name in COMPUTE:
            scores, per_example = _add_registered(name, data, scores, per_example)
    return scores, per_example


def _add_registered(name: str, data: dict, scores: dict, per_example: list[dict]) -> tuple[dict, list[dict]]:
    score, each = COMPUTE[name](**data)
    scores = {**scores, **(score if isinstance(score, dict) else {name: score})}
    key = METRICS[name].per_example
    if key and each is not None:
        each = [float(v) for v in each]
        per_example = [{**old, key: v} for old, v in zip(per_example or [{} for _ in each], each)]
    return scores, per_example


def _bertscore(**data):
    from .bertscore import bertscore  # imports torch when it scores, not when the registry is read

    return bertscore(**data)


def _bertscore_encoder(settings: dict, base_dir) -> None:
    from .bertscore import local_encoder

    local_encoder(settings, base_dir)


# a built-in registered the way a plugin's metric is (model-based, scored in the evaluation job)
register(Metric("bertscore", "text", per_example="bertscore"), compute=_bertscore, check=_bertscore_encoder)
