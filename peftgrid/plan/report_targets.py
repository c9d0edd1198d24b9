"""What a task's report compares on, defined once for the plan (summary and ranks specs) and the
report (report.analysis re-exports these): its primary eval set, primary metric (a summary
column) and primary decoding. `task_cfg` needs only the task's `eval` / `metrics` keys, in config
order; `report_cfg` is the config's `report:` block."""
from __future__ import annotations


def primary_eval(task_cfg: dict, report_cfg: dict, task: str) -> str:
    """report.eval_set.<task>, else the task's `test` set, else its first eval set."""
    chosen = (report_cfg or {}).get("eval_set", {}).get(task)
    if chosen:
        return chosen
    return "test" if "test" in task_cfg["eval"] else next(iter(task_cfg["eval"]))


def primary_metric(task_cfg: dict, report_cfg: dict, task: str) -> str:
    """The summary column that ranks the task's cells: report.quality_metric.<task>, else the
    task's first metric (a metric filling several columns: its main one, rouge -> rougeL)."""
    from ..metrics import main_column

    return main_column((report_cfg or {}).get("quality_metric", {}).get(task) or task_cfg["metrics"][0])


def primary_decoding(decodings) -> str:
    """A generation task's primary decoding: the first in config order, a pre-registered choice
    for every method that chose none on a selection set ("" for a task that does not generate)."""
    return next(iter(decodings or []), "")


# The report's files, relative to REPORT_DIR (report.md links them so). Each figure: its name (the
# rule's output and the report builder's key) -> (subcategory in the Snakemake report, heading in
# report.md, caption file under report/).
REPORT_DIR = "results/report"
REPORT_FILE = f"{REPORT_DIR}/report.md"
TASK_FIGURES = {
    "pareto": ("Pareto fronts", "Quality against cost", "pareto"),
    "learn_forget": ("Learning and forgetting", "Task score against forgetting", "learn_forget"),
    "learning_curves": ("Learning curves", "Loss curves", "learning_curves"),
    "distances": ("Weight distances", "Weight distance to the pretrained model, per component", "distances"),
    "sweep": ("Sweeps", "Hyperparameter sweeps", "sweep"),
}
GENERATION_FIGURES = {
    "sentence_bleu": ("Sentence scores", "Sentence scores", "sentence_scores"),
    "sentence_chrf": ("Sentence scores", "Sentence scores", "sentence_scores"),
}
TUNING_FIGURE = "tuning"
RANKS_FIGURE = "ranks"
# The across-task ranks' bootstrap over tasks (report/ranks.py; the ranks rule's params carry them)
RANKS_RESAMPLES = 2000
RANKS_SEED = 0


# The report's tables, relative to REPORT_DIR: a task's own (<task>.tsv, <task>.md) and beside it one
# file of each kind (<task>_<kind>.tsv or .md); the across-task ranks under RANKS_TABLE.
TABLE_KINDS = ("tuning", "recommendations", "transfer", "qualitative")
RANKS_TABLE = "ranks"


def table_file(name: str, kind: str = "", ext: str = "md") -> str:
    """One of the report's tables: tables/<name>.<ext>, or tables/<name>_<kind>.<ext> (name: a
    task, or RANKS_TABLE)."""
    if kind and kind not in TABLE_KINDS:
        raise ValueError(f"unknown report table kind {kind!r} (known: {', '.join(TABLE_KINDS)})")
    return f"tables/{name}_{kind}.{ext}" if kind else f"tables/{name}.{ext}"


def figure_file(task: str | None, name: str) -> str:
    """A figure of one task's report (figures/<task>/<name>.png), or of the whole study (task None)."""
    return f"figures/{task}/{name}.png" if task else f"figures/{name}.png"
