"""A generation task's qualitative table and sentence-score distributions."""
from pathlib import Path

from peftgrid.jobs.common import run_job
from peftgrid.plan.specs import TaskReportSpec
from peftgrid.report.analysis import primary_eval, seed_label
from peftgrid.report.tables import build_generation_report


def main(smk):
    spec = TaskReportSpec.from_params(smk.params.spec)
    # the rule lists predictions in the order of smk.params.outputs: (cell, eval set, decoding)
    keys = [(seed_label(c), e, d) for c, e, d in smk.params.outputs]
    predictions = dict(zip(keys, map(Path, smk.input.predictions)))
    eval_name = primary_eval({"eval": {e: {} for e in spec.evals}}, spec.report, spec.task)
    out = {name: Path(getattr(smk.output, name)) for name in ("qualitative", "sentence_bleu", "sentence_chrf")}
    build_generation_report(spec.task, predictions, eval_name, out, spec.decodings)


run_job(main, snakemake, offline=False)  # noqa: F821
