"""The tuning checkpoint: score every grid point of one (task, method, sweep variant) on the
selection set and write results/tune/<task>/<method>/<group>/selection.tsv, which plans the
second stage (the winner's remaining seeds). The rule (see plan/tune.py) is `choose_best`."""
from __future__ import annotations

import json
import math

from ..plan.tune import SELECTION_COLUMNS, choose_best, ranks
from ..records import read_tsv, write_tsv


def _score(row: dict, column: str):
    value = row.get(column, "")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def grid_scores(group: dict, files: list) -> list[dict]:
    """One dict per grid point (grid order): status, error, score. `files`: per grid point its
    select/metrics.tsv, or its train_stats.tsv when selecting on loss (final_val_loss)."""
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


def select(group: dict, files: list, out) -> dict:
    points = grid_scores(group, files)
    default = group["candidates"].index(group["default"]) if group["default"] in group["candidates"] else 0
    winner, finished = choose_best(points, group["higher_is_better"], default)
    rank = ranks(points, group["higher_is_better"])
    edge = edges(group, winner) if finished else ""
    rows = []
    for i, (variant, tuned, p) in enumerate(zip(group["candidates"], group["tuned"], points)):
        rows.append({"task": group["task"], "method": group["method"], "group": group["group"], "variant": variant,
                     "seed": group["seeds"][0], "tuned": json.dumps(tuned, sort_keys=True), "status": p["status"],
                     "error": p["error"], "on": group["on"], "split": group["split"], "metric": group["metric"],
                     "score": p["score"], "rank": rank[i], "selected": i == winner, "finished": finished,
                     "edge": edge if i == winner else ""})
    write_tsv(out, rows, SELECTION_COLUMNS)
    return rows[winner]
