"""Choices on the selection set, at the selection seed (plan/tune.py; the rule is `choose_best`,
with each point's run.json giving the validation loss that breaks equal scores):
- `select`, the tuning checkpoint: every grid point of one (task, method, sweep variant) ->
  results/tune/<task>/<method>/<group>/selection.tsv, which plans the winner's reported seeds;
- `stage`, a checkpoint of a staged group (halving's rungs, extension points): its competitors
  scored at the stage's rung -> results/tune/<task>/<method>/<group>/stage<s>.tsv, which says who
  goes on (and frees the kept checkpoints no rung continues from); `select_staged` then writes
  selection.tsv from every stage file;
- `choose`: one (task, method)'s (variant, decoding) -> results/choices/<task>/<method>.tsv,
  which the report reads (report/tuning.py read_choices)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from ..columns import FAILED, OK
from ..plan.tune import (CHOICE_COLUMNS, EXTENSION, LOSS_COLUMN, SELECTION_COLUMNS, SELECTION_EXTRA_COLUMNS,
                         STAGE_COLUMNS, TuneGroup, choose_best, edge_label, ranks, scored, stage_competitors, tie_note,
                         validation_losses)
from ..records import read_json, read_tsv, write_tsv


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
    column = LOSS_COLUMN if group["metric"] == "loss" else group["metric"]
    points = []
    for path in files:
        row = read_tsv(path)[0]
        status, error = row.get("status", FAILED), row.get("error", "")
        score = _score(row, column) if status == OK else None
        if status == OK and score is None:
            status, error = "no score", f"no {column} recorded"
        points.append({"status": status, "error": error if status != OK else "", "score": score})
    return points


def _best_decoding(pairs: list[dict], decodings: list, higher_is_better: bool) -> dict:
    """A grid point's score: its best decoding's (ties: the earlier decoding); a failure if none finished."""
    best, finished = choose_best(pairs, higher_is_better)
    return {**pairs[best], "decoding": decodings[best]} if finished else {**pairs[0], "decoding": ""}


def _losses(runs: list):
    """Per run.json path its validation loss (choose_best's tie-break); None without run files."""
    return validation_losses([read_json(r) for r in runs]) if runs else None


def select(group: dict, files: list, out, runs: list = ()) -> dict:
    """`files`: per candidate, per decoding (candidates outer), as TuneGroup.score_files lists them;
    `runs`: per candidate its run.json (TuneGroup.run_files)."""
    pairs, n = grid_scores(group, files), len(group["decodings"])
    points = [_best_decoding(pairs[i * n:(i + 1) * n], group["decodings"], group["higher_is_better"])
              for i in range(len(group["candidates"]))]
    default = group["candidates"].index(group["default"]) if group["default"] in group["candidates"] else 0
    losses = _losses(runs)
    winner, finished = choose_best(points, group["higher_is_better"], default, losses)
    rank = ranks(points, group["higher_is_better"], losses)
    edge = "; ".join(x for x in (edge_label(group["tuned"], group["tuned"][winner]), tie_note(points, losses)) if x) \
        if finished else ""
    rows = []
    for i, (variant, tuned, p) in enumerate(zip(group["candidates"], group["tuned"], points)):
        rows.append({"task": group["task"], "method": group["method"], "group": group["group"], "variant": variant,
                     "decoding": p["decoding"], "seed": group["seed"], "tuned": json.dumps(tuned, sort_keys=True), "status": p["status"],
                     "error": p["error"], "on": group["on"], "split": group["split"], "metric": group["metric"],
                     "score": p["score"], "val_loss": losses[i] if losses else None, "rank": rank[i],
                     "selected": i == winner, "finished": finished, "edge": edge if i == winner else ""})
    write_tsv(out, rows, SELECTION_COLUMNS)
    return rows[winner]


def stage(group: dict, number: int, competitors: list, files: list, out, runs: list = ()) -> list[dict]:
    """Score `competitors` (grid order) at stage `number`'s rung and mark the best `keeps` of them
    `advance` (choose_best's order: score, validation loss, grid order; a failed or NaN point never goes on).
    A stage that leaves one point adds, when that point has the lowest or highest learning rate of
    the grid (and the extension points so far), the next extension point: it advances too.
    `runs`: the competitors' run.json at the rung (their validation losses; halving: when min_steps
    made the rung the whole run, every row's `note` says so, TuneGroup.min_steps_note; and where
    their rung folders are, whose kept checkpoints no later rung needs are then freed)."""
    g = TuneGroup.from_params(group)
    records = [read_json(r) for r in runs]
    lengths = {r.get("total_steps") for r in records} - {None}
    note = g.min_steps_note(number, min(lengths)) if lengths else ""
    pairs, n = grid_scores(group, files), len(g.decodings)
    points = [_best_decoding(pairs[i * n:(i + 1) * n], list(g.decodings), g.higher_is_better)
              for i in range(len(competitors))]
    losses = validation_losses(records) if records else None
    rank, keep = ranks(points, g.higher_is_better, losses), g.keeps(number, len(competitors))
    rung = g.stage_rung(number)
    rows = [{"variant": v, "tuned": json.dumps(g.tuned_of(v), sort_keys=True), "rung": rung, "status": p["status"],
             "error": p["error"], "score": p["score"], "val_loss": losses[i] if losses else None, "decoding": p["decoding"],
             "advance": rank[i] is not None and rank[i] <= keep, "note": note}
            for i, (v, p) in enumerate(zip(competitors, points, strict=True))]
    going = [r for r in rows if r["advance"]]
    if len(going) == 1:
        winner = going[0]
        tied = tie_note(points, losses)  # no score separates the points: an edge winner is a tie-break, not a direction
        extension = None if tied else g.next_extension(list(g.candidates) + list(competitors), winner["variant"])
        if tied:
            winner["note"] = "; ".join(x for x in (tied + (", so the grid is not extended" if g.extend else ""), note) if x)
        elif extension is not None:
            rows.append({"variant": extension, "tuned": json.dumps(g.tuned_of(extension), sort_keys=True),
                         "rung": rung, "status": EXTENSION, "error": "", "score": None, "decoding": "",
                         "advance": True, "note": f"added past {winner['variant']}, the best at the grid's edge"})
        elif g.extend and g.lr_edge(list(g.candidates) + list(competitors), winner["variant"]):
            limit = (f"still at the edge after {g.extend} extension{'s' if g.extend > 1 else ''} "
                     f"(extend: {g.extend}, the limit)")
            winner["note"] = "; ".join(x for x in (limit, note) if x)
    write_tsv(out, rows, STAGE_COLUMNS)
    if runs:  # the rung folders are known from the competitors' run.json
        continuing = stage_competitors(g, number + 1, read_tsv(out))
        free_checkpoints(g.spent_checkpoints(number, competitors, [str(Path(r).parent) for r in runs], continuing))
    return rows


def free_checkpoints(folders: list[str]) -> None:
    """Delete kept checkpoints no rung will continue from (TuneGroup.spent_checkpoints): weights and
    optimizer state, the largest files a halving leaves (full fine-tuning: about 3x the model)."""
    freed = 0
    for folder in map(Path, folders):
        if folder.is_dir():
            freed += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            shutil.rmtree(folder, ignore_errors=True)
    if freed:
        print(f"freed {freed / 2**20:.0f} MB of kept checkpoints no rung continues from")


def select_staged(group: dict, stage_files: list, out) -> dict:
    """selection.tsv of a staged group from its stage files (in stage order): one row per point that
    competed (grid order), at the last rung it reached (`rung`), with its score at every rung it
    reached (`rung_scores`, JSON {rung: score}); the winner is the one point the last stage kept."""
    g = TuneGroup.from_params(group)
    stages = [read_tsv(f) for f in stage_files]
    last, scores, reached_stage = {}, {}, {}
    for number, rows in enumerate(stages):
        for r in rows:
            if r["status"] == EXTENSION:
                continue
            last[r["variant"]], reached_stage[r["variant"]] = r, number
            scores.setdefault(r["variant"], {})[r["rung"]] = _score(r, "score")
    kept = [r["variant"] for r in stages[-1] if r["advance"] == "True"] if stages else []
    order = g.grid_order(last)
    points = [{"status": last[v]["status"], "score": _score(last[v], "score")} for v in order]
    finished = sum(map(scored, points))
    # rank: later stages first (a point that went on beat those that stopped), then choose_best's order
    # at that stage (ranks: score, validation loss, grid order)
    at_stage = ranks(points, g.higher_is_better, [_score(last[v], "val_loss") for v in order])
    ranked = sorted((v for v, r in zip(order, at_stage) if r is not None),
                    key=lambda v: (-reached_stage[v], v not in kept, at_stage[order.index(v)]))
    rank = {v: i for i, v in enumerate(ranked, 1)}
    fallback = ""
    if len(kept) == 1:
        winner = kept[0]
    elif not kept and ranked:  # the last stage's points all failed: the best of the latest stage that finished one
        winner = ranked[0]
        fallback = (f"every point of stage {len(stages) - 1} (rung {stages[-1][0]['rung']}) failed: the best of "
                    f"stage {reached_stage[winner]} (rung {last[winner]['rung']}) stands in")
    else:
        winner = g.default if g.default in last else order[0]
    # the edge column: the winner's edges, then what its stages noted (the extension limit, min_steps)
    edge = "; ".join(x for x in (g.edge_label(order, winner) if finished else "", fallback, last[winner]["note"]) if x)
    rows = []
    for v, p in zip(order, points):
        r = last[v]
        rows.append({"task": g.task, "method": g.method, "group": g.group, "variant": v, "decoding": r["decoding"],
                     "seed": g.seed, "tuned": json.dumps(g.tuned_of(v), sort_keys=True), "status": r["status"],
                     "error": r["error"], "on": g.on, "split": g.split, "metric": g.metric, "score": p["score"],
                     "val_loss": _score(r, "val_loss"),
                     "rank": rank.get(v), "selected": v == winner, "finished": finished,
                     "edge": edge if v == winner else "", "rung": r["rung"],
                     "rung_scores": json.dumps(scores[v], sort_keys=True)})
    write_tsv(out, rows, SELECTION_COLUMNS + SELECTION_EXTRA_COLUMNS)
    return rows[order.index(winner)]


def choose(choice: dict, files: list, out, runs: list = ()) -> dict:
    """Write one row per (variant, decoding) at the selection seed, the chosen one marked; no run
    finished: the default variant with the primary decoding stands in (`finished` 0). `runs`: per
    variant its run.json (Choice.run_files)."""
    if choice.get("selections"):
        return _choose_among_winners(choice, files, out)
    pairs = [(v, d) for v in choice["variants"] for d in choice["decodings"]]
    points = grid_scores(choice, files)
    default = choice["variants"].index(choice["default"]) * len(choice["decodings"])
    per_variant = _losses(runs)
    losses = [loss for loss in per_variant for _ in choice["decodings"]] if per_variant else None
    winner, finished = choose_best(points, choice["higher_is_better"], default, losses)
    rank = ranks(points, choice["higher_is_better"], losses)
    rows = [{"task": choice["task"], "method": choice["method"], "variant": v, "decoding": d, "seed": choice["seed"],
             "on": choice["on"], "dataset": choice["dataset"], "split": choice["split"], "metric": choice["metric"],
             "score": p["score"], "val_loss": losses[i] if losses else None, "status": p["status"], "error": p["error"],
             "rank": rank[i], "chosen": i == winner, "finished": finished}
            for i, ((v, d), p) in enumerate(zip(pairs, points, strict=True))]
    write_tsv(out, rows, CHOICE_COLUMNS)
    return rows[winner]


def _choose_among_winners(choice: dict, files: list, out) -> dict:
    """A staged method's choice: among its groups' winners (selection.tsv `selected` rows, groups in
    name order), each with the score, loss and decoding its selection recorded. Equal scores go to
    the lower loss when every winner was scored at the same rung (groups of one study share their
    rungs; a stand-in from an earlier stage does not), else to group order."""
    winners = [next(r for r in read_tsv(f) if r["selected"] == "True") for f in files]
    points = [{"status": w["status"] if int(w["finished"]) else FAILED, "error": w["error"],
               "score": _score(w, "score")} for w in winners]
    competing = [w for w, p in zip(winners, points) if scored(p)]
    losses = [_score(w, "val_loss") for w in winners] if len({w.get("rung") for w in competing}) <= 1 else None
    winner, finished = choose_best(points, choice["higher_is_better"], 0, losses)
    rank = ranks(points, choice["higher_is_better"], losses)
    rows = [{"task": choice["task"], "method": choice["method"], "variant": w["variant"],
             "decoding": w["decoding"] or (choice["decodings"][0] if choice["decodings"] != [""] else ""),
             "seed": choice["seed"], "on": choice["on"], "dataset": choice["dataset"], "split": choice["split"],
             "metric": choice["metric"], "score": p["score"], "val_loss": _score(w, "val_loss"),
             "status": p["status"], "error": p["error"], "rank": rank[i], "chosen": i == winner, "finished": finished}
            for i, (w, p) in enumerate(zip(winners, points))]
    write_tsv(out, rows, CHOICE_COLUMNS)
    return rows[winner]
