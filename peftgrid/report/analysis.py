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
    """How one metric scores a run from its predictions.jsonl lines: `values(lines)` -> the run's
    per-example array, and `score` (a significance.RunScore) -> the run's score from those values on
    any set of examples. BLEU / chrF: per-sentence sufficient statistics, the corpus score of their
    sum; sentence scores, COMET, 0/1 correctness: their mean; label metrics (F1, MCC): from gold and
    predicted label ids. `labels`: the task's label order (run.json `labels`), which binary F1 /
    precision / recall need to know the positive label (metrics.classification.POSITIVE_LABEL)."""

    def __init__(self, metric: str, runs: list[list[dict]], labels: list[str] | None = None):
        from . import significance as sig

        self.metric = metric
        first = runs[0][0]
        if metric in ("bleu", "chrf"):
            refs = [line["references"] for line in runs[0]]
            self.score = sig.RunScore(sig.sacrebleu_score_fn(metric))
            self.values = lambda lines: sig.sacrebleu_stats([x["hypothesis"] for x in lines], refs, metric)
        elif "hypothesis" in first:
            key = PER_SENTENCE.get(metric)
            if key is None or key not in first:
                raise KeyError(f"no per-example {metric!r} in the predictions")
            self.score = sig.RunScore()
            self.values = lambda lines: np.array([float(x[key]) for x in lines])
        elif metric == "accuracy" and "correct" in first:
            self.score = sig.RunScore()
            self.values = lambda lines: np.array([float(x["correct"]) for x in lines])
        else:
            self._labels(metric, runs, labels)

    def _labels(self, metric: str, runs: list[list[dict]], labels: list[str] | None) -> None:
        from . import significance as sig
        from ..metrics.classification import POSITIVE_LABEL, classification_metrics

        units = [_label_units(x) for lines in runs for x in lines]
        seen = sorted({u for g, p in units for u in g + p if u is not None} - set(labels or []))
        vocab = list(labels or []) + seen  # the task's order first: label id i is the job's id i
        if metric in ("f1", "precision", "recall") and len(vocab) == 2 and not labels:
            raise KeyError(f"binary {metric!r} scores the label with id {POSITIVE_LABEL} in the task's label order; "
                           "pass the task's labels (run.json `labels`) to compare it")
        ids = {name: i for i, name in enumerate(vocab)}
        n_labels = len(vocab)
        single = all(len(_label_units(x)[0]) == 1 for x in runs[0])

        def encode(names):
            return [ids.get(u, n_labels) if u is not None else n_labels for u in names]

        def column(lines, which):
            rows = [encode(_label_units(x)[which]) for x in lines]
            if single:
                return np.array([r[0] for r in rows])
            out = np.empty(len(rows), dtype=object)
            out[:] = [np.array(r, dtype=np.int64) for r in rows]
            return out

        def fn(gold, pred):
            if not single:
                gold, pred = np.concatenate(list(gold)), np.concatenate(list(pred))
            return classification_metrics(gold, pred, n_labels, [metric])[metric]

        self.score = sig.RunScore(fn, gold=column(runs[0], 0))
        self.values = lambda lines: column(lines, 1)

    def stack(self, lines_per_seed: list[list[dict]]) -> np.ndarray:
        return np.stack([self.values(lines) for lines in lines_per_seed])


def choose_variants(agg: pd.DataFrame, metric: str, selection_eval: str, decoding: str = "") -> dict[str, str]:
    """method -> its variant with the best mean `metric` on `selection_eval` (finished cells)."""
    sel = agg[(agg["eval"] == selection_eval) & (agg["status"] == "ok") & agg[metric].notna()]
    if "decoding" in sel and decoding:
        sel = sel[sel["decoding"] == decoding]
    return {m: g.loc[g[metric].idxmax(), "variant"] for m, g in sel.groupby("method")}


COMPARISON = ["method", "seeds", "examples", "score", "ci_low", "ci_high", "best", "diff_vs_best", "diff_ci_low",
              "diff_ci_high", "p_vs_best", "worse_than_best", "diff_vs_none", "none_ci_low", "none_ci_high", "p_vs_none",
              "better_than_none", "unit", "test", "resamples", "higher_is_better"]


