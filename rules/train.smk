# One training job per cell, always from the staged pretrained weights. Offline by design.


rule train:
    input:
        model=lambda w: staged_model(config["tasks"][w.task]["model"]),
        datasets=lambda w: [staged_dataset(d) for d in train_datasets(w.task)],
    output:
        model=directory(f"{RUN_DIR}/model"),
        log=f"{RUN_DIR}/train_log.tsv",
        stats=f"{RUN_DIR}/train_stats.tsv",
        run=f"{RUN_DIR}/run.json",
    params:
        cell=train_params,
    log:
        f"logs/{RUN_DIR}/train.log",
    resources:
        gpu=1,
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/train.py"
