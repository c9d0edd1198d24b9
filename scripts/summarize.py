"""Collect every cell's metrics and costs into results/summary.tsv."""
from peftgrid.jobs.common import run_job
from peftgrid.jobs.summary import write_summary


def main(smk):
    comet = dict(zip(smk.params.comet_for, smk.input.comet))
    rows = write_summary(smk.input.metrics, smk.input.stats, smk.input.runs, comet, smk.output[0])
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"{len(rows)} rows, {len(failed)} failed")


run_job(main, snakemake, offline=False)  # noqa: F821
