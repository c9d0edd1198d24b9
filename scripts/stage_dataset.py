"""Stage one dataset: snakemake.params.spec -> resources/datasets/<name>/."""
from pathlib import Path

from peftgrid.data import stage_dataset
from peftgrid.jobs import run_job


def main(smk):
    meta = stage_dataset(smk.wildcards.dataset, smk.params.spec, Path(smk.output[0]).parent)
    print(f"staged {meta['name']}: " + ", ".join(f"{s} {n}" for s, n in meta["splits"].items()))


run_job(main, snakemake, offline=False)  # noqa: F821
