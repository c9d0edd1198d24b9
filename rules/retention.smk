# Retention (issue 20): each reported cell of a task with `retention:` scored on each of its
# retention sets (peftgrid/jobs/retention.py), against the pretrained model scored once per
# (model, set) by rule retention_base, whether or not the study has a `none` cell.
from peftgrid.plan.retention import BASE_FILES, FILES, base_retention_dir, retention_dir, retention_sets


wildcard_constraints:
    rset=NAME_PATTERN,


def retention_outputs(cell, first_only=False):
    """A cell's retention metrics files, one per set of its task (first_only: the set summary.tsv shows)."""
    names = retention_sets(config["tasks"][cell.task])
    return [f"{retention_dir(cell.dir, n)}/{FILES['metrics']}" for n in (names[:1] if first_only else names)]


def all_retention_outputs(wildcards):
    """`rule all`: every reported cell on every retention set of its task (reads the selection checkpoints)."""
    return [p for c in reported() for p in retention_outputs(c)]


def base_files(task, rset):
    folder = base_retention_dir(config["tasks"][task]["model"], rset)
    return {f"base_{k}": f"{folder}/{v}" for k, v in BASE_FILES.items()}


@once_per_job
def base_spec(wildcards):
    return specs.retention_base_spec(config, wildcards.model, wildcards.rset)


rule retention_base:
    input:
        model=lambda w: staged_model(w.model),
        dataset=lambda w: staged_dataset(base_spec(w).retention["dataset"]),
    output:
        metrics=f"{base_retention_dir('{model}', '{rset}')}/{BASE_FILES['metrics']}",
        per_document=f"{base_retention_dir('{model}', '{rset}')}/{BASE_FILES['per_document']}",
        hidden=f"{base_retention_dir('{model}', '{rset}')}/{BASE_FILES['hidden']}",
    params:
        spec=lambda w: base_spec(w).to_params(),
    log:
        "logs/retention/base/{model}/{rset}.log",
    threads: JOB_THREADS
    resources:
        gpu=1,
        gpu_slots_per_device=config["gpu_slots_per_device"],  # the job claims a free slot itself
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/retention.py"


rule retention:
    input:
        unpack(lambda w: base_files(w.task, w.rset)),
        model=lambda w: task_model(w.task),
        dataset=lambda w: staged_dataset(config["tasks"][w.task]["retention"][w.rset]["dataset"]),
        trained=f"{RUN_DIR}/{MODEL_DIR}",
        run=f"{RUN_DIR}/{RUN_FILE}",
    output:
        metrics=f"{retention_dir(RUN_DIR, '{rset}')}/{FILES['metrics']}",
        per_document=f"{retention_dir(RUN_DIR, '{rset}')}/{FILES['per_document']}",
        per_layer=f"{retention_dir(RUN_DIR, '{rset}')}/{FILES['per_layer']}",
    params:
        spec=lambda w: specs.retention_spec(config, cell_of(w), w.rset).to_params(),
    log:
        f"logs/{RUN_DIR}/retention_{{rset}}.log",
    threads: JOB_THREADS
    resources:
        gpu=1,
        gpu_slots_per_device=config["gpu_slots_per_device"],  # the job claims a free slot itself
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/retention.py"
