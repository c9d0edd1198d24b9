"""results/report/report.md: recommendations, tables and figures of every task."""
from pathlib import Path

from peftgrid.jobs import run_job
from peftgrid.report import write_report


def main(smk):
    settings = smk.params.settings
    tasks = {t: {"eval": {e: {} for e in s["eval"]}, "metrics": s["metrics"], "transfer": s.get("transfer")}
             for t, s in settings.items()}
    report_cfg = next(iter(settings.values()))["report"] if settings else {}
    out = Path(smk.output[0])
    write_report(tasks, out.parent, out, report_cfg)


run_job(main, snakemake, offline=False)  # noqa: F821
