"""Generate with one decoding strategy for one cell and eval set -> metrics.tsv + predictions.jsonl."""
from pathlib import Path

from peftgrid.generation import evaluate_generation
from peftgrid.jobs import run_job


def main(smk):
    row = evaluate_generation(smk.params.cell, Path(smk.input.model).parent, Path(smk.input.trained),
                              Path(smk.input.dataset).parent, Path(smk.input.run), Path(smk.output.metrics),
                              Path(smk.output.predictions))
    print({k: v for k, v in row.items() if k not in ("task", "method", "variant", "seed")})


run_job(main, snakemake)  # noqa: F821
