# Per-cell analysis on the CPU: how far fine-tuning moved each weight tensor.


rule weight_distances:
    input:
        model=lambda w: task_model(w.task),
        trained=f"{RUN_DIR}/model",
        run=f"{RUN_DIR}/{RUN_FILE}",
    output:
        f"{RUN_DIR}/{WEIGHT_DISTANCES_FILE}",
    params:
        spec=lambda w: specs.train_spec(config, cell_of(w)).to_params(),
    log:
        f"logs/{RUN_DIR}/weight_distances.log",
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/weight_distances.py"
