"""results/summary.tsv: one row per (cell, eval set, decoding), quality next to cost.

The rule passes, for every metrics file, the cell's train_stats.tsv and run.json in the same
position of its own list (and COMET's file, where the task uses COMET); a row's identity comes
from the metrics row itself, never from a path."""
from __future__ import annotations

import json
from pathlib import Path

from ..records import read_json, read_tsv, write_tsv

ID_COLUMNS = ["task", "method", "variant", "seed", "eval", "decoding", "status", "error"]
COST_COLUMNS = ["trainable_params", "total_params", "trainable_pct", "train_time_s", "time_per_epoch_s",
                "peak_train_mem_mb", "peak_infer_mem_mb", "infer_throughput", "device"]
TAIL_COLUMNS = ["comet_status", "infer_examples_per_s", "generated_tokens", "n_examples", "n_scored",
                "infer_words_per_s", "words_without_subword", "n_train", "truncated_train", "steps", "epochs",
                "train_examples_per_s", "load_time_s", "infer_time_s", "final_train_loss", "final_val_loss", "run_dir",
                "hparams"]


def build_summary(metrics_files: list, stats_files: list, run_files: list, comet_files: dict | None = None) -> list[dict]:
    """comet_files: metrics file -> its comet.tsv, for the cells whose task is scored by COMET."""
    rows = []
    comet_files = comet_files or {}
    for path, stats_path, run_path in zip(metrics_files, stats_files, run_files):
        stats = read_tsv(stats_path)[0]
        run = read_json(run_path)
        comet = comet_files.get(str(path))
        extra = read_tsv(comet)[0] if comet else {}
        for m in read_tsv(path):
            row = {**{k: v for k, v in stats.items() if v != ""}, **{k: v for k, v in m.items() if v != ""}}
            if stats.get("status") != "ok":
                row["status"], row["error"] = stats["status"], stats["error"]
            row.update(extra)  # comet and comet_status, the reason included when there is no score
            row["device"] = m.get("device") or stats.get("device")
            row["run_dir"] = str(Path(run_path).parent)
            row["hparams"] = json.dumps(run["hparams"], sort_keys=True)
            rows.append(row)
    rows.sort(key=lambda r: (r["task"], r["method"], r["variant"], int(r["seed"]), r["eval"], r.get("decoding", "")))
    return rows


def summary_columns(rows: list[dict]) -> list[str]:
    fixed = set(ID_COLUMNS + COST_COLUMNS + TAIL_COLUMNS)
    metric_cols = sorted({k for r in rows for k in r} - fixed)
    return ID_COLUMNS + metric_cols + COST_COLUMNS + TAIL_COLUMNS


def write_summary(metrics_files, stats_files, run_files, comet_files, out) -> list[dict]:
    rows = build_summary(metrics_files, stats_files, run_files, comet_files)
    write_tsv(out, rows, summary_columns(rows))
    return rows
