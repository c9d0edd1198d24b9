"""One task's tuning table and figure: every grid point's score on the selection set."""
from pathlib import Path

from peftgrid.jobs.common import run_job
from peftgrid.plan.specs import TuningReportSpec
from peftgrid.report.tuning import build_tuning_report


def main(smk):
    spec = TuningReportSpec.from_params(smk.params.spec)
    out = {name: Path(getattr(smk.output, name)) for name in ("table", "table_md", "figure")}
    build_tuning_report(spec.task, list(smk.input.selections), out, spec.groups)


run_job(main, snakemake, offline=False)  # noqa: F821
