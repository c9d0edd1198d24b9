# Aggregates over all cells: cheap, so they run where Snakemake runs (no cluster job).
# Their params hold only the report settings and the task entries they read, so editing plot or
# report settings re-runs these rules and nothing upstream.


localrules:
    summary,
    report_task,
    report_generation,
    report,


rule summary:
    input:
        metrics=all_metrics(),
        comet=all_comet(),
    output:
        "results/summary.tsv",
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
        summary="results/summary.tsv",
        logs=lambda w: [f"{c.dir}/train_log.tsv" for c in CELLS if c.task == w.task],
        distances=lambda w: [f"{c.dir}/weight_distances.tsv" for c in CELLS if c.task == w.task],
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
        settings=lambda w: report_params(w.task),
    log:
        "logs/report/{task}.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_task.py"


rule report_generation:
    wildcard_constraints:
        task=TASK_PATTERN,
    input:
        predictions=lambda w: [p.replace("metrics.tsv", "predictions.jsonl") for c in CELLS if c.task == w.task
                               for p in cell_eval_outputs(c)],
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
        settings=lambda w: report_params(w.task),
    log:
        "logs/report/{task}_generation.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_generation.py"


rule report:
    input:
        tables=expand("results/report/tables/{task}.md", task=TASKS_IN_STUDY),
        qualitative=[f"results/report/tables/{t}_qualitative.md" for t in TASKS_IN_STUDY if is_generation(t)],
        recommendations=expand("results/report/tables/{task}_recommendations.tsv", task=TASKS_IN_STUDY),
    output:
        report("results/report/report.md", caption="../report/report.rst", category="Report"),
    params:
        settings=lambda w: {t: report_params(t) for t in TASKS_IN_STUDY},
    log:
        "logs/report/report.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report.py"
