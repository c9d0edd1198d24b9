"""Train one cell: staged model + datasets -> the cell's model/, train_log.tsv, train_stats.tsv, run.json."""
from pathlib import Path

from peftgrid.jobs import run_job
from peftgrid.training import train_cell


def main(smk):
    params = smk.params.cell
    data_dirs = {Path(p).parent.name: Path(p).parent for p in smk.input.datasets}
    # eval sets are only checked here (columns, labels), so they are read from the config rather
    # than params: adding an eval set must not re-train every cell
    eval_checks = smk.config["tasks"][params["cell"]["task"]]["eval"]
    record = train_cell(params, Path(smk.input.model).parent, data_dirs, Path(smk.output.run).parent, eval_checks)
    print(f"status {record['status']}" + (f": {record['error']}" if record["error"] else ""))


run_job(main, snakemake)  # noqa: F821
