"""The tuning section of a task's report: the grid each tuned method searched, what every grid
point scored on the selection set (at the selection seed, never reported), which one was
selected, and a figure of selection score against the learning rate (log axis), one panel per
method. `read_choices`: every (task, method)'s chosen (variant, decoding), for the comparisons."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..plan.tune import TuneGroup, edge_and_notes
from ..records import atomic_write_text

COLUMNS = ["method", "group", "variant", "seed", "score on selection set", "metric", "on", "split", "rank", "selected",
           "status", "note"]


def load_selections(paths) -> pd.DataFrame:
    frames = [pd.read_csv(p, sep="\t", dtype={"variant": str, "group": str, "error": str, "edge": str, "decoding": str,
                                             "rung_scores": str})
              for p in paths]
    frames = [f for f in frames if len(f)]
    if not frames:
        from ..plan.tune import SELECTION_COLUMNS

        return pd.DataFrame(columns=SELECTION_COLUMNS)
    df = pd.concat(frames, ignore_index=True)
    df["selected"] = df["selected"].astype(str) == "True"
    for col in ("error", "edge", "decoding"):
        df[col] = df[col].fillna("") if col in df else ""
    return df


def with_search(df: pd.DataFrame, groups) -> pd.DataFrame:
    """How each group searched (`groups`: the task's TuneGroup params, TuningReportSpec.groups): rungs
    only where it halved (a grid staged for its extension points records each full run as 'rung 0'),
    and `extension`: the point was added past the grid's edge (lr: auto's `extend`)."""
    tune_groups = [TuneGroup.from_params(p) for p in groups]
    grids = {g.key[1:] for g in tune_groups if g.strategy != "halving"}
    extensions = {(*g.key[1:], v) for g in tune_groups for v in g.extensions}
    df = df.copy()
    df["extension"] = [(m, g, v) in extensions for m, g, v in zip(df["method"], df["group"], df["variant"])]
    if "rung" in df:
        df.loc[[(m, g) in grids for m, g in zip(df["method"], df["group"])], ["rung", "rung_scores"]] = None
    return df


def read_choices(paths) -> dict[str, dict]:
    """method -> {"variant", "decoding", "on", "seed"}: each (task, method)'s choice on the selection
    set at the selection seed (plan/tune.py CHOICE_FILE; `paths`: report_task's input.choices). A
    method without an entry has one variant and uses the task's primary (first) decoding."""
    import csv

    out = {}
    for path in paths:
        with open(path, newline="") as fh:
            chosen = [r for r in csv.DictReader(fh, delimiter="\t") if r["chosen"] == "True"]
        if len(chosen) != 1:
            raise ValueError(f"{path}: expected exactly one chosen row, found {len(chosen)}")
        row = chosen[0]
        out[row["method"]] = {"variant": row["variant"], "decoding": row["decoding"], "on": row["on"],
                              "seed": int(row["seed"])}
    return out


def _tuned_columns(df: pd.DataFrame) -> pd.DataFrame:
    tuned = pd.DataFrame([json.loads(t) for t in df["tuned"]], index=df.index)
    return tuned


def tuning_table(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(columns=COLUMNS)
    tuned = _tuned_columns(df)
    out = df[["method", "group", "variant"]].copy()
    for k in tuned.columns:
        out[k] = tuned[k]
    out["seed"] = df["seed"]
    out["score on selection set"] = df["score"]
    if "val_loss" in df:  # the tie-break (selection files written before it have none)
        out["validation loss"] = df["val_loss"]
    for col in ("metric", "on", "split", "rank"):
        out[col] = df[col]
    out["selected"] = ["✓" if s else "" for s in df["selected"]]
    out["status"] = df["status"]
    if "rung" in df and df["rung"].notna().any():  # halving: where each point stopped (a plain grid: the full run)
        out["stopped at rung"] = [("" if pd.isna(r) else int(r)) for r in df["rung"]]
        out["score at each rung"] = [_per_rung(s) for s in df["rung_scores"]]
    best = df[df["selected"]].set_index(["method", "group"])["score"]
    tied = [not sel and pd.notna(sc) and best.get((m, g)) == sc
            for m, g, sc, sel in zip(df["method"], df["group"], df["score"], df["selected"])]
    out["note"] = [e or "; ".join(x for x in _edge_phrases(edge) if x) or
                   ("tied with the selected point (equal scores go to the lower validation loss, then the earlier grid point)"
                    if t else "")
                   for e, edge, t in zip(df["error"], df["edge"], tied)]
    return out


def _rung_scores(value) -> list[tuple[int, float | None]]:
    """selection.tsv's `rung_scores` ({rung: score}, JSON; empty for a plain grid) as (rung, score) in rung order."""
    if not isinstance(value, str) or not value:
        return []
    return sorted((int(r), s) for r, s in json.loads(value).items())


def _per_rung(rung_scores) -> str:
    """`rung_scores` as 'rung 0: 0.375; rung 1: 0.315'."""
    return "; ".join(f"rung {r}: {'—' if s is None else format(s, '.4g')}" for r, s in _rung_scores(rung_scores))


def _edge_phrases(edge: str) -> tuple[str, str]:
    """A winner's edge column as the table's note says it: its edges, then its stages' notes."""
    edges, notes = edge_and_notes(edge)
    return (f"winner at the grid's edge: {edges}" if edges else "", notes)


def _values(g: pd.DataFrame) -> str:
    """The tuned values of `g`'s points, per key: 'lr ∈ {0.001, 0.01}'."""
    tuned = _tuned_columns(g)
    return "; ".join(f"{k} ∈ {{{', '.join(format(v, 'g') if isinstance(v, float) else str(v) for v in sorted(set(tuned[k]), key=lambda x: (str(type(x)), x)))}}}"
                     for k in tuned.columns)


def grid_lines(df: pd.DataFrame) -> list[str]:
    """One sentence per tuned group: the grid searched (and any extension points) and the point selected."""
    lines = []
    for (method, group), g in df.groupby(["method", "group"], sort=True):
        extension = g["extension"] if "extension" in g else pd.Series(False, index=g.index)
        grid = _values(g[~extension]) + (f", extended past its edge by {_values(g[extension])}" if extension.any() else "")
        win = g[g["selected"]].iloc[0]
        where = f"`{win['on']}` (split `{win['split']}`, not reported)"
        if int(win["finished"]) == 0:
            lines.append(f"- `{method}`{'' if group == 'default' else f' ({group})'}: grid {grid} on seed {win['seed']}; "
                         f"no grid point finished, so `{win['variant']}` stands in and its failure is reported.")
            continue
        edges, notes = edge_and_notes(win["edge"])
        edge = (f" — at the edge of the grid ({edges}): the optimum may lie outside it" if edges else "") + \
            (f" ({notes})" if notes else "")
        if "rung" in g and pd.notna(win.get("rung")):
            points = g[~extension]  # extension points train from step 0 to the last rung
            reached = points["rung"].max()
            edge += (f"; successive halving: {len(points)} points, {int((points['rung'] == reached).sum())} reached rung "
                     f"{int(reached)}{' (the extension points trained to it from step 0)' if extension.any() else ''}, "
                     "the winner's run at the selection seed stopped there")
        lines.append(f"- `{method}`{'' if group == 'default' else f' ({group})'}: grid {grid} on seed {win['seed']}; "
                     f"selected `{win['variant']}` ({win['metric']} {win['score']:.4g} on {where}; "
                     f"{int(win['finished'])}/{len(g)} points finished){edge}.")
    return lines


def rung_rows(df: pd.DataFrame) -> pd.DataFrame:
    """For the figure: one row per (grid point, rung it reached) of a halving group, its `group`
    naming the rung (one line per rung), selected at the winner's last rung; other rows as they are."""
    if "rung_scores" not in df:
        return df
    rows = []
    for _, r in df.iterrows():
        scores = _rung_scores(r["rung_scores"])
        if pd.isna(r.get("rung")) or not scores:
            rows.append(r.to_dict())
            continue
        for rung, score in scores:
            name = f"rung {rung}" if r["group"] == "default" else f"{r['group']} rung {rung}"
            rows.append({**r.to_dict(), "group": name, "score": score,
                         "selected": bool(r["selected"]) and rung == int(r["rung"])})
    return pd.DataFrame(rows)


def build_tuning_report(task: str, selection_paths, out: dict[str, Path], groups=()) -> None:
    """`groups`: the task's TuneGroup params (TuningReportSpec.groups), which say how each searched."""
    from . import plots
    from .tables import markdown_table

    df = with_search(load_selections(selection_paths), groups)
    table = tuning_table(df)
    table.to_csv(out["table"], sep="\t", index=False)
    if df.empty:
        md = "No tuned method.\n"
    else:
        metric = ", ".join(sorted(set(df["metric"])))
        seeds = ", ".join(str(x) for x in sorted(set(df["seed"])))
        md = (f"Each method's grid ran at the selection seed ({seeds}), which no table reports; every point was "
              f"scored on the selection set by {metric}; only the selected point ran the reported seeds, and only "
              "those runs are in the tables above.\n\n"
              + "\n".join(grid_lines(df)) + "\n\n" + markdown_table(table))
    atomic_write_text(out["table_md"], md)
    halving = "rung" in df and df["rung"].notna().any()
    plots.tuning(rung_rows(df), f"{task}: selection score per grid point (selection seed{'; a line per rung' if halving else ''})",
                 out["figure"])
