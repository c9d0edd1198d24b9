"""Train one cell: staged model + datasets -> the cell's model/, train_log.tsv, train_stats.tsv, run.json."""
from pathlib import Path

from peftgrid.engine.gpus import claim_gpu
from peftgrid.jobs.common import run_job


def main(smk):
    # a GPU slot of our own, before torch is imported (CUDA reads CUDA_VISIBLE_DEVICES once, at its start)
    gpu = claim_gpu(smk.resources.get("gpu_slots_per_device", 1))
    from peftgrid.jobs.train import train_cell
    from peftgrid.plan.specs import TrainSpec

    data_dirs = {Path(p).parent.name: Path(p).parent for p in smk.input.datasets}
    record = train_cell(TrainSpec.from_params(smk.params.spec), Path(smk.input.model).parent, data_dirs,
                        Path(smk.output.run).parent, gpu=gpu)
    print(f"status {record['status']}" + (f": {record['error']}" if record["error"] else ""))


run_job(main, snakemake)  # noqa: F821
