"""COMET score of one cell's predictions (one eval set, one decoding strategy) -> comet.tsv."""
from pathlib import Path

from peftgrid.comet import score_file
from peftgrid.jobs import run_job


def main(smk):
    row = score_file(Path(smk.input.comet).parent, Path(smk.input.predictions), Path(smk.output[0]),
                     smk.params.batch_size)
    print(row)


run_job(main, snakemake)  # noqa: F821
