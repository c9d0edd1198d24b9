"""Per-tensor distance between a cell's starting weights and its fine-tuned (merged) weights,
on the CPU. The reference is the model the cell started from: the pretrained weights and, for a
weight created for the task (a head), its seeded initial value.

One job per task (rule weight_distances) measures every reported cell into
results/distances/<task>.tsv, one row per (cell, tensor), the cell's identity columns first. A
cell's rows are cached by content under results/distances/cache/: the key is the cell's train
spec, the bytes of its run.json (training writes it last, with its start and finish times, so a
cell that trained again never matches its old key) and the source of the code that measures it.
An edited or retrained cell is measured again; every other cell's rows are read back unchanged."""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import time
from pathlib import Path

from transformers import set_seed

from ..columns import CELL, OK
from ..methods import method_of
from ..plan.layout import MODEL_DIR, RUN_FILE, run_dir
from ..plan.specs import DistancesSpec, TrainSpec
from ..records import read_tsv, write_tsv
from ..report import distances as measure
from ..tasks import task_type

TASK_COLUMNS = [*CELL, *measure.COLUMNS]  # results/distances/<task>.tsv


def cell_distances(spec: TrainSpec, model_dir: Path, trained_dir: Path, run: dict) -> tuple[list[dict], float]:
    """(one row per tensor, the seconds spent loading both models and comparing them)."""
    hp = spec.hparams
    method = method_of(hp["kind"])
    method.import_libraries()  # imports are the job's overhead, not its timed work
    started = time.perf_counter()
    set_seed(hp["seed"])  # the same seeded initialisation of new weights as in training
    reference, tuned = method.distance_models(model_dir, trained_dir, task_type(spec.task["type"]),
                                              run.get("labels", []), hp, spec.model.get("allow_pickle", False))
    rows = measure.tensor_distances(reference, method.merged_state(tuned)) + method.extra_distances(trained_dir)
    return rows, time.perf_counter() - started


def cache_key(cell_params: dict, run_bytes: bytes) -> str:
    """What a cell's rows depend on: its train spec (canonical params), its run.json's bytes, and
    the source of the modules that load and compare its weights (its method's classes included)."""
    ident = [json.dumps(cell_params, sort_keys=True), hashlib.sha256(run_bytes).hexdigest(),
             _code_hashes(cell_params["hparams"]["kind"])]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()


@functools.cache
def _code_hashes(kind: str) -> list[str]:
    """The sha256 of each source file that loads and compares a `kind` cell's weights: once per
    method kind in a job, not once per cell."""
    method = method_of(kind)
    sources = sorted({inspect.getsourcefile(k) for k in type(method).__mro__ if k is not object}
                     | {__file__, measure.__file__})
    return [hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in sources]


def task_distances(spec: DistancesSpec, model_dir: Path, cache_dir: Path, out: Path) -> dict:
    """Every reported cell of the task: its rows from the cache, or measured (and cached). A failed
    cell has no rows. Writes `out` (TASK_COLUMNS); returns what was measured, reused and timed."""
    rows, record = [], {"task": spec.task, "cells": len(spec.cells), "measured": 0, "reused": 0, "failed": 0,
                        "seconds": 0.0}
    for params, train in zip(spec.cells, spec.train_specs()):
        cell_dir = Path(run_dir(train.cell))
        run_bytes = (cell_dir / RUN_FILE).read_bytes()
        run = json.loads(run_bytes)
        label = "/".join(str(train.cell[k]) for k in CELL)
        if run["status"] != OK:
            record["failed"] += 1
            print(f"{label}: cell {run['status']}", flush=True)
            continue
        cached = Path(cache_dir) / f"{cache_key(params, run_bytes)}.tsv"
        how = "cached" if cached.is_file() else "measured"
        if how == "cached":
            cell_rows = read_tsv(cached)
            record["reused"] += 1
        else:
            cell_rows, seconds = cell_distances(train, model_dir, cell_dir / MODEL_DIR, run)
            write_tsv(cached, cell_rows, measure.COLUMNS)
            record["measured"] += 1
            record["seconds"] += seconds
        rows += [{**{k: train.cell[k] for k in CELL}, **r} for r in cell_rows]
        print(f"{label}: {len(cell_rows)} tensors ({how}); "
              f"by component: {measure.component_distances(cell_rows)}", flush=True)
    write_tsv(out, rows, TASK_COLUMNS)
    record["seconds"] = round(record["seconds"], 3)
    print(f"weight distances {spec.task}: {record}", flush=True)
    return record
