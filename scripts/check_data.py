"""Check one task's data (training split and every eval set) before any cell trains."""
from pathlib import Path

from peftgrid.jobs.check_data import check_task_data
from peftgrid.jobs.common import run_job
from peftgrid.plan.specs import CheckDataSpec


def main(smk):
    data_dirs = {Path(p).parent.name: Path(p).parent for p in smk.input.datasets}
    summary = check_task_data(CheckDataSpec.from_params(smk.params.spec), data_dirs, Path(smk.output[0]))
    print(f"{summary['task']}: data good: " + ", ".join(f"{k} {v}" for k, v in summary["examples"].items()))


run_job(main, snakemake)  # noqa: F821
