# Staged tuning (peftgrid/plan/tune.py): `strategy: halving`'s rungs and `extend`'s points past an
# edge winner. Stage s of a group is a checkpoint (results/tune/<task>/<method>/<group>/stage<s>.tsv)
# that scores its competitors at rung min(s, rungs - 1) and says who goes on; the next stage's
# competitors are read from it, so each stage is planned only when the one before has run.
# A halving rung trains in <run at the selection seed>/rung<r>/: rung 0 from step 0, rung r > 0 from
# the same point's rung r - 1 kept checkpoint (an extension point, or a checkpoint a stage freed:
# from step 0 to its rung), with the full run's schedule: every rung's score is the full run's at
# that step. An edited grid value
# is a new run folder: only its rungs and the stages after them run again.
from peftgrid.plan.tune import KEPT_CHECKPOINT, STAGE_FILE, rung_dir, stage_competitors
from peftgrid.records import read_tsv

RUNG_DIR = rung_dir(RUN_DIR, "{rung}")


wildcard_constraints:
    rung=r"\d+",
    stage=r"\d+",


localrules:
    tune_stage,


@once_per_job
def stage_points(wildcards):
    """A requested stage's competitors (rule tune_stage), grid order; stage > 0: from the previous
    stage's checkpoint."""
    group, stage = tune_group(wildcards), int(wildcards.stage)
    if stage == 0:
        return list(group.candidates)
    previous = checkpoints.tune_stage.get(**group.wildcards, stage=stage - 1).output[0]
    return stage_competitors(group, stage, read_tsv(previous))


def stage_files(group):
    """A staged group's stage files in order, up to the one that leaves a single point (each
    checkpoint is asked in turn): the selection reads them all."""
    files, stage = [], 0
    while True:
        files.append(checkpoints.tune_stage.get(**group.wildcards, stage=stage).output[0])
        if not stage_competitors(group, stage + 1, read_tsv(files[-1])):
            return files
        stage += 1


@once_per_job
def rung_of(wildcards):
    """(group, the rung's spec for the training job) of a requested rung folder."""
    cell = cell_of(wildcards)
    group = next((g for g in TUNE_GROUPS if (g.task, g.method) == (cell.task, cell.method) and g.staged
                  and cell.variant in g.candidates + g.extensions), None)
    if group is None or group.strategy != "halving" or int(wildcards.rung) >= len(group.shares):
        raise WorkflowError(f"{rung_dir(cell.dir, wildcards.rung)}: no such halving rung in the config's experiments")
    return group, int(wildcards.rung)


@once_per_job
def previous_rung(wildcards):
    """The rung folder this one continues from, or None (rung 0, an extension point)."""
    group, rung = rung_of(wildcards)
    before = group.continues_from(wildcards.variant, rung)
    return None if before is None else rung_dir(cell_of(wildcards).dir, before)


def rung_spec(wildcards):
    group, rung = rung_of(wildcards)
    before = previous_rung(wildcards)
    return specs.rung_train_spec(config, cell_of(wildcards), {
        "share": group.shares[rung], "min_steps": group.min_steps,
        "from_checkpoint": None if before is None else f"{before}/{KEPT_CHECKPOINT}"})


use rule train as train_rung with:
    input:
        model=lambda w: task_model(w.task),
        datasets=lambda w: [staged_dataset(d) for d in train_datasets(w.task)],
        checks=ancient(expand(DATA_CHECK, task=TASKS_IN_STUDY)),
        previous=lambda w: [] if previous_rung(w) is None else [f"{previous_rung(w)}/{RUN_FILE}"],
    output:
        model=directory(f"{RUNG_DIR}/{MODEL_DIR}"),
        log=f"{RUNG_DIR}/{TRAIN_LOG_FILE}",
        stats=f"{RUNG_DIR}/{TRAIN_STATS_FILE}",
        run=f"{RUNG_DIR}/{RUN_FILE}",
    params:
        spec=lambda w: rung_spec(w).to_params(),
    log:
        f"logs/{RUNG_DIR}/train.log",


# a rung is scored on the selection set as a finished selection-seed run is (rule evaluate)
use rule evaluate as evaluate_rung with:
    wildcard_constraints:
        evaluation=rf"{SELECTION_EVAL_DIR}(?:/{NAME_PATTERN})?",
    input:
        model=lambda w: task_model(w.task),
        dataset=lambda w: staged_dataset(evaluation_spec(w).eval["dataset"]),
        trained=f"{RUNG_DIR}/{MODEL_DIR}",
        run=f"{RUNG_DIR}/{RUN_FILE}",
    output:
        metrics=f"{RUNG_DIR}/{{evaluation}}/{METRICS_FILE}",
        predictions=f"{RUNG_DIR}/{{evaluation}}/{PREDICTIONS_FILE}",
    log:
        f"logs/{RUNG_DIR}/{{evaluation}}.log",


checkpoint tune_stage:
    input:
        scores=lambda w: tune_group(w).stage_score_files(run_dir_of(tune_group(w)), int(w.stage), stage_points(w)),
        # the competitors' run.json at the rung: the validation loss that breaks equal scores (halving:
        # also how long a run is, so that a min_steps covering it is noted)
        runs=lambda w: tune_group(w).stage_run_files(run_dir_of(tune_group(w)), int(w.stage), stage_points(w)),
    output:
        STAGE_FILE,
    params:
        spec=lambda w: specs.stage_spec(tune_group(w), int(w.stage), stage_points(w)).to_params(),
    log:
        "logs/tune/{task}/{method}/{group}/stage{stage}.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/tune_stage.py"
