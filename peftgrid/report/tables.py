"""The report: per-task tables (TSV + markdown), recommendations and report.md."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from . import plots
from .analysis import (COST_COLUMNS, COSTS, FRONT_CAPTION, LEARN_FORGET_CAPTION, Retention, aggregate_seeds,
                       better_pairs, cell_label, chosen_cells, chosen_rows, compare_methods, forgetting, forgetting_unit,
                       load_summary, metric_columns, paired_test, primary_decoding, primary_eval, primary_metric,
                       read_predictions, recommend, retention_column, significant_front)
from ..columns import OK
from .significance import RESAMPLE_SEED, RESAMPLES
from ..plan.report_targets import GENERATION_FIGURES, TASK_FIGURES, TUNING_FIGURE, figure_file, table_file
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
    ok = agg[agg["status"] == OK]
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


SIG_COLUMNS = {"p_vs_best": "p vs best (adjusted)", "worse_than_best": "significantly worse than best",
               "p_vs_none": "p vs none (adjusted)"}
COMPARISON_COLUMNS = ["eval", "cell", "decoding", "chosen_on", "seeds", "examples", "unit", "score", "ci_low", "ci_high",
                      "diff_vs_best", "diff_ci_low", "diff_ci_high", "p_vs_best", "worse_than_best", "diff_vs_none",
                      "none_ci_low", "none_ci_high", "p_vs_none", "better_than_none", "test", "note"]


def _with_fronts(comp: pd.DataFrame, agg: pd.DataFrame, chosen: dict, ev: str, pairs: dict,
                 higher: bool, baseline: str | None) -> pd.DataFrame:
    """`front_<cost>` per trained method: its place against the front of quality and that cost
    (analysis.significant_front; the untrained `baseline` is a reference, on no front)."""
    rows = chosen_rows(agg, chosen, ev)
    present = [c for c in COSTS if c in rows]
    points = comp[["method", "score"]].merge(rows[["method", *present]], on="method", how="left")
    trained = points["method"] != baseline
    for cost in present:
        col = pd.Series(float("nan"), index=points.index, dtype=object)
        known = trained & points[cost].notna()
        if known.any():
            col[known] = significant_front(points[known], cost, pairs, higher)
        comp[f"front_{cost}"] = col.values
    return comp


def _with_retention(comp: pd.DataFrame, retention, pairs: dict, higher: bool, baseline: str | None) -> pd.DataFrame:
    """Per retention set (analysis.Retention): each method's forgetting, its adjusted p against the
    pretrained model (did it forget at all?) and against the best-scoring method on this eval set
    (does it forget more?), and its place on the learn-versus-forget front: forgetting is the cost,
    the task score the quality, under significant_front's rules with the task's own paired tests."""
    best = comp.loc[comp["best"].astype(bool), "method"]
    best = best.iloc[0] if len(best) else None
    for ret in retention:
        col = retention_column(ret.name)
        known = ret.table.set_index("method")
        comp[col] = [known.loc[m, "forgetting"] if m in known.index else float("nan") for m in comp["method"]]
        comp[f"{col}_p_vs_pretrained"] = [known.loc[m, "p_vs_pretrained"] if m in known.index and ret.tested
                                          else float("nan") for m in comp["method"]]
        comp[f"{col}_p_vs_best"] = [ret.versus(m, best)[0] for m in comp["method"]]
        front = pd.Series(float("nan"), index=comp.index, dtype=object)
        points = comp[(comp["method"] != baseline) & comp[col].notna()]
        if len(points):
            front[points.index] = significant_front(points, col, pairs, higher)
        comp[f"front_{col}"] = front.values
    return comp


def significance(agg: pd.DataFrame, predictions: dict, evals: list[str], chosen: dict, column: str,
                 choices: dict | None = None, n: int = RESAMPLES, seed: int = RESAMPLE_SEED, comet: dict | None = None,
                 labels: list[str] | None = None, baseline: str | None = None, retention=()) -> pd.DataFrame:
    """Per eval set: each method at its chosen (variant, decoding) (`chosen`: analysis.chosen_cells)
    against the best and against the untrained `baseline` (analysis.compare_methods) on the summary
    `column` (the task's primary metric), and its place on each cost's front. `predictions`:
    (method, variant, seed, eval, decoding) -> predictions.jsonl of the reported seeds; `comet`: the
    same keys -> COMET segment scores (line-aligned); `choices`: tuning.read_choices, for the set
    each choice was made on; `labels`: the task's label order (binary F1's positive label, see
    analysis.Scorer); `retention`: the task's analysis.Retention sets (their columns and the
    learn-versus-forget front, _with_retention)."""
    choices, comet = choices or {}, comet or {}
    from ..metrics import higher_is_better, scale_of

    higher = higher_is_better(column)  # the registry's direction of the column (a loss: lower)
    frames = []
    for ev in evals:
        systems = {m: [read_predictions(p, comet.get(key)) for key, p in sorted(predictions.items(), key=str)
                       if (key[0], key[1], key[3], key[4]) == (m, v, ev, d)] for m, (v, d) in chosen.items()}
        if sum(1 for runs in systems.values() if any(runs)) < 2:
            frames.append(pd.DataFrame({"eval": ev, "method": list(chosen), "note": "fewer than two methods to compare"}))
            continue
        try:
            pw = paired_test(systems, column, n, seed, labels)  # one family of tests for the table and the front
            comp = compare_methods(systems, column, n=n, seed=seed, higher_is_better=higher, labels=labels,
                                   baseline=baseline, pw=pw)
            pairs = better_pairs(systems, column, n=n, seed=seed, higher_is_better=higher, labels=labels, pw=pw)
            comp = _with_fronts(comp, agg, chosen, ev, pairs, higher, baseline)
            comp = _with_retention(comp, retention, pairs, higher, baseline)
        except KeyError as e:  # e.g. COMET: no per-example scores; binary F1 without the label order
            comp = pd.DataFrame({"method": list(chosen), "note": e.args[0] if e.args else str(e)})
        comp.insert(0, "chosen_on", [f"{choices[m]['on']} (seed {choices[m]['seed']})" if m in choices
                                     else "one variant" for m in comp["method"]])
        comp.insert(0, "decoding", [chosen[m][1] for m in comp["method"]])
        comp.insert(0, "variant", [chosen[m][0] for m in comp["method"]])
        comp.insert(0, "eval", ev)
        comp["points_scale"] = 100.0 / scale_of(column)
        frames.append(comp)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def selection_sentences(choices: dict, left_out: dict, decodings: list) -> list[str]:
    """Where each method's variant and decoding come from, in words (the report names the
    selection set it used)."""
    out = []
    by_set: dict[str, list[str]] = {}
    for m, c in sorted(choices.items()):
        by_set.setdefault(f"`{c['on']}` at seed {c['seed']}", []).append(
            f"`{m}` → `{c['variant']}`" + (f" with `{c['decoding']}`" if c.get("decoding") else ""))
    for where, picks in by_set.items():
        out.append(f"Chosen on the selection set {where} (runs never reported): {', '.join(picks)}; every "
                   "comparison, recommendation and front uses these.")
    if len(decodings) > 1:
        out.append(f"A method with no decoding chosen is compared at the primary decoding `{primary_decoding(decodings)}` "
                   "(the first in the config, fixed before any result).")
    out.extend(left_out[m] for m in sorted(left_out))
    if not choices and not left_out:
        out.append("Every method has one variant: nothing was chosen, on any set.")
    return out


def _mean_forgetting(agg: pd.DataFrame, rows: dict) -> list[float]:
    """Per row of `agg`: its cell's forgetting (analysis.forgetting) averaged over its finished seeds
    (`rows`: (method, variant, seed) -> retention metrics row)."""
    by_cell: dict[tuple, list[float]] = {}
    for (method, variant, _), r in rows.items():
        if not math.isnan(value := forgetting(r)):
            by_cell.setdefault((method, variant), []).append(value)
    return [sum(v) / len(v) if (v := by_cell.get((m, var))) else float("nan")
            for m, var in zip(agg["method"], agg["variant"])]


def retention_note(retained: list) -> str:
    """What the retention columns of the comparison table hold, per set."""
    lines = []
    for ret in retained:
        col = retention_column(ret.name)
        tests = (f"`{col}_p_vs_pretrained`: adjusted p that the method's loss differs from the pretrained model's "
                 f"(did it forget?), {ret.pretrained_test}; `{col}_p_vs_best`: against the best-scoring method (does "
                 f"it forget more?), {ret.pw.test}, adjusted over every pair of methods; per-document paired tests "
                 f"over {int(ret.table['documents'].max())} documents"
                 if ret.tested else "no p-values: 1 − CKA is a statistic of the whole set, with no per-document values "
                 "to pair")
        lines.append(f"- `{col}`: forgetting on retention set `{ret.name}` ({forgetting_unit(ret.measure)}, "
                     f"higher is worse); {tests}. `front_{col}`: the learn-versus-forget front.\n")
    return ("\n" + "".join(lines)) if lines else ""


def _decoding_title(chosen: dict) -> str:
    used = sorted({d for _, d in chosen.values() if d})
    if not used:
        return ""
    if len(used) == 1:
        return f", decoding `{used[0]}`"
    return ", each method at its chosen decoding: " + ", ".join(f"{m} `{d}`" for m, (_, d) in sorted(chosen.items()))


def build_task_report(task: str, summary_path, logs: dict[str, Path], distances: dict[str, pd.DataFrame], task_cfg: dict,
                      report_cfg: dict, out: dict[str, Path], predictions: dict | None = None,
                      choices: dict | None = None, comet: dict | None = None, retention: dict | None = None) -> None:
    """All of one task's report outputs (`out`: name -> path, see rules/report.smk). `choices`:
    tuning.read_choices (method -> variant, decoding, selection set, seed). With `predictions`
    ((method, variant, seed, eval, decoding) -> predictions.jsonl), the paired significance tests:
    columns of the task table, a comparison table, the fronts and the recommendations. `retention`:
    set -> (metrics, documents) of every reported cell (analysis.load_retention): forgetting per cell,
    its tests in the comparison table, the learn-versus-forget figure and a recommendation sentence."""
    choices = choices or {}
    df = load_summary(summary_path)
    df = df[df["task"] == task]  # reported seeds only: the plan never reports a selection-seed run
    metrics = metric_columns(task_cfg["metrics"])
    metric = primary_metric(task_cfg, report_cfg, task)
    from ..metrics import higher_is_better

    higher = higher_is_better(metric)
    ev = primary_eval(task_cfg, report_cfg, task)
    decodings = list(task_cfg.get("decoding") or [])
    baseline = task_cfg.get("baseline")  # the untrained method's name, if the task has one
    agg = aggregate_seeds(df, metrics)
    chosen, left_out = chosen_cells(agg, choices, decodings)
    table = task_table(agg, metrics, metric)
    retained = [Retention(name, rows, documents, chosen, baseline) for name, (rows, documents) in (retention or {}).items()]
    for name, (rows, _) in (retention or {}).items():  # every cell, chosen or not: its mean forgetting over seeds
        table[retention_column(name)] = _mean_forgetting(agg, rows)
    sig = pd.DataFrame()
    if predictions:
        sig = significance(agg, predictions, list(task_cfg["eval"]), chosen, metric, choices=choices, comet=comet,
                           labels=task_cfg.get("labels"), baseline=baseline, retention=retained)
    md_extra = ""
    if not sig.empty and "p_vs_best" in sig:
        keyed = sig.set_index(["method", "variant", "eval", "decoding"])
        keys = list(zip(agg["method"], agg["variant"], agg["eval"], agg["decoding"].astype(str)))
        for col, title in SIG_COLUMNS.items():
            table[title] = [keyed.loc[k, col] if k in keyed.index else float("nan") for k in keys]
        shown = sig.assign(cell=[cell_label(r) for _, r in sig.iterrows()])
        shown = shown[[c for c in COMPARISON_COLUMNS if c in shown and (c != "decoding" or shown[c].astype(bool).any())]
                      + [c for c in shown if c.startswith(("retention_", "front_"))]]
        tests = "; ".join(f"{t}, {int(r):,} resamples" for t, r in
                          sig[["test", "resamples"]].dropna().drop_duplicates().itertuples(index=False))
        md_extra = ("\n#### Paired comparisons: each method at its chosen variant and decoding against the best and "
                    f"against `{baseline}` ({tests}; p-values adjusted over every comparison, the choice "
                    "of the best included; differences are method minus reference, in the metric's units)\n\n"
                    + markdown_table(shown) + retention_note(retained))
    notes = sorted(set(sig.loc[sig["eval"] == ev, "note"].dropna())) if "note" in sig else []
    if notes and "p_vs_best" not in sig:
        md_extra = f"\n#### Paired comparisons\n\nNot made: {'; '.join(notes)}.\n"
    table.to_csv(out["table"], sep="\t", index=False)
    atomic_write_text(out["table_md"], markdown_table(table) + md_extra)

    comp = sig[sig["eval"] == ev] if "p_vs_best" in sig else pd.DataFrame()
    scale = float(comp["points_scale"].iloc[0]) if len(comp) else 1.0
    bullets, words = recommend(task, chosen_rows(agg, chosen, ev), comp, metric, ev, higher_is_better=higher,
                               scale=scale, within_points=report_cfg.get("within_points", 1.0),
                               budget_pct=report_cfg.get("param_budget_pct", 1.0),
                               baseline=baseline, retention=retained,
                               **({"why_no_comparison": "; ".join(notes)} if notes else {}))
    recs = pd.DataFrame(bullets, columns=["recommendation", "cell", "method", "variant", "decoding", metric,
                                          "trainable_params", "trainable_pct", "train_time_s", "peak_train_mem_mb",
                                          "seeds"])
    if not bullets:  # the one line that says why nothing is recommended
        recs = pd.DataFrame({"recommendation": ["nothing recommended"], "statement": [words.pop(0)]})
    words = selection_sentences(choices, left_out, decodings) + words
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
    plots.learn_forget(comp, retained, metric, f"{task}: {metric} on `{ev}` against forgetting{_decoding_title(chosen)}",
                       out["learn_forget"], higher_is_better=higher, baseline=baseline)
    plots.pareto(agg, metric, list(task_cfg["eval"]), f"{task}: {metric} against cost{_decoding_title(chosen)}",
                 out["pareto"], chosen=chosen, sig=sig, higher_is_better=higher, baseline=baseline)
    frames = []
    for label, d in distances.items():  # each cell's rows of the task's weight distances
        if len(d):
            frames.append(d.assign(cell=label))
    plots.distance_bars(pd.concat(frames) if frames else pd.DataFrame(), f"{task}: how far each method moved the weights",
                        out["distances"])
    # a tuned method that is not also swept has one (selected) variant: its grid is in the tuning figure
    tuned_only = {m for m, c in choices.items() if set(agg.loc[agg["method"] == m, "variant"]) == {c["variant"]}}
    primary = primary_decoding(decodings)
    at = f"{ev}, decoding `{primary}`" if primary else ev
    plots.sweep(agg[~agg["method"].isin(tuned_only) & (agg["decoding"].astype(str) == primary)], metric, ev,
                f"{task}: hyperparameter sweeps ({metric} on {at}; every variant, reported seeds)", out["sweep"])


def write_report(tasks: dict[str, dict], report_dir: Path, out_md: Path, report_cfg: dict) -> None:
    report_dir = Path(report_dir)
    parts = ["# peftgrid report\n",
             "Every number below comes from `results/summary.tsv`; each cell trained from the pretrained "
             "weights. Quality is the mean over the reported seeds (± std and a 95% t-interval when there are "
             "several); failed cells are listed with their reason. Variants and decodings are chosen on each "
             "task's selection set, on a seed that is never reported.\n"]
    for task, cfg in tasks.items():
        metric = primary_metric(cfg, report_cfg, task)
        ev = primary_eval(cfg, report_cfg, task)
        parts.append(f"\n## {task}\n")
        recs = pd.read_csv(report_dir / table_file(task, "recommendations", "tsv"), sep="\t")
        parts.append(f"\n### Recommendations ({metric} on `{ev}`)\n\n")
        said = recs[recs["recommendation"].isin(["in words", "nothing recommended"])]
        for _, r in said[said["recommendation"] == "nothing recommended"].iterrows():
            parts.append(f"{r['statement']}\n")
        for _, r in recs.drop(said.index).iterrows():
            parts.append(f"- **{r['recommendation']}**: `{r['cell']}` — {metric} {fmt(r[metric])}, "
                         f"{fmt(r['trainable_params'])} trainable parameters ({fmt(r['trainable_pct'])}%), "
                         f"{fmt(r['train_time_s'])} s training, {fmt(r['peak_train_mem_mb'])} MB peak training memory\n")
        words = said[said["recommendation"] == "in words"]
        if len(words):
            parts.append(f"\n### What the comparisons say ({metric} on `{ev}`)\n\n")
            parts.extend(f"- {w}\n" for w in words["statement"])
        parts.append("\n### All cells\n\n")
        parts.append((report_dir / table_file(task)).read_text())
        tuning = report_dir / table_file(task, "tuning")
        if tuning.is_file():
            parts.append("\n### Tuning: the grid searched and what each point scored on the selection set\n\n")
            parts.append(tuning.read_text())
            parts.append(f"\n![Selection score per grid point]({figure_file(task, TUNING_FIGURE)})\n")
        if cfg.get("transfer"):
            gap = pd.read_csv(report_dir / table_file(task, "transfer", "tsv"), sep="\t")
            parts.append(f"\n### Transfer gap: `{cfg['transfer']['source']}` minus `{cfg['transfer']['target']}`\n\n")
            parts.append(markdown_table(gap))
        qualitative = table_file(task, "qualitative")
        if (report_dir / qualitative).is_file():
            parts.append(f"\nOutputs side by side: [{qualitative}]({qualitative})\n")
            for name, (_, heading, _) in GENERATION_FIGURES.items():
                parts.append(f"\n![{heading}]({figure_file(task, name)})\n")
        for name, (_, heading, _) in TASK_FIGURES.items():
            if name == "learn_forget" and not cfg.get("retention"):
                continue  # the task measures no retention: its figure only says so
            parts.append(f"\n![{heading}]({figure_file(task, name)})\n")
            if name == "pareto":
                parts.append(f"\n*{FRONT_CAPTION}*\n")
            if name == "learn_forget":
                parts.append(f"\n*{LEARN_FORGET_CAPTION}*\n")
    atomic_write_text(out_md, "".join(parts))


def build_generation_report(task: str, predictions: dict[tuple[str, str, str], Path], eval_name: str,
                            out: dict[str, Path], decodings: list[str], n_examples: int = 8) -> None:
    """Qualitative reading for a generation task: the same sources with every cell's output side
    by side (on `eval_name`, at the task's primary decoding), and the sentence BLEU / chrF
    distributions per cell and decoding strategy. `predictions`: (cell, eval, decoding) ->
    predictions.jsonl; `decodings`: the task's, in config order."""
    loaded = {key: read_predictions(path) for key, path in predictions.items()}
    first = primary_decoding(decodings)
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
