# The run table, wildcard constraints and input functions shared by all rules. Every rule's
# params is one spec from peftgrid.plan.specs (a canonical, sorted dict of what the job reads).
import functools
import os
import re

from peftgrid.plan import RUN_DIR, read_selection, reported_cells
from peftgrid.plan import specs
from peftgrid.plan.layout import (METRICS_FILE, MODEL_DIR, PER_LABEL_FILE, PREDICTIONS_FILE, REPORTED_EVAL_DIR, RUN_FILE,
                                   SELECTION_EVAL_DIR, SUMMARY_FILE, TRAIN_LOG_FILE, TRAIN_STATS_FILE,
                                   scores_a_choice, task_distances_file)
from peftgrid.plan.runs import VARIANT_PATTERN, evaluations
from peftgrid.plan.splits import task_reads

CELL_BY_KEY = {(c.task, c.method, c.variant, int(c.seed)): c for c in CELLS}
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.+-]*"  # a task's, method's, eval set's, decoding's ... name


wildcard_constraints:
    task=NAME_PATTERN,
    method=NAME_PATTERN,
    variant=VARIANT_PATTERN,
    seed=r"\d+",
    dataset=NAME_PATTERN,
    model=NAME_PATTERN,


def cell_of(wildcards):
    key = (wildcards.task, wildcards.method, wildcards.variant, int(wildcards.seed))
    if key not in CELL_BY_KEY:
        raise WorkflowError(f"no cell {'/'.join(map(str, key))} in the config's experiments")
    return CELL_BY_KEY[key]


def once_per_job(fn):
    """`fn(wildcards)`, computed once per job's wildcards: Snakemake calls a rule's input functions
    and its params function each on its own, and each would build the same spec again. Only a
    result is kept: a checkpoint that has not run yet (its exception) is asked again next time."""
    results = {}

    def cached(wildcards):
        key = tuple(sorted(wildcards.items()))
        if key not in results:
            results[key] = fn(wildcards)
        return results[key]

    return cached


@once_per_job
def evaluation_spec(wildcards):
    """The spec of the evaluation a requested path names (rule evaluate: its `evaluation` wildcard,
    looked up among the cell's evaluations, never parsed)."""
    try:
        return specs.evaluation_spec(config, cell_of(wildcards), wildcards.evaluation)
    except ValueError as err:
        raise WorkflowError(str(err)) from None


def staged_model(name):
    return f"resources/models/{name}/staged.json"


def staged_dataset(name):
    return f"resources/datasets/{name}/meta.json"


STAGED_COMET = "resources/comet/staged.json"
DATA_CHECK = "results/checks/{task}.json"  # rule check_data's output: training waits for every task's
COMET_SCORES = "results/comet/{task}/scores.tsv"  # rule comet's outputs, read by the summary and the report
COMET_EXAMPLES = "results/comet/{task}/examples.tsv"


def task_model(task):
    return staged_model(config["tasks"][task]["model"])


def train_datasets(task):
    """The datasets training reads: the task's own and its validation set's."""
    t = config["tasks"][task]
    names = [t["dataset"]]
    if t["selection"] is not None:
        names.append(t["selection"]["dataset"])
    return sorted(set(names))


def task_datasets(task):
    """Every dataset a task reads: its splits (plan/splits.py task_reads: training, eval sets, the
    selection set) and its retention sets."""
    t = config["tasks"][task]
    retention = [r["dataset"] for r in (t.get("retention") or {}).values()]
    return sorted({read.dataset for read in task_reads(t)} | set(retention))


def generates(task):
    return specs.generates(config["tasks"][task]["type"])


def uses_comet(task):
    return "comet" in config["tasks"][task]["metrics"] and config.get("comet") is not None


def cell_eval_outputs(cell):
    """A cell's metrics on every reported eval set (and decoding), in config order."""
    return [f"{cell.dir}/{where}/{METRICS_FILE}" for where, (e, _) in evaluations(config, cell.task).items() if e is not None]


# Cached: checkpoints.<rule>.get() answers only for a checkpoint finished in this run or up to date
# when the DAG was built (Snakemake 9's dag.py), so an answer is final; while one has not run, each
# call raises and asks again. tests/test_tune.py checks a new winner is reported in the same run.
@functools.cache
def reported(task=None):
    """The cells the tables report: untuned cells at the reported seeds and each tuned group's
    winner at all of them — never a run at a selection seed. Reads the selection checkpoints
    (rules/tune.smk), so an aggregate asking for these waits for them."""
    winners = {g.key: read_selection(checkpoints.select.get(**g.wildcards).output[0]) for g in TUNE_GROUPS}
    return [c for c in reported_cells(CELLS, TUNE_GROUPS, winners) if task is None or c.task == task]


# A model job (training, evaluation, retention) takes an equal share of the cores: one share per job
# that may hold the `gpu` resource at once (`--resources gpu=N`, 1 when not given). With N GPUs, N
# jobs then run side by side, one per device slot (threads = cores would let only one start); on a
# machine without a GPU, `gpu=N` (up to --cores) is how many model jobs share the cores. Snakemake sets
# OMP_NUM_THREADS to the share, which torch follows. Override per rule with --set-threads train=4;
# under SLURM, cpus_per_task in the profile sets it.
def model_job_threads(cores, gpu_jobs):
    usable = min(cores or 1, os.cpu_count() or 1)  # --report, --unlock: no --cores
    return max(1, usable // max(1, gpu_jobs or 1))


# Training first: when a training and an evaluation are both ready, the training starts, so the
# short evaluations queue up and fill the cores while the last (often the longest) training runs.
# An evaluation at a selection seed is as urgent: the winner's training waits on it. (Without
# this, a 13-cell study's full fine-tuning started last and ran alone for 70 s: benchmarks/README.)
TRAINING_PRIORITY = 1


def evaluation_priority(wildcards):
    return TRAINING_PRIORITY if scores_a_choice(wildcards.evaluation) else 0


_gpu_jobs = workflow.global_resources.get("gpu")  # a Resource from Snakemake 9.16.3 on, an int or None before
JOB_THREADS = model_job_threads(workflow.resource_settings.cores, getattr(_gpu_jobs, "value", _gpu_jobs))

TASKS_IN_STUDY = sorted({c.task for c in CELLS})
# report file names end in the task name (<task>.md, <task>_qualitative.md): only a real task matches
TASK_PATTERN = "|".join(re.escape(t) for t in TASKS_IN_STUDY) or "(?!)"
