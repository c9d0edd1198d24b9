"""COMET for one task: every cell's predictions scored with one model load -> scores.tsv + examples.tsv."""
from pathlib import Path

from peftgrid.jobs.common import run_job
from peftgrid.jobs.comet import score_task
from peftgrid.plan.specs import CometSpec


def main(smk):
    scores = Path(smk.output.scores)
    print(score_task(CometSpec.from_params(smk.params.spec), Path(smk.input.comet), [Path(p) for p in smk.input.predictions],
                     scores, Path(smk.output.examples), cache_dir=scores.parent.parent / "cache"))


run_job(main, snakemake)  # noqa: F821
