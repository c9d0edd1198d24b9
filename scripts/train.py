"""Train one cell: staged model + datasets -> the cell's model/, train_log.tsv, train_stats.tsv, run.json."""
from pathlib import Path

from peftgrid.engine.gpus import claim_gpu
from peftgrid.jobs.common import run_job, skip_unused_imports
from peftgrid.methods import method_of
from peftgrid.plan.specs import TrainSpec

TIMED = ("load_time_s", "train_time_s", "val_time_s", "checkpoint_time_s")


def main(smk):
    # a GPU slot of our own, before torch is imported (CUDA reads CUDA_VISIBLE_DEVICES once, at its start)
    gpu = claim_gpu(smk.resources.get("gpu_slots_per_device", 1))
    spec = TrainSpec.from_params(smk.params.spec)
    skip_unused_imports(method_of(spec.hparams["kind"]).libraries)
    from peftgrid.jobs.train import train_cell

    data_dirs = {Path(p).parent.name: Path(p).parent for p in smk.input.datasets}
    record = train_cell(spec, Path(smk.input.model).parent, data_dirs, Path(smk.output.run).parent, gpu=gpu)
    print(f"status {record['status']}" + (f": {record['error']}" if record["error"] else ""))
    return sum(record["stats"].get(k) or 0.0 for k in TIMED)  # the work this job timed (see run_job)


run_job(main, snakemake)  # noqa: F821
