"""Collect every cell's metrics and costs into results/summary.tsv."""
from peftgrid.jobs import run_job
from peftgrid.summary import write_summary


def main(smk):
    rows = write_summary(smk.input.metrics, smk.output[0])
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"{len(rows)} rows, {len(failed)} failed")


run_job(main, snakemake, offline=False)  # noqa: F821
