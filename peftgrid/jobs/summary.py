"""results/summary.tsv: one row per (cell, eval set, decoding), quality next to cost.

The rule passes every metrics file (and the COMET table of each task that uses COMET); a row's
identity comes from the metrics row itself, never from a path, and its cell's train_stats.tsv and
run.json are found from that identity (plan.runs.run_dir).

Retention (issue 20): the rule also passes each cell's metrics file of its task's FIRST retention
set (config order), joined by the cell identity its row holds, under columns.RETENTION_SUMMARY's
names (retention_set says which set); `intruders` is the cell's total of intruder dimensions over
its rows of its task's results/distances/<task>.tsv (joined by the cell identity)."""
from __future__ import annotations

import json

from ..columns import CELL, COSTS, INTRUDERS, OK, RETENTION_SUMMARY, ROW, ROW_STATUS
from ..plan.layout import RUN_FILE, TRAIN_STATS_FILE, run_dir
from ..plan.report_targets import REPORT_FILE
from ..records import read_json, read_tsv, write_tsv

ID_COLUMNS = [*ROW, *ROW_STATUS]
COST_COLUMNS = [*COSTS, "device"]
RETENTION_COLUMNS = [*RETENTION_SUMMARY.values(), INTRUDERS]
TAIL_COLUMNS = ["mem_measure", "peak_train_mem_reserved_mb", "peak_infer_mem_reserved_mb", "val_time_s",
                "checkpoint_time_s", "encoder_time_s", "cached_examples", "inference_merged", "infer_throughput_unmerged", "infer_time_unmerged_s",
                "peak_infer_mem_unmerged_mb",
                "comet_status", "infer_examples_per_s", "generated_tokens", "gen_len_mean", "gen_len_max",
                "hit_max_new_tokens", "decoding_settings", "n_examples", "n_scored",
                "infer_words_per_s", "words_without_subword", "n_train", "truncated_train", "steps", "epochs",
                "train_examples_per_s", "load_time_s", "eval_load_time_s", "infer_time_s", "final_train_loss", "final_val_loss", "run_dir",
                "hparams"]


def build_summary(metrics_files: list, comet_files: list | None = None, retention_files: list | None = None,
                  distance_files: list | None = None) -> list[dict]:
    """comet_files: the COMET tables of the tasks scored by COMET (results/comet/<task>/scores.tsv,
    one row per cell x eval set x decoding), joined on those identity columns. retention_files:
    each cell's first retention set's metrics.tsv, joined on the cell's identity. distance_files:
    each task's weight distances (results/distances/<task>.tsv), summed per cell identity."""
    rows = []
    comet = {tuple(str(r[k]) for k in ROW): {"comet": r["comet"], "comet_status": r["comet_status"]}
             for path in comet_files or [] for r in read_tsv(path)}
    retention = {tuple(str(r[k]) for k in CELL): {RETENTION_SUMMARY[k]: v for k, v in r.items() if k in RETENTION_SUMMARY}
                 for path in retention_files or [] for r in read_tsv(path)}
    intruders = intruder_totals(distance_files or [])
    for path in metrics_files:
        for m in read_tsv(path):
            cell_dir = run_dir({k: m[k] for k in CELL})
            stats = read_tsv(f"{cell_dir}/{TRAIN_STATS_FILE}")[0]
            run = read_json(f"{cell_dir}/{RUN_FILE}")
            extra = comet.get(tuple(str(m.get(k, "")) for k in ROW), {})
            row = {**{k: v for k, v in stats.items() if v != ""}, **{k: v for k, v in m.items() if v != ""}}
            if stats.get("status") != OK:
                row["status"], row["error"] = stats["status"], stats["error"]
            row.update(extra)  # comet and comet_status, the reason included when there is no score
            row.update(retention.get(tuple(str(m[k]) for k in CELL), {}))
            row[INTRUDERS] = intruders.get(tuple(str(m[k]) for k in CELL))
            row["device"] = m.get("device") or stats.get("device")
            row["run_dir"] = cell_dir
            row["hparams"] = json.dumps(run["hparams"], sort_keys=True)
            rows.append(row)
    rows.sort(key=lambda r: (r["task"], r["method"], r["variant"], int(r["seed"]), r["eval"], r.get("decoding", "")))
    return rows


def intruder_totals(distance_files: list) -> dict[tuple, int]:
    """Cell identity -> its intruder dimensions summed over its weight matrices; a cell without
    counted rows (a failed cell, a method without layer matrices of its own) is absent."""
    totals: dict[tuple, int] = {}
    for path in distance_files:
        for r in read_tsv(path):
            if r.get(INTRUDERS, "") != "":
                key = tuple(str(r[k]) for k in CELL)
                totals[key] = totals.get(key, 0) + int(r[INTRUDERS])
    return totals


def summary_columns(rows: list[dict]) -> list[str]:
    fixed = set(ID_COLUMNS + COST_COLUMNS + RETENTION_COLUMNS + TAIL_COLUMNS)
    metric_cols = sorted({k for r in rows for k in r} - fixed)
    return ID_COLUMNS + metric_cols + COST_COLUMNS + RETENTION_COLUMNS + TAIL_COLUMNS


def write_summary(metrics_files, comet_files, out, retention_files=None, distance_files=None) -> list[dict]:
    rows = build_summary(metrics_files, comet_files, retention_files, distance_files)
    write_tsv(out, rows, summary_columns(rows))
    return rows


def console_tables(rows: list[dict], tasks: dict) -> str:
    """Each task's comparison at a glance: method, variant, main metric, trainable %, training time,
    peak training memory (mean over seeds; failed cells with their reason). `tasks`: task ->
    {"metric": name, "eval": eval set}."""
    out = []
    for task, what in tasks.items():
        metric, ev = what["metric"], what["eval"]
        mine = [r for r in rows if r["task"] == task and r["eval"] == ev and r.get("decoding", "") in ("", what.get("decoding", ""))]
        groups: dict[tuple, list[dict]] = {}
        for r in mine:
            groups.setdefault((r["method"], r["variant"]), []).append(r)
        lines = [f"{task} — {metric} on {ev}" + (f" ({what['decoding']})" if what.get("decoding") else "")
                 + f" — every cell by name; which method to use: {REPORT_FILE}",
                 f"  {'method':<16}{'variant':<18}{metric:>12}{'trainable %':>13}{'train s':>10}{'peak MB':>10}  seeds"]
        cells = []
        for (method, variant), rs in groups.items():
            ok = [r for r in rs if r["status"] == OK and r.get(metric, "") != ""]
            score = sum(float(r[metric]) for r in ok) / len(ok) if ok else float("-inf")
            cells.append((score, method, variant, rs, ok))
        # by name, not by score: the verdicts (selection-set choices, paired tests) are report.md's alone
        for score, method, variant, rs, ok in sorted(cells, key=lambda x: (x[1], x[2])):
            if not ok:
                lines.append(f"  {method:<16}{variant:<18}  failed: {rs[0].get('error', '')[:70]}")
                continue
            mean = lambda col: sum(float(r[col]) for r in ok if r.get(col, "") != "") / max(1, len([r for r in ok if r.get(col, "") != ""]))
            lines.append(f"  {method:<16}{variant:<18}{score:>12.4f}{mean('trainable_pct'):>13.3f}"
                         f"{mean('train_time_s'):>10.1f}{mean('peak_train_mem_mb'):>10.0f}  {len(ok)}/{len(rs)}")
        out.append("\n".join(lines))
    return "\n\n".join(out)
