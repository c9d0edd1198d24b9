"""Stage one model: snakemake.params.spec -> resources/models/<name>/."""
from pathlib import Path

from peftgrid.jobs import run_job
from peftgrid.models import stage_model


def main(smk):
    staged = stage_model(smk.wildcards.model, smk.params.spec, Path(smk.output[0]).parent)
    print(f"staged {staged['name']} from {staged['resolved']} ({staged['kind']})")


run_job(main, snakemake, offline=False)  # noqa: F821
