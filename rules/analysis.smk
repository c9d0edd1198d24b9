# Weight distances on the CPU: how far fine-tuning moved each weight tensor of every reported cell.
# One job per task (one process start-up instead of one per cell); each cell's rows are cached by
# content (jobs/distances.py), so a retrained or edited cell is measured again and no other is.


rule weight_distances:
    wildcard_constraints:
        task=TASK_PATTERN,
    input:
        model=lambda w: task_model(w.task),
        # the reported cells (waits on the task's selection checkpoints); the job finds each cell's
        # files from its identity in the spec
        trained=lambda w: [f"{c.dir}/{MODEL_DIR}" for c in reported(w.task)],
        runs=lambda w: [f"{c.dir}/{RUN_FILE}" for c in reported(w.task)],
    output:
        task_distances_file("{task}"),
    params:
        spec=lambda w: specs.distances_spec(config, w.task, reported(w.task)).to_params(),
    log:
        "logs/distances/{task}.log",
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/weight_distances.py"