def compare_methods(systems: dict[str, list[list[dict]]], metric: str, n: int = 1000, seed: int = 0,
                    higher_is_better: bool | None = None, labels: list[str] | None = None) -> pd.DataFrame:
    """One row per system (method -> its runs' predictions, one list of lines per seed; `none` is
    the untrained reference), columns COMPARISON: its score (mean over seeds) with a 95% interval;
    `best`: the trained system with the best observed score (in the metric's direction,
    `higher_is_better`, by default the registry's); `diff_vs_best` / `diff_vs_none`: system minus
    reference, in the metric's units (read the sign with `higher_is_better`), with simultaneous 95%
    intervals and p-values adjusted over every pair of the systems given, so the family-wise error
    covers the choice of the best too (significance.compare); `worse_than_best` / `better_than_none`:
    significant at ALPHA. `unit` "methods": every system has two or more seeds and the test is at
    the seed level; "runs": some system has one seed, and the verdicts are about these runs (another
    seed may differ by as much). `labels`: the task's label order (see Scorer)."""
    higher = _direction(metric, higher_is_better)
    pw = _paired_test(systems, metric, n, seed, labels)
    if pw is None:
        return pd.DataFrame(columns=COMPARISON)
    rows = {k: {"method": k, "seeds": pw.seeds[i], "examples": pw.examples, "score": pw.scores[i],
                "ci_low": pw.score_ci[i, 0], "ci_high": pw.score_ci[i, 1], "best": False, "unit": pw.unit,
                "test": pw.test, "resamples": pw.resamples, "higher_is_better": higher}
            for i, k in enumerate(pw.names)}
    trained = [i for i, k in enumerate(pw.names) if k != "none"]
    if trained:
        b = max(trained, key=lambda i: pw.scores[i] if higher else -pw.scores[i])
        rows[pw.names[b]]["best"] = True
        for i, k in enumerate(pw.names):
            rows[k].update(_versus(pw, i, b, "diff_vs_best", "diff_ci", "p_vs_best"),
                           worse_than_best=_significantly_better(pw, b, i, higher))
    if "none" in pw.names:
        z = pw.index("none")
        for i in trained:
            rows[pw.names[i]].update(_versus(pw, i, z, "diff_vs_none", "none_ci", "p_vs_none"),
                                     better_than_none=_significantly_better(pw, i, z, higher))
    frame = pd.DataFrame(list(rows.values()), columns=COMPARISON)
    # the old names, until the report's tables and sentences read the new ones
    return frame.assign(p_vs_best_holm=frame["p_vs_best"].fillna(1.0), p_vs_none_holm=frame["p_vs_none"],
                        not_worse_than_best=~frame["worse_than_best"].fillna(False).astype(bool))


def _versus(pw, i: int, ref: int, diff: str, ci: str, p: str) -> dict:
    """System i against system `ref`: the difference, its simultaneous interval and adjusted p
    (the reference against itself: a difference of 0 and nothing to test)."""
    if i == ref:
        return {diff: 0.0, f"{ci}_low": np.nan, f"{ci}_high": np.nan, p: np.nan}
    return {diff: pw.diff[i, ref], f"{ci}_low": pw.diff_ci[i, ref, 0], f"{ci}_high": pw.diff_ci[i, ref, 1],
            p: pw.p[i, ref]}


def _significantly_better(pw, i: int, j: int, higher: bool) -> bool:
    ahead = pw.diff[i, j] > 0 if higher else pw.diff[i, j] < 0
    return bool(ahead and pw.significant[i, j])


def _direction(metric: str, higher_is_better: bool | None) -> bool:
    from ..metrics import higher_is_better as registry

    return registry(metric) if higher_is_better is None else higher_is_better


def _paired_test(systems: dict[str, list[list[dict]]], metric: str, n: int, seed: int, labels=None):
    """significance.compare of the systems with runs (None when there is nothing to compare, or
    the runs do not have the same number of examples)."""
    from . import significance as sig

    systems = {k: [r for r in v if r] for k, v in systems.items()}
    systems = {k: v for k, v in systems.items() if v}
    if not systems or len({len(r) for v in systems.values() for r in v}) != 1:
        return None
    scorer = Scorer(metric, [r for v in systems.values() for r in v], labels)
    return sig.compare({k: scorer.stack(v) for k, v in systems.items()}, scorer.score, n, seed)


def better_pairs(systems: dict[str, list[list[dict]]], metric: str, n: int = 1000, seed: int = 0,
                 higher_is_better: bool | None = None, labels: list[str] | None = None) -> dict:
    """(a, b) -> adjusted p that a is better than b, for every pair of the systems given (a: the one
    better on the observed score, in the metric's direction; a tie: the first name in order). The
    family is the same as compare_methods' (every pair of the same systems), so fronts and verdicts
    agree."""
    higher = _direction(metric, higher_is_better)
    pw = _paired_test(systems, metric, n, seed, labels)
    if pw is None or len(pw.names) < 2:
        return {}
    out = {}
    names = sorted(pw.names)
    for x_pos, x in enumerate(names):
        for y in names[x_pos + 1:]:
            i, j = pw.index(x), pw.index(y)
            worse = pw.diff[i, j] < 0 if higher else pw.diff[i, j] > 0
            out[(y, x) if worse else (x, y)] = float(pw.p[i, j])
    return out


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
