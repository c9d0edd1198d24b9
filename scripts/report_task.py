"""One task's tables, recommendations and figures."""
import json
from pathlib import Path

from peftgrid.jobs.common import run_job
from peftgrid.plan.specs import TaskReportSpec
from peftgrid.report.analysis import comet_segment_scores, seed_label
from peftgrid.report.tables import build_task_report
from peftgrid.report import tuning


def main(smk):
    spec = TaskReportSpec.from_params(smk.params.spec)
    labels = [seed_label(c) for c in spec.cells]  # the rule lists inputs in the order of spec.cells
    logs = dict(zip(labels, map(Path, smk.input.logs)))
    distances = dict(zip(labels, map(Path, smk.input.distances)))
    keys = [(c["method"], c["variant"], c["seed"], e, d)
            for c in spec.cells for e in spec.evals for d in (spec.decodings or [""])]  # the rule's order
    predictions = dict(zip(keys, map(Path, smk.input.predictions), strict=True))
    comet = comet_segment_scores(Path(smk.input.comet_examples[0])) if smk.input.comet_examples else {}
    task_cfg = {"eval": {e: {} for e in spec.evals}, "metrics": spec.metrics, "transfer": spec.transfer,
                "decoding": spec.decodings}
    if list(getattr(smk.input, "runs", [])):  # the task's label order (binary F1's positive label), from run.json
        task_cfg["labels"] = json.loads(Path(smk.input.runs[0]).read_text()).get("labels")
    out = {name: Path(getattr(smk.output, name)) for name in
           ("table", "table_md", "recommendations", "transfer", "learning_curves", "pareto", "distances", "sweep")}
    # each method's (variant, decoding) chosen on the selection set; a method with none has one variant
    choices = tuning.read_choices(list(smk.input.choices)) if hasattr(smk.input, "choices") else {}
    build_task_report(spec.task, smk.input.summary, logs, distances, task_cfg, spec.report, out, predictions, choices,
                      comet)


run_job(main, snakemake, offline=False)  # noqa: F821
