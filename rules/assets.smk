# Staging: a hub id or a local path becomes a folder under resources/. These are the only jobs
# that may use the network; they run on the submitting machine (login node on a cluster).
# Then each task's data is checked — every eval set included — before any cell trains.


localrules:
    stage_dataset,
    stage_model,
    stage_comet,
    check_data,


rule stage_dataset:
    output:
        staged_dataset("{dataset}"),
    params:
        spec=lambda w: specs.stage_dataset_spec(config, w.dataset).to_params(),
    log:
        "logs/stage_dataset/{dataset}.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/stage_dataset.py"


rule stage_model:
    output:
        staged_model("{model}"),
    params:
        spec=lambda w: specs.stage_model_spec(config, w.model).to_params(),
    log:
        "logs/stage_model/{model}.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/stage_model.py"


rule stage_comet:
    output:
        STAGED_COMET,
    params:
        spec=lambda w: specs.stage_comet_spec(config).to_params(),
    log:
        "logs/stage_comet.log",
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/stage_comet.py"


rule check_data:
    input:
        datasets=lambda w: [staged_dataset(d) for d in task_datasets(w.task)],
    output:
        DATA_CHECK,
    params:
        spec=lambda w: specs.check_data_spec(config, w.task).to_params(),
    log:
        "logs/check_data/{task}.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/check_data.py"
