# Aggregates over all cells.


rule summary:
    input:
        metrics=all_metrics(),
    output:
        "results/summary.tsv",
    log:
        "logs/summary.log",
    script:
        "../scripts/summarize.py"
