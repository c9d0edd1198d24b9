# One job per (cell, eval set): predictions, quality metrics and inference cost. Generation
# tasks: one job per (cell, eval set, decoding strategy), then COMET in its own rule.


rule evaluate:
    input:
        model=lambda w: task_model(w.task),
        dataset=lambda w: staged_dataset(config["tasks"][w.task]["eval"][w.eval]["dataset"]),
        trained=f"{RUN_DIR}/model",
        run=f"{RUN_DIR}/run.json",
    output:
        metrics=f"{RUN_DIR}/eval/{{eval}}/metrics.tsv",
        predictions=f"{RUN_DIR}/eval/{{eval}}/predictions.jsonl",
        per_label=f"{RUN_DIR}/eval/{{eval}}/per_label.tsv",
    params:
        spec=lambda w: specs.eval_spec(config, cell_of(w), w.eval).to_params(),
    log:
        f"logs/{RUN_DIR}/eval_{{eval}}.log",
    threads: JOB_THREADS
    resources:
        gpu=1,
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
        metrics=f"{RUN_DIR}/eval/{{eval}}/{{decoding}}/metrics.tsv",
        predictions=f"{RUN_DIR}/eval/{{eval}}/{{decoding}}/predictions.jsonl",
    params:
        spec=lambda w: specs.eval_spec(config, cell_of(w), w.eval, w.decoding).to_params(),
    log:
        f"logs/{RUN_DIR}/generate_{{eval}}_{{decoding}}.log",
    threads: JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/evaluate.py"


rule comet:
    input:
        comet="resources/comet/staged.json",
        predictions=f"{RUN_DIR}/eval/{{eval}}/{{decoding}}/predictions.jsonl",
    output:
        f"{RUN_DIR}/eval/{{eval}}/{{decoding}}/comet.tsv",
    params:
        spec=lambda w: specs.comet_spec(config).to_params(),
    log:
        f"logs/{RUN_DIR}/comet_{{eval}}_{{decoding}}.log",
    threads: JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/comet.py"
