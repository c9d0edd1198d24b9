"""The report: per-task tables (TSV + markdown), recommendations and report.md."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from . import plots
from .analysis import (COST_COLUMNS, aggregate_seeds, cell_label, load_summary, primary_eval, primary_metric,
                       recommendations)
from ..records import atomic_write_text


def fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(fmt(r[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def task_table(agg: pd.DataFrame, metrics: list[str], primary: str) -> pd.DataFrame:
    """One row per cell and eval set: quality (mean ± std, 95% interval, seeds), cost, status."""
    out = pd.DataFrame({"cell": [cell_label(r) for _, r in agg.iterrows()], "eval": agg["eval"]})
    if agg["decoding"].astype(str).str.len().any():
        out["decoding"] = agg["decoding"]
    out["status"] = agg["status"]
    for m in metrics:
        out[m] = agg[m]
    multi = (agg["n"] > 1).any()
    if multi:
        out[f"{primary} ± std"] = [f"{fmt(a)} ± {fmt(b)}" if not math.isnan(b) else fmt(a)
                                   for a, b in zip(agg[primary], agg[f"{primary}_std"])]
        out[f"{primary} 95% CI ±"] = agg[f"{primary}_ci95"]
    out["seeds"] = agg["n"].astype(str) + "/" + agg["seeds"].astype(str)
    for c in COST_COLUMNS:
        out[c] = agg[c]
    out["error"] = agg["error"]
    return out


def transfer_table(agg: pd.DataFrame, transfer: dict | None, metrics: list[str]) -> pd.DataFrame:
    """Per cell: each metric on the source and the target eval set and the gap (source - target),
    e.g. English dev minus German test for zero-shot POS tagging."""
    columns = ["cell"] + [f"{m}_{side}" for m in metrics for side in ("source", "target", "gap")]
    if not transfer:
        return pd.DataFrame(columns=columns)
    ok = agg[agg["status"] == "ok"]
    src = ok[ok["eval"] == transfer["source"]].set_index(["method", "variant"])
    tgt = ok[ok["eval"] == transfer["target"]].set_index(["method", "variant"])
    rows = []
    for key in src.index.intersection(tgt.index):
        row = {"cell": cell_label({"method": key[0], "variant": key[1]})}
        for m in metrics:
            row[f"{m}_source"], row[f"{m}_target"] = src.loc[key, m], tgt.loc[key, m]
            row[f"{m}_gap"] = src.loc[key, m] - tgt.loc[key, m]
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def build_task_report(task: str, summary_path, logs: dict[str, Path], distances: dict[str, Path], task_cfg: dict,
                      report_cfg: dict, out: dict[str, Path]) -> None:
    """All of one task's report outputs (`out`: name -> path, see rules/report.smk)."""
    df = load_summary(summary_path)
    df = df[df["task"] == task]
    metrics = task_cfg["metrics"]
    metric = primary_metric(task_cfg, report_cfg, task)
    ev = primary_eval(task_cfg, report_cfg, task)
    agg = aggregate_seeds(df, metrics)
    table = task_table(agg, metrics, metric)
    table.to_csv(out["table"], sep="\t", index=False)
    atomic_write_text(out["table_md"], markdown_table(table))
    recs = pd.DataFrame(recommendations(agg[agg["eval"] == ev], metric, report_cfg.get("within_points", 1.0),
                                        report_cfg.get("param_budget_pct", 1.0)))
    if recs.empty:
        recs = pd.DataFrame(columns=["recommendation", "cell", metric])
    recs.insert(0, "eval", ev)
    recs.insert(0, "task", task)
    recs.to_csv(out["recommendations"], sep="\t", index=False)
    transfer_table(agg, task_cfg.get("transfer"), metrics).to_csv(out["transfer"], sep="\t", index=False)

    curves = {}
    for label, path in logs.items():
        log = pd.read_csv(path, sep="\t")
        if len(log):
            curves[label] = log
    plots.learning_curves(curves, f"{task}: loss curves", out["learning_curves"])
    plots.pareto(agg, metric, list(task_cfg["eval"]), f"{task}: {metric} against cost (Pareto front in red)",
                 out["pareto"])
    frames = []
    for label, path in distances.items():
        d = pd.read_csv(path, sep="\t")
        if len(d):
            frames.append(d.assign(cell=label))
    plots.distance_bars(pd.concat(frames) if frames else pd.DataFrame(), f"{task}: how far each method moved the weights",
                        out["distances"])
    plots.sweep(agg, metric, ev, f"{task}: hyperparameter sweeps ({metric} on {ev})", out["sweep"])


