# One training job per cell, always from the staged pretrained weights. Offline by design.
# It waits for every task's data check (ancient: a re-run check, e.g. after adding an eval set,
# never retrains a cell), so no cell trains before all the study's data is known good.


rule train:
    input:
        model=lambda w: task_model(w.task),
        datasets=lambda w: [staged_dataset(d) for d in train_datasets(w.task)],
        checks=ancient(expand(DATA_CHECK, task=TASKS_IN_STUDY)),
    output:
        model=directory(f"{RUN_DIR}/{MODEL_DIR}"),
        log=f"{RUN_DIR}/{TRAIN_LOG_FILE}",
        stats=f"{RUN_DIR}/{TRAIN_STATS_FILE}",
        run=f"{RUN_DIR}/{RUN_FILE}",
    params:
        spec=lambda w: specs.train_spec(config, cell_of(w)).to_params(),
    log:
        f"logs/{RUN_DIR}/train.log",
    threads: JOB_THREADS
    priority: TRAINING_PRIORITY
    resources:
        gpu=1,
        # jobs per GPU (the job claims a free slot itself); a resource, not a param: changing it re-runs nothing
        gpu_slots_per_device=config["gpu_slots_per_device"],
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/train.py"
