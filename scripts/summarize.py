"""Collect every cell's metrics and costs into results/summary.tsv; print each task's comparison."""
import sys

from peftgrid.jobs.common import run_job
from peftgrid.jobs.summary import console_tables, write_summary
from peftgrid.plan.specs import SummarySpec


def main(smk):
    rows = write_summary(smk.input.metrics, list(smk.input.comet), smk.output[0], list(smk.input.retention),
                         list(smk.input.distances))
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"{len(rows)} rows, {len(failed)} failed")
    table = console_tables(rows, SummarySpec.from_params(smk.params.spec).tasks)
    print(table)
    print(f"\n{table}\n\n(results/summary.tsv; the report: results/report/report.md)\n", file=sys.__stderr__)


run_job(main, snakemake, offline=False)  # noqa: F821
