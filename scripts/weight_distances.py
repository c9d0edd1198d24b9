"""Per-tensor distance between a cell's starting weights and its fine-tuned (merged) weights."""
from pathlib import Path

from peftgrid.jobs.common import run_job, skip_unused_imports
from peftgrid.methods import method_of
from peftgrid.plan.specs import TrainSpec
from peftgrid.records import read_json, write_tsv


def main(smk):
    spec = TrainSpec.from_params(smk.params.spec)
    skip_unused_imports(method_of(spec.hparams["kind"]).libraries, computes_metrics=False)
    from peftgrid.jobs.distances import cell_distances
    from peftgrid.report.distances import COLUMNS, component_distances

    run = read_json(smk.input.run)
    rows, seconds = [], 0.0
    if run["status"] == "ok":
        rows, seconds = cell_distances(spec, Path(smk.input.model).parent, Path(smk.input.trained), run)
    write_tsv(smk.output[0], rows, COLUMNS)
    print(f"{len(rows)} tensors; by component: {component_distances(rows)}" if rows else f"cell {run['status']}")
    return seconds  # the work this job timed (see run_job)


run_job(main, snakemake)  # noqa: F821
