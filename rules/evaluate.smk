# One job per (cell, eval set): predictions, quality metrics and inference cost. Generation
# tasks: one job per (cell, eval set, decoding strategy), then COMET in one job per task.


rule evaluate:
    input:
        model=lambda w: task_model(w.task),
        dataset=lambda w: staged_dataset(config["tasks"][w.task]["eval"][w.eval]["dataset"]),
        trained=f"{RUN_DIR}/model",
        run=f"{RUN_DIR}/run.json",
    output:
        metrics=f"{eval_dir(RUN_DIR, '{eval}')}/metrics.tsv",
        predictions=predictions_file(RUN_DIR, "{eval}"),
        per_label=f"{eval_dir(RUN_DIR, '{eval}')}/per_label.tsv",
    params:
        spec=lambda w: specs.eval_spec(config, cell_of(w), w.eval).to_params(),
    log:
        f"logs/{RUN_DIR}/eval_{{eval}}.log",
    threads: JOB_THREADS
    resources:
        gpu=1,
        gpu_slots_per_device=config["gpu_slots_per_device"],  # the job claims a free slot itself
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/evaluate.py"


rule generate:
    input:
        model=lambda w: task_model(w.task),
        dataset=lambda w: staged_dataset(config["tasks"][w.task]["eval"][w.eval]["dataset"]),
        trained=f"{RUN_DIR}/model",
        run=f"{RUN_DIR}/run.json",
    output:
        metrics=f"{eval_dir(RUN_DIR, '{eval}', '{decoding}')}/metrics.tsv",
        predictions=predictions_file(RUN_DIR, "{eval}", "{decoding}"),
    params:
        spec=lambda w: specs.eval_spec(config, cell_of(w), w.eval, w.decoding).to_params(),
    log:
        f"logs/{RUN_DIR}/generate_{{eval}}_{{decoding}}.log",
    threads: JOB_THREADS
    resources:
        gpu=1,
        gpu_slots_per_device=config["gpu_slots_per_device"],  # the job claims a free slot itself
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/evaluate.py"


# One job per task: the COMET model is loaded once and scores every cell x eval set x decoding of
# the task (results/comet/<task>/scores.tsv, per example in examples.tsv). Unchanged predictions
# are never scored twice (segment scores cached by content under results/comet/cache/). It scores
# the cells the task reports (reported, rules/common.smk), the ones the summary shows.
rule comet:
    wildcard_constraints:
        task=TASK_PATTERN,
    input:
        comet="resources/comet/staged.json",
        predictions=lambda w: [path for *_, path in specs.comet_spec(config, w.task, reported(w.task)).files()],
    output:
        scores="results/comet/{task}/scores.tsv",
        examples="results/comet/{task}/examples.tsv",
    params:
        spec=lambda w: specs.comet_spec(config, w.task, reported(w.task)).to_params(),
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
