"""The results tree's names: a cell's run directory, the files in it, each of its evaluations'
directories and the per-task distance tables. Two features keep their own paths beside their logic:
retention (plan/retention.py: retention_dir, base_retention_dir) and the tuning stages
(plan/tune.py: TUNE_DIR, rung directories, KEPT_CHECKPOINT). No imports: the run table (runs.py)
and the tuning plan (tune.py) both name files from here, and tune.py cannot import runs.py."""
from __future__ import annotations

RUN_DIR = "results/runs/{task}/{method}/{variant}/seed{seed}"
# A cell's files in its run directory, named here only: training writes the first three (run.json
# last: its presence means the cell is complete), and each evaluation the last three in a directory
# of its own (evaluation_dir).
TRAIN_LOG_FILE = "train_log.tsv"
TRAIN_STATS_FILE = "train_stats.tsv"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.tsv"
PREDICTIONS_FILE = "predictions.jsonl"
PER_LABEL_FILE = "per_label.tsv"  # label tasks on a reported eval set only
# Training's folder of the trained model (each method's own format), its tokenizer in a folder inside.
MODEL_DIR = "model"
TOKENIZER_DIR = "tokenizer"

# The study's table: one row per reported cell, eval set and decoding (jobs/summary.py writes it).
SUMMARY_FILE = "results/summary.tsv"


# Weight distances: one table per task (every reported cell's tensors, by cell identity) and the
# per-cell rows cached by content (jobs/distances.py), so one job per task recomputes only what changed.
DISTANCES_DIR = "results/distances"
DISTANCES_CACHE_DIR = f"{DISTANCES_DIR}/cache"


def task_distances_file(task: str) -> str:
    return f"{DISTANCES_DIR}/{task}.tsv"


def run_dir(ident: dict) -> str:
    """A cell's directory from its identity (task, method, variant, seed)."""
    return RUN_DIR.format(**ident)


SELECTION_EVAL_DIR = "select"
REPORTED_EVAL_DIR = "eval"


def evaluation_dir(eval_name: str | None, decoding: str = "") -> str:
    """One evaluation's directory in its run directory: eval/<eval set>, or select for the task's
    unreported selection set (eval_name None); a generation task's one per decoding below it."""
    where = SELECTION_EVAL_DIR if eval_name is None else f"{REPORTED_EVAL_DIR}/{eval_name}"
    return f"{where}/{decoding}" if decoding else where


def scores_a_choice(evaluation: str) -> bool:
    """Whether an evaluation (its evaluation_dir) is on the selection set: it scores a choice at the
    selection seed, and no table reports its run or its cost."""
    return evaluation.split("/")[0] == SELECTION_EVAL_DIR


def eval_dir(run: str, eval_name: str | None, decoding: str = "") -> str:
    """A run's outputs of one evaluation (evaluation_dir; also on the RUN_DIR pattern)."""
    return f"{run}/{evaluation_dir(eval_name, decoding)}"


def predictions_file(run: str, eval_name: str | None, decoding: str = "") -> str:
    return f"{eval_dir(run, eval_name, decoding)}/{PREDICTIONS_FILE}"
