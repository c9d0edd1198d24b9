"""Stage the COMET model (hub name or local checkpoint). Never fails: when the model cannot be
had, staged.json says why and every COMET cell reports that reason."""
from peftgrid.jobs import stage
from peftgrid.jobs.common import run_job
from peftgrid.plan.specs import StageCometSpec


def main(smk):
    print(stage.comet(StageCometSpec.from_params(smk.params.spec), smk.output[0]))


run_job(main, snakemake, offline=False)  # noqa: F821
