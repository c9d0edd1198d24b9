# Tuning fairly (an experiment's `tune:` and `select:`; peftgrid/plan/tune.py): each tuned
# (task, method, sweep variant) runs its grid on the first seed, scores every grid point on the
# task's selection set (never a reported eval set), and the `select` checkpoint picks the winner;
# the aggregates then ask for the winner on every seed, so the second stage is planned from the
# first stage's results. Grid cells are directories keyed by variant (lr=0.0005): an unchanged
# grid point is reused when the grid is edited, and a winner that does not change keeps its seeds.
from peftgrid.plan import build_tune_groups, read_selection
from peftgrid.plan import reported_cells as _reported_cells
from peftgrid.plan.tune import SELECTION_FILE

TUNE_GROUPS = build_tune_groups(config)
GROUP_BY_KEY = {g.key: g for g in TUNE_GROUPS}
TUNED_TASKS = sorted({g.task for g in TUNE_GROUPS})


wildcard_constraints:
    group=r"[A-Za-z0-9_.+=-]+",


localrules:
    select,


def tune_group(wildcards):
    key = (wildcards.task, wildcards.method, wildcards.group)
    if key not in GROUP_BY_KEY:
        raise WorkflowError(f"no tuned {'/'.join(key)} in the config's experiments")
    return GROUP_BY_KEY[key]


def selection_score(group, variant):
    """What a grid point is scored from: its selection-set evaluation, or (select.metric: loss)
    the final validation loss training logged on the selection set."""
    run_dir = RUN_DIR.format(task=group.task, method=group.method, variant=variant, seed=group.first_seed)
    return f"{run_dir}/train_stats.tsv" if group.metric == "loss" else f"{run_dir}/select/metrics.tsv"


rule evaluate_selection:
    input:
        model=lambda w: task_model(w.task),
        dataset=lambda w: staged_dataset(config["tasks"][w.task]["selection"]["dataset"]),
        trained=f"{RUN_DIR}/model",
        run=f"{RUN_DIR}/run.json",
    output:
        metrics=f"{RUN_DIR}/select/metrics.tsv",
        predictions=f"{RUN_DIR}/select/predictions.jsonl",
    params:
        spec=lambda w: specs.selection_eval_spec(config, cell_of(w)).to_params(),
    log:
        f"logs/{RUN_DIR}/select.log",
    threads: JOB_THREADS
    resources:
        gpu=1,
        gpu_slots_per_device=config.get("gpu_slots_per_device", 1),  # as rule evaluate: the job claims a slot
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/evaluate.py"


checkpoint select:
    input:
        scores=lambda w: [selection_score(tune_group(w), v) for v in tune_group(w).candidates],
    output:
        SELECTION_FILE,
    params:
        spec=lambda w: specs.select_spec(tune_group(w)).to_params(),
    log:
        "logs/tune/{task}/{method}/{group}.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/select.py"


def reported(task=None):
    """The cells the tables report: untuned cells and each tuned group's winner on all its seeds.
    Reads the selection checkpoints (so an aggregate asking for these waits for them)."""
    if TUNE_GROUPS:
        winners = {g.key: read_selection(checkpoints.select.get(**g.wildcards).output[0]) for g in TUNE_GROUPS}
        cells = _reported_cells(CELLS, TUNE_GROUPS, winners)
    else:
        cells = CELLS
    return [c for c in cells if task is None or c.task == task]


def selection_files(task):
    """Every tuned group's selection.tsv of a task, as plain paths: listing them as ordinary inputs
    schedules all first stages at once (the checkpoints are then resolved one by one)."""
    return [g.selection_file for g in TUNE_GROUPS if g.task == task]


def untuned_outputs():
    """With tuning, the untuned cells' evaluations as plain targets of `rule all`: they run beside the
    first stage instead of waiting for the aggregates to see past the selection checkpoints."""
    return [m for c in CELLS if not c.tuned for m in cell_eval_outputs(c)] if TUNE_GROUPS else []
