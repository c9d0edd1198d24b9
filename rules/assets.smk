# Staging: a hub id or a local path becomes a folder under resources/. These are the only jobs
# that may use the network; they run on the submitting machine (login node on a cluster).


localrules:
    stage_dataset,
    stage_model,
    stage_comet,


rule stage_dataset:
    output:
        "resources/datasets/{dataset}/meta.json",
    params:
        spec=lambda w: config["datasets"][w.dataset],
    log:
        "logs/stage_dataset/{dataset}.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/stage_dataset.py"


rule stage_model:
    output:
        "resources/models/{model}/staged.json",
    params:
        spec=lambda w: config["models"][w.model],
    log:
        "logs/stage_model/{model}.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/stage_model.py"


rule stage_comet:
    output:
        "resources/comet/staged.json",
    params:
        spec=lambda w: config["comet"],
    log:
        "logs/stage_comet.log",
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/stage_comet.py"
