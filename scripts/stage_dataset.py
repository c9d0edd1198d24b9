"""Stage one dataset into resources/datasets/<name>/."""
from peftgrid.jobs import stage
from peftgrid.jobs.common import run_job
from peftgrid.plan.specs import StageDatasetSpec


def main(smk):
    print(stage.dataset(StageDatasetSpec.from_params(smk.params.spec), smk.output[0]))


run_job(main, snakemake, offline=False)  # noqa: F821
