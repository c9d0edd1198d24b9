# Aggregates over all cells: cheap, so they run where Snakemake runs (no cluster job).
# Their params hold only the report settings and the task entries they read, so editing plot or
# report settings re-runs these rules and nothing upstream.


from peftgrid.plan.report_targets import (GENERATION_FIGURES, RANKS_FIGURE, RANKS_TABLE, REPORT_DIR, REPORT_FILE,
                                          TASK_FIGURES, TUNING_FIGURE, figure_file, table_file)


def table_output(name, kind="", ext="md"):
    """A report table's path (plan/report_targets.py table_file)."""
    return f"{REPORT_DIR}/{table_file(name, kind, ext)}"


def figure_outputs(figures):
    """Named outputs of a task's figures (plan/report_targets.py), each in the Snakemake report."""
    return {name: report(f"{REPORT_DIR}/{figure_file('{task}', name)}", caption=f"../report/{caption}.rst",
                         category="{task}", subcategory=subcategory)
            for name, (subcategory, _, caption) in figures.items()}


localrules:
    summary,
    report_task,
    report_generation,
    report_tuning,
    report_ranks,
    report,


rule summary:
    input:
        # every metrics file of the reported cells (a tuned group: its winner on every reported seed,
        # read from the selection checkpoints; never a run at a selection seed); the job finds each
        # row's train_stats.tsv and run.json from the row's identity
        metrics=lambda w: [m for c in reported() for m in cell_eval_outputs(c)],
        stats=lambda w: [f"{c.dir}/{TRAIN_STATS_FILE}" for c in reported()],
        runs=lambda w: [f"{c.dir}/{RUN_FILE}" for c in reported()],
        comet=[COMET_SCORES.format(task=t) for t in TASKS_IN_STUDY if uses_comet(t)],  # rows keyed by cell
        retention=lambda w: [p for c in reported() for p in retention_outputs(c, first_only=True)],  # rows keyed by cell
        distances=[task_distances_file(t) for t in TASKS_IN_STUDY],  # intruder totals (rows keyed by cell)
    output:
        SUMMARY_FILE,
    params:
        spec=specs.summary_spec(config, TASKS_IN_STUDY).to_params(),
    log:
        "logs/summary.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/summarize.py"


rule report_task:
    wildcard_constraints:
        task=TASK_PATTERN,
    input:
        summary=SUMMARY_FILE,
        # the script finds each cell's files through the same spec (never by list position)
        logs=lambda w: [p for _, p in task_report_spec(w.task).cell_files(TRAIN_LOG_FILE)],
        distances=lambda w: task_distances_file(w.task),  # rows keyed by cell (the script selects by identity)
        # per-example predictions for the paired significance tests
        predictions=lambda w: list(task_report_spec(w.task).predictions().values()),
        # each method's (variant, decoding) chosen on the selection set at the selection seed
        # (report/tuning.py read_choices): the comparisons use those, on the reported seeds only
        choices=lambda w: choice_files(w.task),
        # the task's label order (binary F1's positive label) as training recorded it
        runs=lambda w: [p for _, p in task_report_spec(w.task).cell_files(RUN_FILE)],
        # COMET's segment scores (line-aligned with predictions.jsonl) for its paired comparisons
        comet_examples=lambda w: [COMET_EXAMPLES.format(task=w.task)] if uses_comet(w.task) else [],
        # each cell's retention measurements (metrics + per-document losses) on each retention set
        retention=lambda w: [f for pair in task_report_spec(w.task).retention_files().values() for f in pair],
    output:
        table=table_output("{task}", ext="tsv"),
        table_md=table_output("{task}"),
        recommendations=table_output("{task}", "recommendations", "tsv"),
        transfer=table_output("{task}", "transfer", "tsv"),
        **figure_outputs(TASK_FIGURES),
    params:
        spec=lambda w: task_report_spec(w.task).to_params(),
    log:
        "logs/report/{task}.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_task.py"


def task_report_spec(task):
    return specs.task_report_spec(config, task, reported(task))


rule report_generation:
    wildcard_constraints:
        task=TASK_PATTERN,
    input:
        predictions=lambda w: list(task_report_spec(w.task).predictions().values()),
    output:
        qualitative=table_output("{task}", "qualitative"),
        **figure_outputs(GENERATION_FIGURES),
    params:
        spec=lambda w: task_report_spec(w.task).to_params(),
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
        table=table_output("{task}", "tuning", "tsv"),
        table_md=table_output("{task}", "tuning"),
        figure=report(
            f"{REPORT_DIR}/{figure_file('{task}', TUNING_FIGURE)}",
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
    return [rules.report_ranks.output.table_md, f"{REPORT_DIR}/{figure_file(None, RANKS_FIGURE)}"]


rule report_ranks:
    input:
        summary=SUMMARY_FILE,
        # each method enters at its (variant, decoding) chosen on the selection set (read_choices)
        choices=[f for t in TASKS_IN_STUDY for f in choice_files(t)],
    output:
        table=table_output(RANKS_TABLE, ext="tsv"),
        table_md=table_output(RANKS_TABLE),
        figure=report(
            f"{REPORT_DIR}/{figure_file(None, RANKS_FIGURE)}",
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
        # the other report rules' outputs, as they name them
        tables=expand(rules.report_task.output.table_md, task=TASKS_IN_STUDY),
        tuning=expand(rules.report_tuning.output.table_md, task=TUNED_TASKS),
        qualitative=expand(rules.report_generation.output.qualitative, task=[t for t in TASKS_IN_STUDY if generates(t)]),
        recommendations=expand(rules.report_task.output.recommendations, task=TASKS_IN_STUDY),
    output:
        report(REPORT_FILE, caption="../report/report.rst", category="Report"),
    params:
        spec=lambda w: specs.report_spec(config, TASKS_IN_STUDY).to_params(),
    log:
        "logs/report/report.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report.py"
