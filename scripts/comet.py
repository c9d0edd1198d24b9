"""COMET score of one cell's predictions (one eval set, one decoding strategy) -> comet.tsv."""
from pathlib import Path

from peftgrid.jobs.common import run_job
from peftgrid.metrics.comet import score_file
from peftgrid.plan.specs import CometSpec


def main(smk):
    spec = CometSpec.from_params(smk.params.spec)
    print(score_file(Path(smk.input.comet).parent, Path(smk.input.predictions), Path(smk.output[0]), spec.batch_size))


run_job(main, snakemake)  # noqa: F821