def write_report(tasks: dict[str, dict], report_dir: Path, out_md: Path, report_cfg: dict) -> None:
    report_dir = Path(report_dir)
    parts = ["# peftgrid report\n",
             "Every number below comes from `results/summary.tsv`; each cell trained from the pretrained "
             "weights. Quality is the mean over seeds (± std and a 95% t-interval when there are several); "
             "failed cells are listed with their reason.\n"]
    for task, cfg in tasks.items():
        metric = primary_metric(cfg, report_cfg, task)
        ev = primary_eval(cfg, report_cfg, task)
        parts.append(f"\n## {task}\n")
        recs = pd.read_csv(report_dir / "tables" / f"{task}_recommendations.tsv", sep="\t")
        parts.append(f"\n### Recommendations ({metric} on `{ev}`)\n\n")
        if recs.empty:
            parts.append("No finished cell: nothing to recommend.\n")
        for _, r in recs.iterrows():
            parts.append(f"- **{r['recommendation']}**: `{r['cell']}` — {metric} {fmt(r[metric])}, "
                         f"{fmt(r['trainable_params'])} trainable parameters ({fmt(r['trainable_pct'])}%), "
                         f"{fmt(r['train_time_s'])} s training, {fmt(r['peak_train_mem_mb'])} MB peak training memory\n")
        parts.append("\n### All cells\n\n")
        parts.append((report_dir / "tables" / f"{task}.md").read_text())
        if cfg.get("transfer"):
            gap = pd.read_csv(report_dir / "tables" / f"{task}_transfer.tsv", sep="\t")
            parts.append(f"\n### Transfer gap: `{cfg['transfer']['source']}` minus `{cfg['transfer']['target']}`\n\n")
            parts.append(markdown_table(gap))
        qualitative = report_dir / "tables" / f"{task}_qualitative.md"
        if qualitative.is_file():
            parts.append(f"\nOutputs side by side: [tables/{task}_qualitative.md](tables/{task}_qualitative.md)\n")
            for name in ("sentence_bleu", "sentence_chrf"):
                parts.append(f"\n![Sentence scores](figures/{task}/{name}.png)\n")
        for name, caption in (("pareto", "Quality against cost"), ("learning_curves", "Loss curves"),
                              ("distances", "Weight distance to the pretrained model, per component"),
                              ("sweep", "Hyperparameter sweeps")):
            parts.append(f"\n![{caption}](figures/{task}/{name}.png)\n")
    atomic_write_text(out_md, "".join(parts))


def build_generation_report(task: str, predictions: dict[tuple[str, str, str], Path], eval_name: str,
                            out: dict[str, Path], n_examples: int = 8) -> None:
    """Qualitative reading for a generation task: the same sources with every cell's output side
    by side (on `eval_name`, first decoding strategy), and the sentence BLEU / chrF distributions
    per cell and decoding strategy. `predictions`: (cell, eval, decoding) -> predictions.jsonl."""
    import json

    loaded = {key: [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
              for key, path in predictions.items()}
    decodings = sorted({d for _, e, d in loaded if e == eval_name})
    first = "greedy" if "greedy" in decodings else (decodings[0] if decodings else None)
    cells = sorted({c for c, e, d in loaded if e == eval_name and d == first and loaded[(c, e, d)]})
    lines = [f"# {task}: outputs side by side ({eval_name}, decoding `{first}`)\n"]
    if cells:
        base = loaded[(cells[0], eval_name, first)]
        for i in range(min(n_examples, len(base))):
            lines.append(f"\n## Example {i + 1}\n\n**Source:** {base[i]['source']}\n\n"
                         f"**Reference:** {base[i]['references'][0]}\n\n| cell | output | sentence BLEU | chrF |\n|---|---|---|---|\n")
            for cell in cells:
                p = loaded[(cell, eval_name, first)][i]
                text = p["hypothesis"].replace("|", "\\|").replace("\n", " ") or "(empty)"
                lines.append(f"| {cell} | {text} | {fmt(p.get('sentence_bleu'))} | {fmt(p.get('sentence_chrf'))} |\n")
    else:
        lines.append("\nNo finished cell.\n")
    atomic_write_text(out["qualitative"], "".join(lines))
    for metric, key in (("BLEU", "sentence_bleu"), ("chrF", "sentence_chrf")):
        scores = {f"{c} [{d}]": [p[key] for p in preds if key in p]
                  for (c, e, d), preds in loaded.items() if e == eval_name}
        plots.sentence_scores(scores, metric, f"{task}: sentence {metric} per cell and decoding ({eval_name})",
                              out[f"sentence_{key.split('_')[1]}"])
