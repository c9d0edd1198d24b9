"""Evaluate one cell on one eval set (generation: with one decoding strategy) -> metrics.tsv + predictions.jsonl."""
from pathlib import Path

from peftgrid.jobs.common import run_job
from peftgrid.jobs.evaluate import evaluate_cell
from peftgrid.plan.specs import EvalSpec


def main(smk):
    per_label = Path(smk.output.per_label) if hasattr(smk.output, "per_label") else None
    row = evaluate_cell(EvalSpec.from_params(smk.params.spec), Path(smk.input.model).parent, Path(smk.input.trained),
                        Path(smk.input.dataset).parent, Path(smk.input.run), Path(smk.output.metrics),
                        Path(smk.output.predictions), per_label)
    print({k: v for k, v in row.items() if k not in ("task", "method", "variant", "seed")})


run_job(main, snakemake)  # noqa: F821
