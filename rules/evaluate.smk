# One job per evaluation of a cell (plan/runs.py evaluations): a reported eval set, or, for a run
# at the selection seed, the task's unreported selection set; generation: one per decoding. Each
# writes predictions and quality metrics to <run>/<evaluation>/ (evaluation_dir), and on a reported
# eval set inference cost too: eval/<eval>[/<decoding>] or select[/<decoding>] (a choice's score
# only: jobs/evaluate.py). Then COMET in one job per task.


rule evaluate:
    wildcard_constraints:
        # every evaluation but a label task's on a reported eval set (rule evaluate_per_label)
        evaluation=rf"(?:{SELECTION_EVAL_DIR}(?:/{NAME_PATTERN})?|{REPORTED_EVAL_DIR}/{NAME_PATTERN}/{NAME_PATTERN})",
    input:
        model=lambda w: task_model(w.task),
        dataset=lambda w: staged_dataset(evaluation_spec(w).eval["dataset"]),
        trained=f"{RUN_DIR}/{MODEL_DIR}",
        run=f"{RUN_DIR}/{RUN_FILE}",
    output:
        metrics=f"{RUN_DIR}/{{evaluation}}/{METRICS_FILE}",
        predictions=f"{RUN_DIR}/{{evaluation}}/{PREDICTIONS_FILE}",
    params:
        spec=lambda w: evaluation_spec(w).to_params(),
    log:
        f"logs/{RUN_DIR}/{{evaluation}}.log",
    threads: JOB_THREADS
    priority: evaluation_priority
    resources:
        gpu=1,
        gpu_slots_per_device=config["gpu_slots_per_device"],  # the job claims a free slot itself
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/evaluate.py"


# A label task on a reported eval set also writes its per-label table. Snakemake cannot declare an
# output that only some jobs of a rule write, so this is rule evaluate with that one more output.
use rule evaluate as evaluate_per_label with:
    wildcard_constraints:
        evaluation=rf"{REPORTED_EVAL_DIR}/{NAME_PATTERN}",
    output:
        metrics=f"{RUN_DIR}/{{evaluation}}/{METRICS_FILE}",
        predictions=f"{RUN_DIR}/{{evaluation}}/{PREDICTIONS_FILE}",
        per_label=f"{RUN_DIR}/{{evaluation}}/{PER_LABEL_FILE}",


@once_per_job
def comet_spec(wildcards):
    return specs.comet_spec(config, wildcards.task, reported(wildcards.task))


# One job per task: the COMET model is loaded once and scores every cell x eval set x decoding of
# the task (results/comet/<task>/scores.tsv, per example in examples.tsv). Unchanged predictions
# are never scored twice (segment scores cached by content under results/comet/cache/). It scores
# the cells the task reports (reported, rules/common.smk), the ones the summary shows.
rule comet:
    wildcard_constraints:
        task=TASK_PATTERN,
    input:
        comet=STAGED_COMET,
        predictions=lambda w: [path for *_, path in comet_spec(w).files()],
    output:
        scores=COMET_SCORES,
        examples=COMET_EXAMPLES,
    params:
        spec=lambda w: comet_spec(w).to_params(),
    log:
        "logs/comet/{task}.log",
    threads: JOB_THREADS
    resources:
        gpu=1,
        gpu_slots_per_device=config["gpu_slots_per_device"],  # the job claims a free slot itself
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/comet.py"
