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
