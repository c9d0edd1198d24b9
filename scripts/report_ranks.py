"""Across tasks: each method's average rank with the critical difference and bootstrap intervals."""
from pathlib import Path

from peftgrid.jobs.common import run_job
from peftgrid.plan.specs import RanksSpec
from peftgrid.report.ranks import build_ranks


def main(smk):
    spec = RanksSpec.from_params(smk.params.spec)
    tasks = {t: {k: v for k, v in s.items() if k != "choices"} for t, s in spec.tasks.items()}
    choices = {t: [Path(p) for p in s["choices"]] for t, s in spec.tasks.items()}  # = the rule's inputs
    out = {name: Path(getattr(smk.output, name)) for name in ("table", "table_md", "figure")}
    build_ranks(smk.input.summary, tasks, choices, out, spec.resamples, spec.seed)


run_job(main, snakemake, offline=False)  # noqa: F821
