# Aggregates over all cells: cheap, so they run where Snakemake runs (no cluster job).
# Their params hold only the report settings and the task entries they read, so editing plot or
# report settings re-runs these rules and nothing upstream.


localrules:
    summary,
    report_task,
    report_generation,
    report_tuning,
    report_ranks,
    report,


def summary_rows():
    """Every (metrics file, its cell's train_stats.tsv, run.json) of the reported cells (a tuned
    group: its winner on every reported seed, read from the selection checkpoints; never a run at a
    selection seed), in one order."""
    return [(m, f"{c.dir}/train_stats.tsv", f"{c.dir}/run.json") for c in reported() for m in cell_eval_outputs(c)]


rule summary:
    input:
        metrics=lambda w: [m for m, _, _ in summary_rows()],
        stats=lambda w: [s for _, s, _ in summary_rows()],
        runs=lambda w: [r for _, _, r in summary_rows()],
        comet=[f"results/comet/{t}/scores.tsv" for t in TASKS_IN_STUDY if uses_comet(t)],  # rows keyed by cell
    output:
        "results/summary.tsv",
    params:
        spec=specs.summary_spec(config, TASKS_IN_STUDY).to_params(),
    log:
        "logs/summary.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/summarize.py"


def task_cells(task):
    return reported(task)


rule report_task:
    wildcard_constraints:
        task=TASK_PATTERN,
    input:
        summary="results/summary.tsv",
        logs=lambda w: [f"{c.dir}/train_log.tsv" for c in task_cells(w.task)],
        distances=lambda w: [f"{c.dir}/weight_distances.tsv" for c in task_cells(w.task)],
        # per-example predictions for the paired significance tests, in the order of spec.cells x
        # eval sets x decodings (the script pairs them with the spec, never with the path)
        predictions=lambda w: [
            f"{c.dir}/eval/{e}/{d}/predictions.jsonl" if d else f"{c.dir}/eval/{e}/predictions.jsonl"
            for c in task_cells(w.task)
            for e in config["tasks"][w.task]["eval"]
            for d in (config["tasks"][w.task]["decoding"] if generates(w.task) else [""])
        ],
        # each method's (variant, decoding) chosen on the selection set at the selection seed
        # (report/tuning.py read_choices): the comparisons use those, on the reported seeds only
        choices=lambda w: choice_files(w.task),
        # the task's label order (binary F1's positive label) as training recorded it
        runs=lambda w: [f"{c.dir}/run.json" for c in task_cells(w.task)],
        # COMET's segment scores (line-aligned with predictions.jsonl) for its paired comparisons
        comet_examples=lambda w: [f"results/comet/{w.task}/examples.tsv"] if uses_comet(w.task) else [],
    output:
        table="results/report/tables/{task}.tsv",
        table_md="results/report/tables/{task}.md",
        recommendations="results/report/tables/{task}_recommendations.tsv",
        transfer="results/report/tables/{task}_transfer.tsv",
        learning_curves=report(
            "results/report/figures/{task}/learning_curves.png",
            caption="../report/learning_curves.rst",
            category="{task}",
            subcategory="Learning curves",
        ),
        pareto=report(
            "results/report/figures/{task}/pareto.png",
            caption="../report/pareto.rst",
            category="{task}",
            subcategory="Pareto fronts",
        ),
        distances=report(
            "results/report/figures/{task}/distances.png",
            caption="../report/distances.rst",
            category="{task}",
            subcategory="Weight distances",
        ),
        sweep=report(
            "results/report/figures/{task}/sweep.png",
            caption="../report/sweep.rst",
            category="{task}",
            subcategory="Sweeps",
        ),
    params:
        spec=lambda w: specs.task_report_spec(config, w.task, reported(w.task)).to_params(),
    log:
        "logs/report/{task}.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_task.py"


def generation_outputs(task):
    """(cell identity, eval set, decoding, predictions file) of every generation output of a task."""
    t = config["tasks"][task]
    return [(c.ident, e, d, f"{c.dir}/eval/{e}/{d}/predictions.jsonl")
            for c in task_cells(task) for e in t["eval"] for d in t["decoding"]]


rule report_generation:
    wildcard_constraints:
        task=TASK_PATTERN,
    input:
        predictions=lambda w: [p for _, _, _, p in generation_outputs(w.task)],
    output:
        qualitative="results/report/tables/{task}_qualitative.md",
        sentence_bleu=report(
            "results/report/figures/{task}/sentence_bleu.png",
            caption="../report/sentence_scores.rst",
            category="{task}",
            subcategory="Sentence scores",
        ),
        sentence_chrf=report(
            "results/report/figures/{task}/sentence_chrf.png",
            caption="../report/sentence_scores.rst",
            category="{task}",
            subcategory="Sentence scores",
        ),
    params:
        spec=lambda w: specs.task_report_spec(config, w.task, reported(w.task)).to_params(),
        outputs=lambda w: [[c, e, d] for c, e, d, _ in generation_outputs(w.task)],
    log:
        "logs/report/{task}_generation.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_generation.py"


rule report_tuning:
    wildcard_constraints:
        task=TASK_PATTERN,
    input:
        selections=lambda w: selection_files(w.task),
    output:
        table="results/report/tables/{task}_tuning.tsv",
        table_md="results/report/tables/{task}_tuning.md",
        figure=report(
            "results/report/figures/{task}/tuning.png",
            caption="../report/tuning.rst",
            category="{task}",
            subcategory="Tuning",
        ),
    params:
        spec=lambda w: specs.tuning_report_spec(w.task, TUNE_GROUPS).to_params(),
    log:
        "logs/report/{task}_tuning.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_tuning.py"


def ranks_outputs():
    """The across-task ranks (table + figure): only when the study has two or more tasks."""
    if len(TASKS_IN_STUDY) < 2:
        return []
    return ["results/report/tables/ranks.md", "results/report/figures/ranks.png"]


rule report_ranks:
    input:
        summary="results/summary.tsv",
        # each method enters at its (variant, decoding) chosen on the selection set (read_choices)
        choices=[f for t in TASKS_IN_STUDY for f in choice_files(t)],
    output:
        table="results/report/tables/ranks.tsv",
        table_md="results/report/tables/ranks.md",
        figure=report(
            "results/report/figures/ranks.png",
            caption="../report/ranks.rst",
            category="Across tasks",
        ),
    params:
        spec=specs.ranks_spec(config, TASKS_IN_STUDY, CHOICES).to_params(),
    log:
        "logs/report/ranks.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_ranks.py"


rule report:
    input:
        ranks=ranks_outputs(),
        tables=expand("results/report/tables/{task}.md", task=TASKS_IN_STUDY),
        tuning=expand("results/report/tables/{task}_tuning.md", task=TUNED_TASKS),
        qualitative=[f"results/report/tables/{t}_qualitative.md" for t in TASKS_IN_STUDY if generates(t)],
        recommendations=expand("results/report/tables/{task}_recommendations.tsv", task=TASKS_IN_STUDY),
    output:
        report("results/report/report.md", caption="../report/report.rst", category="Report"),
    params:
        spec=lambda w: specs.report_spec(config, TASKS_IN_STUDY).to_params(),
    log:
        "logs/report/report.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report.py"
