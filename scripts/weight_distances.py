"""Per-tensor distance between a cell's starting weights and its fine-tuned (merged) weights."""
from pathlib import Path

from peftgrid.distances import cell_distances, component_distances
from peftgrid.jobs import run_job
from peftgrid.records import read_json, write_tsv

COLUMNS = ["name", "component", "layer", "numel", "distance", "base_norm", "relative"]


def main(smk):
    run = read_json(smk.input.run)
    rows = [] if run["status"] != "ok" else cell_distances(smk.params.cell, Path(smk.input.model).parent,
                                                              Path(smk.input.trained), run)
    write_tsv(smk.output[0], rows, COLUMNS)
    print(f"{len(rows)} tensors; by component: {component_distances(rows)}" if rows else f"cell {run['status']}")


run_job(main, snakemake)  # noqa: F821
