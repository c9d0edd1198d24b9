"""results/report/report.md: recommendations, tables and figures of every task."""
from pathlib import Path

from peftgrid.jobs.common import run_job
from peftgrid.plan.specs import ReportSpec
from peftgrid.records import atomic_write_text
from peftgrid.report.ranks import across_tasks_section
from peftgrid.report.tables import write_report


def main(smk):
    spec = ReportSpec.from_params(smk.params.spec)
    tasks = {t: {"eval": {e: {} for e in s["evals"]}, "metrics": s["metrics"], "transfer": s.get("transfer"),
                 "retention": s.get("retention")}
             for t, s in spec.tasks.items()}
    out = Path(smk.output[0])
    write_report(tasks, out.parent, out, spec.report)
    if len(tasks) >= 2 and list(getattr(smk.input, "ranks", [])):  # two or more tasks: the across-task ranks
        atomic_write_text(out, out.read_text() + across_tasks_section(out.parent))


run_job(main, snakemake, offline=False)  # noqa: F821
