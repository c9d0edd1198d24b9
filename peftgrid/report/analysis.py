"""From summary.tsv to what a reader decides with: seed aggregates, Pareto fronts and
recommendations computed from the numbers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

COSTS = {"trainable_params": "trainable parameters", "train_time_s": "training time (s)",
         "peak_train_mem_mb": "peak training memory (MB)"}
COST_COLUMNS = ["trainable_params", "trainable_pct", "train_time_s", "time_per_epoch_s", "peak_train_mem_mb",
                "peak_infer_mem_mb", "infer_throughput"]


def load_summary(path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", keep_default_na=True, dtype={"variant": str, "decoding": str, "error": str})
    df["decoding"] = df["decoding"].fillna("")
    df["error"] = df["error"].fillna("")
    return df


def t_quantile(n: int) -> float:
    """Two-sided 95% Student t quantile for n samples (n-1 degrees of freedom)."""
    if n < 2:
        return float("nan")
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1))


def aggregate_seeds(df: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per (task, method, variant, eval, decoding): mean, std and 95% interval over seeds
    for each metric, mean costs. Failed seeds are counted apart and not averaged in."""
    keys = ["task", "method", "variant", "eval", "decoding"]
    rows = []
    for key, g in df.groupby(keys, sort=True, dropna=False):
        ok = g[g["status"] == "ok"]
        row = dict(zip(keys, key))
        row["seeds"] = len(g)
        row["failed"] = int((g["status"] != "ok").sum())
        row["status"] = "ok" if len(ok) else "failed"
        row["error"] = "; ".join(sorted(set(g.loc[g["status"] != "ok", "error"]))) if row["failed"] else ""
        row["n"] = len(ok)
        for metric in metrics:
            values = pd.to_numeric(ok[metric], errors="coerce").dropna() if metric in ok else pd.Series(dtype=float)
            n = len(values)
            row[metric] = values.mean() if n else float("nan")
            row[f"{metric}_std"] = values.std(ddof=1) if n > 1 else float("nan")
            row[f"{metric}_ci95"] = t_quantile(n) * row[f"{metric}_std"] / math.sqrt(n) if n > 1 else float("nan")
        for col in COST_COLUMNS:
            row[col] = pd.to_numeric(ok[col], errors="coerce").mean() if (col in ok and len(ok)) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def pareto_front(df: pd.DataFrame, quality: str, cost: str) -> pd.Series:
    """True for points no other point beats on both: higher quality and lower (or equal) cost."""
    valid = df[[quality, cost]].notna().all(axis=1)
    front = pd.Series(False, index=df.index)
    order = df[valid].sort_values([cost, quality], ascending=[True, False])
    best = -math.inf
    for idx, r in order.iterrows():
        if r[quality] > best:
            front[idx] = True
            best = r[quality]
    return front


def cell_label(r) -> str:
    return r["method"] if r["variant"] == "default" else f"{r['method']} {r['variant']}"


def recommendations(agg: pd.DataFrame, metric: str, within_points: float, budget_pct: float) -> list[dict]:
    """Best quality; cheapest within `within_points` of it; best under a trainable-parameter
    budget; fastest within `within_points`. Quality is in points (x100 for 0..1 metrics)."""
    ok = agg[(agg["status"] == "ok") & agg[metric].notna() & (agg["method"] != "none")].copy()  # none: a reference
    if ok.empty:
        return []
    scale = 100.0 if ok[metric].abs().max() <= 1.0 else 1.0
    ok["points"] = ok[metric] * scale
    best = ok.loc[ok["points"].idxmax()]
    near = ok[ok["points"] >= best["points"] - within_points]
    under = ok[ok["trainable_pct"] <= budget_pct]
    recs = [("best quality", best)]
    recs.append((f"fewest trainable parameters within {within_points:g} point(s) of the best",
                 near.loc[near["trainable_params"].idxmin()]))
    if not under.empty:
        recs.append((f"best quality with at most {budget_pct:g}% trainable parameters", under.loc[under["points"].idxmax()]))
    timed = near[near["train_time_s"].notna()]
    if not timed.empty:
        recs.append((f"fastest to train within {within_points:g} point(s) of the best", timed.loc[timed["train_time_s"].idxmin()]))
    out = []
    for what, r in recs:
        out.append({"recommendation": what, "cell": cell_label(r), "method": r["method"], "variant": r["variant"],
                    metric: r[metric], "trainable_params": r["trainable_params"], "trainable_pct": r["trainable_pct"],
                    "train_time_s": r["train_time_s"], "peak_train_mem_mb": r["peak_train_mem_mb"], "seeds": r["n"]})
    return out


