# One job per (cell, eval set): predictions, quality metrics and inference cost.


rule evaluate:
    input:
        model=lambda w: staged_model(config["tasks"][w.task]["model"]),
        dataset=lambda w: staged_dataset(config["tasks"][w.task]["eval"][w.eval]["dataset"]),
        trained=f"{RUN_DIR}/model",
        run=f"{RUN_DIR}/run.json",
    output:
        metrics=f"{RUN_DIR}/eval/{{eval}}/metrics.tsv",
        predictions=f"{RUN_DIR}/eval/{{eval}}/predictions.jsonl",
        per_label=f"{RUN_DIR}/eval/{{eval}}/per_label.tsv",
    params:
        cell=eval_params,
    log:
        f"logs/{RUN_DIR}/eval_{{eval}}.log",
    resources:
        gpu=1,
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/evaluate.py"


# Generation tasks: one job per (cell, eval set, decoding strategy).


rule generate:
    input:
        model=lambda w: staged_model(config["tasks"][w.task]["model"]),
        dataset=lambda w: staged_dataset(config["tasks"][w.task]["eval"][w.eval]["dataset"]),
        trained=f"{RUN_DIR}/model",
        run=f"{RUN_DIR}/run.json",
    output:
        metrics=f"{RUN_DIR}/eval/{{eval}}/{{decoding}}/metrics.tsv",
        predictions=f"{RUN_DIR}/eval/{{eval}}/{{decoding}}/predictions.jsonl",
    params:
        cell=generation_params,
    log:
        f"logs/{RUN_DIR}/generate_{{eval}}_{{decoding}}.log",
    resources:
        gpu=1,
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/generate.py"


rule comet:
    input:
        comet="resources/comet/staged.json",
        predictions=f"{RUN_DIR}/eval/{{eval}}/{{decoding}}/predictions.jsonl",
    output:
        f"{RUN_DIR}/eval/{{eval}}/{{decoding}}/comet.tsv",
    params:
        batch_size=lambda w: config["comet"]["batch_size"],
    log:
        f"logs/{RUN_DIR}/comet_{{eval}}_{{decoding}}.log",
    resources:
        gpu=1,
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/comet.py"
