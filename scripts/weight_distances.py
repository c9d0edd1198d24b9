"""Per-tensor distance between a cell's starting weights and its fine-tuned (merged) weights."""
from pathlib import Path

from peftgrid.jobs.common import run_job
from peftgrid.jobs.distances import cell_distances
from peftgrid.plan.specs import TrainSpec
from peftgrid.records import read_json, write_tsv
from peftgrid.report.distances import component_distances

COLUMNS = ["name", "component", "layer", "numel", "distance", "base_norm", "relative"]


def main(smk):
    run = read_json(smk.input.run)
    rows = [] if run["status"] != "ok" else cell_distances(TrainSpec.from_params(smk.params.spec),
                                                              Path(smk.input.model).parent, Path(smk.input.trained), run)
    write_tsv(smk.output[0], rows, COLUMNS)
    print(f"{len(rows)} tensors; by component: {component_distances(rows)}" if rows else f"cell {run['status']}")


run_job(main, snakemake)  # noqa: F821