def primary_eval(task_cfg: dict, report_cfg: dict, task: str) -> str:
    chosen = report_cfg.get("eval_set", {}).get(task)
    if chosen:
        return chosen
    return "test" if "test" in task_cfg["eval"] else next(iter(task_cfg["eval"]))


def metric_columns(metrics: list[str]) -> list[str]:
    """The summary columns the task's metrics fill (rouge -> rouge1, rouge2, rougeL, rougeLsum)."""
    from ..metrics import METRICS

    return [c for m in metrics for c in (METRICS[m].outputs if m in METRICS else (m,))]


def primary_metric(task_cfg: dict, report_cfg: dict, task: str) -> str:
    """The summary column that ranks the task's cells."""
    name = report_cfg.get("quality_metric", {}).get(task) or task_cfg["metrics"][0]
    from ..metrics import main_column

    return main_column(name)


def seed_label(cell: dict) -> str:
    """One run's label: method, variant (unless default) and seed."""
    return f"{cell_label(cell)} {cell['seed']}"


# ------------------------------------------------------------------------ paired significance
# Per-example scores come from each cell's predictions.jsonl; rows of every file of one task and
# eval set are the same examples in the same order, so systems are paired by line index.
ALPHA = 0.05
PER_SENTENCE = {"comet": "comet", "sentence_bleu": "sentence_bleu", "rouge": "rougeL", "rouge1": "rouge1", "rouge2": "rouge2",
                "rougeL": "rougeL", "rougeLsum": "rougeLsum"}


def read_predictions(path, comet: list[float] | None = None) -> list[dict]:
    """A predictions.jsonl as dicts; `comet` (the file's segment scores from the task's COMET job,
    line-aligned) is attached to each line as its `comet` score."""
    import json
    from pathlib import Path

    text = Path(path).read_text(encoding="utf-8") if Path(path).is_file() else ""
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    if comet is not None and len(comet) == len(lines):
        for line, score in zip(lines, comet):
            line["comet"] = score
    return lines


def comet_segment_scores(examples_tsv) -> dict[tuple, list[float]]:
    """(method, variant, seed, eval, decoding) -> segment scores in line order, from
    results/comet/<task>/examples.tsv."""
    from ..records import read_tsv

    out: dict[tuple, list[tuple[int, float]]] = {}
    for r in read_tsv(examples_tsv):
        if r["comet"] in ("", "nan", "None"):
            continue
        key = (r["method"], r["variant"], int(r["seed"]), r["eval"], r["decoding"])
        out.setdefault(key, []).append((int(r["example"]), float(r["comet"])))
    return {k: [score for _, score in sorted(v)] for k, v in out.items()}


def _label_units(line: dict) -> tuple[list, list]:
    """(gold, predicted) label strings of one example: one for classification, one per word for
    token tasks (a "_" / missing prediction never equals a gold tag)."""
    if "tags" in line:
        preds = list(line.get("predictions") or [])
        preds += [None] * (len(line["tags"]) - len(preds))
        return [str(t) for t in line["tags"]], [None if p in (None, "_") else str(p) for p in preds]
    return [str(line["label"])], [str(line["prediction"])]


class Scorer:
    """How one metric is resampled: `values(lines)` -> per-example array of one seed; `gold`
    (or None) and `fn` are paired_bootstrap's `gold` and `metric_fn`."""

    def __init__(self, metric: str, runs: list[list[dict]]):
        from . import significance as sig

        self.metric, self.gold, self.fn, self.sacrebleu = metric, None, None, False
        first = runs[0][0]
        if metric in ("bleu", "chrf"):
            self.sacrebleu = True
            self.refs = [line["references"] for line in runs[0]]
            self.fn = sig.sacrebleu_score_fn(metric)
            self.values = lambda lines: sig.sacrebleu_stats([x["hypothesis"] for x in lines], self.refs, metric)
        elif "hypothesis" in first:
            key = PER_SENTENCE.get(metric)
            if key is None or key not in first:
                raise KeyError(f"no per-example {metric!r} in the predictions")
            self.values = lambda lines: np.array([float(x[key]) for x in lines])
        elif metric == "accuracy" and "correct" in first:
            self.values = lambda lines: np.array([float(x["correct"]) for x in lines])
        else:
            from ..metrics.classification import classification_metrics

            units = [_label_units(x) for lines in runs for x in lines]
            vocab = sorted({u for g, p in units for u in g + p if u is not None})
            ids = {name: i for i, name in enumerate(vocab)}
            n_labels = len(vocab)
            single = all(len(_label_units(x)[0]) == 1 for x in runs[0])

            def encode(labels):
                return [ids.get(u, n_labels) if u is not None else n_labels for u in labels]

            def column(lines, which):
                rows = [encode(_label_units(x)[which]) for x in lines]
                if single:
                    return np.array([r[0] for r in rows])
                out = np.empty(len(rows), dtype=object)
                out[:] = [np.array(r, dtype=np.int64) for r in rows]
                return out

            self.gold = column(runs[0], 0)
            self.values = lambda lines: column(lines, 1)

            def fn(gold, pred):
                if not single:
                    gold, pred = np.concatenate(list(gold)), np.concatenate(list(pred))
                return classification_metrics(gold, pred, n_labels, [metric])[metric]

            self.fn = fn

    def stack(self, lines_per_seed: list[list[dict]]) -> np.ndarray:
        return np.stack([self.values(lines) for lines in lines_per_seed])


