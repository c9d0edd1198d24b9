"""A generation task's qualitative table and sentence-score distributions."""
from pathlib import Path

from peftgrid.jobs.common import run_job
from peftgrid.plan.specs import TaskReportSpec
from peftgrid.report.analysis import primary_eval, seed_label
from peftgrid.report.tables import build_generation_report


def main(smk):
    spec = TaskReportSpec.from_params(smk.params.spec)
    predictions = {(seed_label({"method": m, "variant": v, "seed": s}), e, d): Path(p)
                   for (m, v, s, e, d), p in spec.predictions().items()}
    eval_name = primary_eval({"eval": {e: {} for e in spec.evals}}, spec.report, spec.task)
    out = {name: Path(path) for name, path in smk.output.items()}
    build_generation_report(spec.task, predictions, eval_name, out, spec.decodings)


run_job(main, snakemake, offline=False)  # noqa: F821
