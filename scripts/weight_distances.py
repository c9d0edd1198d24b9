"""One task's weight distances: every reported cell's per-tensor distance between its starting and
its fine-tuned (merged) weights -> results/distances/<task>.tsv (cells cached by content)."""
from pathlib import Path

from peftgrid.jobs.common import run_job, skip_unused_imports
from peftgrid.methods import method_of
from peftgrid.plan.layout import DISTANCES_CACHE_DIR
from peftgrid.plan.specs import DistancesSpec


def main(smk):
    spec = DistancesSpec.from_params(smk.params.spec)
    used = tuple({lib for t in spec.train_specs() for lib in method_of(t.hparams["kind"]).libraries})
    skip_unused_imports(used, computes_metrics=False)
    from peftgrid.jobs.distances import task_distances

    record = task_distances(spec, Path(smk.input.model).parent, Path(DISTANCES_CACHE_DIR), Path(smk.output[0]))
    return record["seconds"]  # the work this job timed (see run_job)


run_job(main, snakemake)  # noqa: F821
