"""COMET for one task: every cell's predictions (each eval set, each decoding) scored with one
model load -> results/comet/<task>/scores.tsv (one row per predictions file: comet, comet_status)
and examples.tsv (one row per example: the segment score, line-aligned with predictions.jsonl).

The rule lists the predictions files in the order of CometSpec.files(); rows are identified by
the spec (cell, eval set, decoding), never by a path. A cell without predictions (training
failed, or its generation job did not finish) gets a status and no score; the others are scored."""
from __future__ import annotations

import time
from pathlib import Path

from ..metrics.comet import CometScorer, read_lines
from ..plan.specs import CometSpec
from ..columns import OK, ROW
from ..records import read_json, write_tsv

SCORE_COLUMNS = [*ROW, "comet", "comet_status", "n_scored"]
EXAMPLE_COLUMNS = [*ROW, "example", "comet"]


def score_task(spec: CometSpec, staged_json: Path, scores_out: Path, examples_out: Path,
               cache_dir: Path | None = None) -> dict:
    files = spec.files()
    scorer = CometScorer(read_json(staged_json), spec.batch_size, cache_dir)
    rows, examples = [], []
    t0 = time.perf_counter()
    scored = scorer.score_many([_read(Path(p)) for *_, p in files])
    for (cell, ev, dec, _), (row, scores) in zip(files, scored):
        ident = {**cell, "eval": ev, "decoding": dec}
        rows.append({**ident, **row})
        examples += [{**ident, "example": i, "comet": s} for i, s in enumerate(scores)]
        print(f"{cell['method']} {cell['variant']} seed {cell['seed']} {ev}/{dec}: "
              f"{'%.4f' % row['comet'] if row['comet'] is not None else '-'} ({row['comet_status']})", flush=True)
    write_tsv(scores_out, rows, SCORE_COLUMNS)
    write_tsv(examples_out, examples, EXAMPLE_COLUMNS)
    record = {"task": spec.task, "files": len(files), "ok": sum(r["comet_status"] == OK for r in rows),
              "model_loads": scorer.loads, "scored": scorer.scored, "reused": scorer.cached,
              "seconds": round(time.perf_counter() - t0, 2)}
    print(f"COMET {spec.task}: {record}", flush=True)
    return record


def _read(path: Path):
    try:
        return read_lines(path)
    except Exception as e:  # a truncated or garbled file: that file's status, not the job's end
        return e
