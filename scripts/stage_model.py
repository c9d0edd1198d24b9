"""Stage one model into resources/models/<name>/."""
from peftgrid.jobs import stage
from peftgrid.jobs.common import run_job
from peftgrid.plan.specs import StageModelSpec


def main(smk):
    print(stage.model(StageModelSpec.from_params(smk.params.spec), smk.output[0]))


run_job(main, snakemake, offline=False)  # noqa: F821