def choose_variants(agg: pd.DataFrame, metric: str, selection_eval: str, decoding: str = "") -> dict[str, str]:
    """method -> its variant with the best mean `metric` on `selection_eval` (finished cells)."""
    sel = agg[(agg["eval"] == selection_eval) & (agg["status"] == "ok") & agg[metric].notna()]
    if "decoding" in sel and decoding:
        sel = sel[sel["decoding"] == decoding]
    return {m: g.loc[g[metric].idxmax(), "variant"] for m, g in sel.groupby("method")}


def compare_methods(systems: dict[str, list[list[dict]]], metric: str, n: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Each system (method -> predictions per seed) against the best trained one, by a paired
    bootstrap (BLEU/chrF with one seed each: sacrebleu's own paired bootstrap), Holm-adjusted over
    the comparisons; and each trained system against the untrained baseline `none` (if there),
    Holm-adjusted over those. Score differences are system minus best, in the metric's units."""
    from . import significance as sig

    systems = {k: [r for r in v if r] for k, v in systems.items()}
    systems = {k: v for k, v in systems.items() if v}
    lengths = {len(r) for v in systems.values() for r in v}
    columns = ["method", "seeds", "score", "ci_low", "ci_high", "best", "diff_vs_best", "diff_ci_low",
               "diff_ci_high", "p_vs_best", "p_vs_best_holm", "not_worse_than_best", "diff_vs_none", "p_vs_none_holm"]
    if not systems or len(lengths) != 1:
        return pd.DataFrame(columns=columns)
    scorer, data, kw, compare = _paired_test(systems, metric, n, seed)
    rows = {}
    for k, a in data.items():
        score, low, high = sig.bootstrap_ci(a, **kw)
        rows[k] = {"method": k, "seeds": len(a), "score": score, "ci_low": low, "ci_high": high}
    trained = [k for k in data if k != "none"]
    if not trained:
        return pd.DataFrame(list(rows.values()), columns=columns)
    best = max(trained, key=lambda k: rows[k]["score"])
    others = [k for k in data if k != best]
    vs_best = {k: compare(k, best) for k in others}
    adjusted = dict(zip(others, sig.holm([vs_best[k].p for k in others])))
    rows[best].update(best=True, diff_vs_best=0.0, p_vs_best=1.0, p_vs_best_holm=1.0, not_worse_than_best=True)
    for k in others:
        c = vs_best[k]
        rows[k].update(best=False, diff_vs_best=c.diff, diff_ci_low=c.ci_low, diff_ci_high=c.ci_high, p_vs_best=c.p,
                       p_vs_best_holm=adjusted[k], not_worse_than_best=bool(adjusted[k] >= ALPHA))
    if "none" in data:
        vs_none = {k: compare(k, "none") for k in trained}
        adj = dict(zip(trained, sig.holm([vs_none[k].p for k in trained])))
        for k in trained:
            rows[k].update(diff_vs_none=vs_none[k].diff, p_vs_none_holm=adj[k])
    return pd.DataFrame(list(rows.values()), columns=columns)


def _paired_test(systems: dict[str, list[list[dict]]], metric: str, n: int, seed: int):
    """(scorer, per-system score arrays, bootstrap keywords, compare(x, y) -> Comparison of x - y)."""
    from . import significance as sig

    scorer = Scorer(metric, [r for v in systems.values() for r in v])
    data = {k: scorer.stack(v) for k, v in systems.items()}
    kw = dict(metric_fn=scorer.fn, gold=scorer.gold, n=n, seed=seed)

    def compare(x, y):
        if scorer.sacrebleu and len(systems[x]) == 1 and len(systems[y]) == 1:
            hyp = [[line["hypothesis"] for line in systems[k][0]] for k in (x, y)]
            return sig.sacrebleu_paired(hyp[0], hyp[1], scorer.refs, metric=metric, n=n)
        return sig.paired_bootstrap(data[x], data[y], **kw)

    return scorer, data, kw, compare


def better_pairs(systems: dict[str, list[list[dict]]], metric: str, n: int = 1000, seed: int = 0) -> dict:
    """(a, b) -> Holm-adjusted p that a scores higher than b, for every pair of trained systems
    (a is the one with the higher observed score); Holm runs over all the pairs of one eval set."""
    from . import significance as sig

    systems = {k: [r for r in v if r] for k, v in systems.items() if k != "none"}
    systems = {k: v for k, v in systems.items() if v}
    if len(systems) < 2 or len({len(r) for v in systems.values() for r in v}) != 1:
        return {}
    _, _, _, compare = _paired_test(systems, metric, n, seed)
    tests = {}
    names = sorted(systems)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            c = compare(x, y)
            tests[(x, y) if c.diff >= 0 else (y, x)] = c.p
    return dict(zip(tests, sig.holm(list(tests.values()))))


def significant_front(points: pd.DataFrame, cost: str, pairs: dict) -> pd.Series:
    """True for each method (row: method, `cost`) that no other method beats significantly
    (`pairs`: better_pairs) at the same or a lower cost. A method beaten on the mean but not
    significantly stays on the front: the data cannot tell the two apart."""
    front = pd.Series(True, index=points.index)
    for i, b in points.iterrows():
        for _, a in points.iterrows():
            if a["method"] == b["method"] or not (a[cost] <= b[cost]):
                continue
            if pairs.get((a["method"], b["method"]), 1.0) < ALPHA:
                front[i] = False
                break
    return front


def _pct(part, whole) -> str:
    if part is None or whole is None or not (whole > 0) or math.isnan(part):
        return "?"
    share = 100.0 * part / whole
    return f"{share:.2g}%" if share < 10 else f"{share:.0f}%"


def significance_statements(task: str, comp: pd.DataFrame, costs: pd.DataFrame, metric: str, eval_name: str,
                            chosen_on: str, scale: float = 1.0) -> list[str]:
    """Recommendations in words with their evidence. `costs`: one row per method (its chosen
    variant) with variant, trainable_params, peak_train_mem_mb. `scale`: 100 for 0-1 metrics
    (differences read as points). The untrained baseline is a reference, never recommended."""
    if comp.empty or not comp["best"].fillna(False).any():
        return [f"No paired comparison on `{eval_name}`: no finished trained method with per-example predictions."]
    costs = costs.set_index("method")

    def name(m):
        v = costs.loc[m, "variant"] if m in costs.index else "default"
        return m if v == "default" else f"{m} {v}"

    def cost(m, col):
        return costs.loc[m, col] if m in costs.index else float("nan")

    out = []
    trained = comp[comp["method"] != "none"]
    if "none" in set(comp["method"]):
        beat = trained[(trained["p_vs_none_holm"] < ALPHA) & (trained["diff_vs_none"] > 0)]
        if beat.empty:
            base = comp[comp["method"] == "none"].iloc[0]
            return [f"No method beat the untrained baseline on {task} ({metric} on `{eval_name}`: `none` scores "
                    f"{base['score'] * scale:.3g}; no trained method is significantly better after Holm correction, "
                    f"p >= {ALPHA}). Nothing is recommended."]
    best = comp[comp["best"].fillna(False)].iloc[0]
    out.append(f"Best on `{eval_name}`: `{name(best['method'])}` with {metric} {best['score'] * scale:.3g} "
               f"(95% CI {best['ci_low'] * scale:.3g} to {best['ci_high'] * scale:.3g}, {int(best['seeds'])} seed(s)); "
               f"variants chosen on `{chosen_on}`"
               + ("" if chosen_on != eval_name else " (the reported set itself: no separate selection set)") + ".")
    unit = "points" if scale != 1.0 or metric in ("bleu", "chrf") else ""
    for _, r in trained[~trained["best"].fillna(False)].sort_values("score", ascending=False).iterrows():
        d = -r["diff_vs_best"] * scale
        lo, hi = r["diff_ci_low"] * scale, r["diff_ci_high"] * scale
        verdict = "is within" if r["not_worse_than_best"] else "is significantly worse than"
        out.append(f"`{name(r['method'])}` {verdict} {abs(d):.2g} {unit} of `{name(best['method'])}` ".replace("  ", " ")
                   + f"(difference 95% CI {lo:+.2g} to {hi:+.2g}, p = {r['p_vs_best_holm']:.2g} Holm-adjusted) "
                   f"with {_pct(cost(r['method'], 'trainable_params'), cost(best['method'], 'trainable_params'))} of its "
                   f"trainable parameters and {_pct(cost(r['method'], 'peak_train_mem_mb'), cost(best['method'], 'peak_train_mem_mb'))}"
                   " of its training memory.")
    return out
