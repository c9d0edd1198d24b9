"""Stage the COMET model (hub name or local checkpoint). Never fails: when the model cannot be
had, staged.json says why and every COMET cell reports that reason."""
from pathlib import Path

from peftgrid.comet import stage_comet
from peftgrid.jobs import run_job


def main(smk):
    staged = stage_comet(smk.params.spec, Path(smk.output[0]).parent)
    print(staged)


run_job(main, snakemake, offline=False)  # noqa: F821
