"""The report: per-task tables (TSV + markdown), recommendations and report.md."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from . import plots
from .analysis import (COST_COLUMNS, COSTS, aggregate_seeds, better_pairs, cell_label, choose_variants, compare_methods,
                       load_summary, metric_columns, primary_eval, primary_metric, read_predictions,
                       recommendations,
                       significance_statements, significant_front)
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


SELECTION_SET = "the selection set (tuned)"
SIG_COLUMNS = {"p_vs_best_holm": "p vs best (Holm)", "not_worse_than_best": "not worse than best (p>=0.05)"}


def _with_fronts(comp: pd.DataFrame, agg: pd.DataFrame, variants: dict, ev: str, dec: str, pairs: dict) -> pd.DataFrame:
    """`front_<cost>` per trained method: on the Pareto front of quality against that cost unless
    another method is significantly better (Holm over all pairs) at the same or a lower cost."""
    rows = agg[(agg["eval"] == ev) & (agg["decoding"].fillna("").astype(str) == dec) & (agg["status"] == "ok")]
    chosen = rows[[variants.get(m) == v for m, v in zip(rows["method"], rows["variant"])]]
    present = [c for c in COSTS if c in chosen]
    costs = comp[["method"]].merge(chosen[["method", *present]], on="method", how="left")
    trained = costs["method"] != "none"
    for cost in present:
        col = pd.Series(float("nan"), index=costs.index, dtype=object)
        known = trained & costs[cost].notna()
        if known.any():
            col[known] = significant_front(costs[known], cost, pairs)
        comp[f"front_{cost}"] = col.values
    return comp


def significance(agg: pd.DataFrame, predictions: dict, evals: list[str], decodings: list[str], metric: str,
                 n: int = 1000, seed: int = 0, selected: dict | None = None, comet: dict | None = None) -> pd.DataFrame:
    """Per eval set (and decoding): each method at its variant chosen on `validation` (if the task
    has it, else on the reported set) against the best, see analysis.compare_methods. A tuned
    method is compared at its configuration selected on the selection set (`selected`: method ->
    variant, from the tuning checkpoints). `predictions`: (method, variant, seed, eval, decoding)
    -> predictions.jsonl; `comet`: the same keys -> COMET segment scores (line-aligned)."""
    selected, comet = selected or {}, comet or {}
    from ..metrics import main_column, scale_of

    column = main_column(metric)
    frames = []
    for ev in evals:
        chosen_on = "validation" if "validation" in evals else ev
        for dec in decodings or [""]:
            variants = {**choose_variants(agg, column, chosen_on, dec), **selected}
            systems = {m: [read_predictions(p, comet.get(key)) for key, p in sorted(predictions.items(), key=str)
                           if (key[0], key[1], key[3], key[4]) == (m, v, ev, dec)] for m, v in variants.items()}
            try:
                comp = compare_methods(systems, column, n=n, seed=seed)
                comp = _with_fronts(comp, agg, variants, ev, dec, better_pairs(systems, column, n=n, seed=seed))
            except KeyError as e:  # e.g. COMET: no per-example scores
                comp = pd.DataFrame({"method": list(variants), "note": str(e)})
            comp.insert(0, "chosen_on", [SELECTION_SET if m in selected else chosen_on for m in comp["method"]])
            comp.insert(0, "variant", comp["method"].map(variants))
            comp.insert(0, "decoding", dec)
            comp.insert(0, "eval", ev)
            comp["points_scale"] = 100.0 / scale_of(column)
            frames.append(comp)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def build_task_report(task: str, summary_path, logs: dict[str, Path], distances: dict[str, Path], task_cfg: dict,
                      report_cfg: dict, out: dict[str, Path], predictions: dict | None = None,
                      selected: dict | None = None, comet: dict | None = None) -> None:
    """All of one task's report outputs (`out`: name -> path, see rules/report.smk). With
    `predictions` ((method, variant, seed, eval, decoding) -> predictions.jsonl), the paired
    significance tests: columns of the task table, a comparison table and recommendations in words."""
    df = load_summary(summary_path)
    df = df[df["task"] == task]
    metrics = metric_columns(task_cfg["metrics"])
    metric = primary_metric(task_cfg, report_cfg, task)
    ev = primary_eval(task_cfg, report_cfg, task)
    agg = aggregate_seeds(df, metrics)
    table = task_table(agg, metrics, metric)
    sig = pd.DataFrame()
    if predictions:
        sig = significance(agg, predictions, list(task_cfg["eval"]), list(task_cfg.get("decoding") or []), metric,
                           selected=selected, comet=comet)
    md_extra = ""
    if not sig.empty and "p_vs_best_holm" in sig:
        keyed = sig.set_index(["method", "variant", "eval", "decoding"])
        keys = list(zip(agg["method"], agg["variant"], agg["eval"], agg["decoding"].astype(str)))
        for col, title in SIG_COLUMNS.items():
            table[title] = [keyed.loc[k, col] if k in keyed.index else float("nan") for k in keys]
        shown = sig.copy()
        shown.insert(0, "cell", [cell_label(r) for _, r in shown.iterrows()])
        shown = shown.drop(columns=["method", "variant", "points_scale"] + ([] if shown["decoding"].astype(bool).any()
                                                                            else ["decoding"]))
        md_extra = ("\n#### Paired comparisons with the best method (bootstrap over examples and seeds, 1,000 "
                    "resamples, Holm-adjusted; BLEU/chrF: sacrebleu's paired bootstrap)\n\n" + markdown_table(shown))
    table.to_csv(out["table"], sep="\t", index=False)
    atomic_write_text(out["table_md"], markdown_table(table) + md_extra)
    recs = pd.DataFrame(recommendations(agg[agg["eval"] == ev], metric, report_cfg.get("within_points", 1.0),
                                        report_cfg.get("param_budget_pct", 1.0)))
    if recs.empty:
        recs = pd.DataFrame(columns=["recommendation", "cell", metric])
    if not sig.empty and "p_vs_best_holm" in sig:
        dec = (list(task_cfg.get("decoding") or []) or [""])[0]
        comp = sig[(sig["eval"] == ev) & (sig["decoding"] == dec)]
        costs = agg[(agg["eval"] == ev) & (agg["decoding"].astype(str) == dec)].merge(
            comp[["method", "variant"]], on=["method", "variant"])
        words = significance_statements(task, comp, costs, metric, ev, " / ".join(dict.fromkeys(comp["chosen_on"])) if len(comp) else ev,
                                        float(comp["points_scale"].iloc[0]) if len(comp) else 1.0)
        recs = pd.concat([recs, pd.DataFrame({"recommendation": "in words", "statement": words})], ignore_index=True)
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
                 out["pareto"], sig=sig)
    frames = []
    for label, path in distances.items():
        d = pd.read_csv(path, sep="\t")
        if len(d):
            frames.append(d.assign(cell=label))
    plots.distance_bars(pd.concat(frames) if frames else pd.DataFrame(), f"{task}: how far each method moved the weights",
                        out["distances"])
    # a tuned method that is not also swept has one (selected) variant: its grid is in the tuning figure
    tuned_only = {m for m, v in (selected or {}).items() if set(agg.loc[agg["method"] == m, "variant"]) == {v}}
    plots.sweep(agg[~agg["method"].isin(tuned_only)], metric, ev, f"{task}: hyperparameter sweeps ({metric} on {ev})",
                out["sweep"])


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
        words = recs[recs["recommendation"] == "in words"] if "statement" in recs else recs.iloc[:0]
        recs = recs[recs["recommendation"] != "in words"]
        for _, r in recs.iterrows():
            parts.append(f"- **{r['recommendation']}**: `{r['cell']}` — {metric} {fmt(r[metric])}, "
                         f"{fmt(r['trainable_params'])} trainable parameters ({fmt(r['trainable_pct'])}%), "
                         f"{fmt(r['train_time_s'])} s training, {fmt(r['peak_train_mem_mb'])} MB peak training memory\n")
        if len(words):
            parts.append(f"\n### What the significance tests say ({metric} on `{ev}`)\n\n")
            parts.extend(f"- {w}\n" for w in words["statement"])
        parts.append("\n### All cells\n\n")
        parts.append((report_dir / "tables" / f"{task}.md").read_text())
        tuning = report_dir / "tables" / f"{task}_tuning.md"
        if tuning.is_file():
            parts.append("\n### Tuning: the grid searched and what each point scored on the selection set\n\n")
            parts.append(tuning.read_text())
            parts.append(f"\n![Selection score per grid point](figures/{task}/tuning.png)\n")
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
