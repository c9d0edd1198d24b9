"""Train one cell: staged model + datasets -> the cell's model/, train_log.tsv, train_stats.tsv, run.json."""
from pathlib import Path

from peftgrid.jobs.common import run_job
from peftgrid.jobs.train import train_cell
from peftgrid.plan.specs import TrainSpec


def main(smk):
    data_dirs = {Path(p).parent.name: Path(p).parent for p in smk.input.datasets}
    record = train_cell(TrainSpec.from_params(smk.params.spec), Path(smk.input.model).parent, data_dirs,
                        Path(smk.output.run).parent)
    print(f"status {record['status']}" + (f": {record['error']}" if record["error"] else ""))


run_job(main, snakemake)  # noqa: F821
