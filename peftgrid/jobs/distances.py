"""Per-tensor distance between a cell's starting weights and its fine-tuned (merged) weights,
on the CPU. The reference is the model the cell started from: the pretrained weights and, for a
weight created for the task (a head), its seeded initial value."""
from __future__ import annotations

import time
from pathlib import Path

from transformers import set_seed

from ..methods import method_of
from ..plan.specs import TrainSpec
from ..report.distances import tensor_distances
from ..tasks import task_type


def cell_distances(spec: TrainSpec, model_dir: Path, trained_dir: Path, run: dict) -> tuple[list[dict], float]:
    """(one row per tensor, the seconds spent loading both models and comparing them)."""
    hp = spec.hparams
    method = method_of(hp["kind"])
    method.import_libraries()  # imports are the job's overhead, not its timed work
    started = time.perf_counter()
    set_seed(hp["seed"])  # the same seeded initialisation of new weights as in training
    reference, tuned = method.distance_models(model_dir, trained_dir, task_type(spec.task["type"]),
                                              run.get("labels", []), hp, spec.model.get("allow_pickle", False))
    rows = tensor_distances(reference, method.merged_state(tuned)) + method.extra_distances(trained_dir)
    return rows, time.perf_counter() - started
