# Aggregates over all cells: cheap, so they run where Snakemake runs (no cluster job).


localrules:
    summary,


rule summary:
    input:
        metrics=all_metrics(),
    output:
        "results/summary.tsv",
    log:
        "logs/summary.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/summarize.py"
