"""One task's tables, recommendations and figures."""
from pathlib import Path

from peftgrid.jobs.common import run_job
from peftgrid.plan.layout import TRAIN_LOG_FILE
from peftgrid.plan.specs import TaskReportSpec
from peftgrid.records import read_json
from peftgrid.report.analysis import comet_segment_scores, load_retention, seed_label
from peftgrid.report.distances import cell_frames
from peftgrid.report.tables import build_task_report
from peftgrid.report import tuning


def main(smk):
    spec = TaskReportSpec.from_params(smk.params.spec)
    # each cell's files where the spec puts them (the rule lists the same paths as inputs)
    logs = {seed_label(c): Path(p) for c, p in spec.cell_files(TRAIN_LOG_FILE)}
    distances = dict(zip(map(seed_label, spec.cells), cell_frames(smk.input.distances, spec.cells)))
    predictions = {key: Path(p) for key, p in spec.predictions().items()}
    comet = comet_segment_scores(Path(smk.input.comet_examples[0])) if smk.input.comet_examples else {}
    task_cfg = {"eval": {e: {} for e in spec.evals}, "metrics": spec.metrics, "transfer": spec.transfer,
                "decoding": spec.decodings, "baseline": spec.baseline}
    if list(getattr(smk.input, "runs", [])):  # the task's label order (binary F1's positive label), from run.json
        task_cfg["labels"] = read_json(smk.input.runs[0]).get("labels")
    out = {name: Path(path) for name, path in smk.output.items()}
    # each method's (variant, decoding) chosen on the selection set; a method with none has one variant
    choices = tuning.read_choices(list(smk.input.choices)) if hasattr(smk.input, "choices") else {}
    retention = load_retention(spec.retention_files())  # each retention set: every cell's metrics and documents
    build_task_report(spec.task, smk.input.summary, logs, distances, task_cfg, spec.report, out, predictions, choices,
                      comet, retention)


run_job(main, snakemake, offline=False)  # noqa: F821
