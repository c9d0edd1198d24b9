"""Choices on the selection set, at the selection seed (plan/tune.py; the rule is `choose_best`):
- `select`, the tuning checkpoint: every grid point of one (task, method, sweep variant) ->
  results/tune/<task>/<method>/<group>/selection.tsv, which plans the winner's reported seeds;
- `choose`: one (task, method)'s (variant, decoding) -> results/choices/<task>/<method>.tsv,
  which the report reads (report/tuning.py read_choices)."""
from __future__ import annotations

import json
import math

from ..plan.tune import CHOICE_COLUMNS, SELECTION_COLUMNS, choose_best, ranks
from ..records import read_tsv, write_tsv


def _score(row: dict, column: str):
    value = row.get(column, "")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def grid_scores(group: dict, files: list) -> list[dict]:
    """One dict per file: status, error, score. `files` (plan/tune.py score_file): per grid point
    (and decoding) its selection-set metrics.tsv, or its train_stats.tsv when selecting on loss."""
    column = "final_val_loss" if group["metric"] == "loss" else group["metric"]
    points = []
    for path in files:
        row = read_tsv(path)[0]
        status, error = row.get("status", "failed"), row.get("error", "")
        score = _score(row, column) if status == "ok" else None
        if status == "ok" and score is None:
            status, error = "no score", f"no {column} recorded"
        points.append({"status": status, "error": error if status != "ok" else "", "score": score})
    return points


def edges(group: dict, winner: int) -> str:
    """The tuned keys whose winning value is the lowest or highest of an axis of 3+ values: the
    optimum may lie outside the grid."""
    out = []
    for key in sorted(group["tuned"][winner]):
        values = {p[key] for p in group["tuned"] if isinstance(p[key], (int, float)) and not isinstance(p[key], bool)}
        if len(values) < 3 or len(values) != len({json.dumps(p[key]) for p in group["tuned"]}):
            continue
        w = group["tuned"][winner][key]
        if w == min(values):
            out.append(f"{key} (lowest)")
        elif w == max(values):
            out.append(f"{key} (highest)")
    return ", ".join(out)


def _best_decoding(pairs: list[dict], decodings: list, higher_is_better: bool) -> dict:
    """A grid point's score: its best decoding's (ties: the earlier decoding); a failure if none finished."""
    best, finished = choose_best(pairs, higher_is_better)
    return {**pairs[best], "decoding": decodings[best]} if finished else {**pairs[0], "decoding": ""}


def select(group: dict, files: list, out) -> dict:
    """`files`: per candidate, per decoding (candidates outer), as TuneGroup.score_files lists them."""
    pairs, n = grid_scores(group, files), len(group["decodings"])
    points = [_best_decoding(pairs[i * n:(i + 1) * n], group["decodings"], group["higher_is_better"])
              for i in range(len(group["candidates"]))]
    default = group["candidates"].index(group["default"]) if group["default"] in group["candidates"] else 0
    winner, finished = choose_best(points, group["higher_is_better"], default)
    rank = ranks(points, group["higher_is_better"])
    edge = edges(group, winner) if finished else ""
    rows = []
    for i, (variant, tuned, p) in enumerate(zip(group["candidates"], group["tuned"], points)):
        rows.append({"task": group["task"], "method": group["method"], "group": group["group"], "variant": variant,
                     "decoding": p["decoding"], "seed": group["seed"], "tuned": json.dumps(tuned, sort_keys=True), "status": p["status"],
                     "error": p["error"], "on": group["on"], "split": group["split"], "metric": group["metric"],
                     "score": p["score"], "rank": rank[i], "selected": i == winner, "finished": finished,
                     "edge": edge if i == winner else ""})
    write_tsv(out, rows, SELECTION_COLUMNS)
    return rows[winner]


def choose(choice: dict, files: list, out) -> dict:
    """Write one row per (variant, decoding) at the selection seed, the chosen one marked; no run
    finished: the default variant with the primary decoding stands in (`finished` 0)."""
    pairs = [(v, d) for v in choice["variants"] for d in choice["decodings"]]
    points = grid_scores(choice, files)
    default = choice["variants"].index(choice["default"]) * len(choice["decodings"])
    winner, finished = choose_best(points, choice["higher_is_better"], default)
    rank = ranks(points, choice["higher_is_better"])
    rows = [{"task": choice["task"], "method": choice["method"], "variant": v, "decoding": d, "seed": choice["seed"],
             "on": choice["on"], "dataset": choice["dataset"], "split": choice["split"], "metric": choice["metric"],
             "score": p["score"], "status": p["status"], "error": p["error"], "rank": rank[i], "chosen": i == winner,
             "finished": finished}
            for i, ((v, d), p) in enumerate(zip(pairs, points, strict=True))]
    write_tsv(out, rows, CHOICE_COLUMNS)
    return rows[winner]
