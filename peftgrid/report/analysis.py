"""From summary.tsv to what a reader decides with: seed aggregates, Pareto fronts and
recommendations computed from the numbers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import columns
from ..columns import FAILED, OK
from ..plan.retention import LOSS_MEASURES
from ..plan.report_targets import primary_decoding, primary_eval, primary_metric  # noqa: F401  (one home)
from .significance import ALPHA, RESAMPLE_SEED, RESAMPLES, seed_mean_half_width

COSTS = {"trainable_params": "trainable parameters", "train_time_s": "training time (s)",
         "peak_train_mem_mb": "peak training memory (MB)"}
COST_COLUMNS = [c for c in columns.COSTS if c != "total_params"]  # a task table shows the trainable share, not the size


def load_summary(path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", keep_default_na=True, dtype={"variant": str, "decoding": str, "error": str})
    df["decoding"] = df["decoding"].fillna("")
    df["error"] = df["error"].fillna("")
    return df


def aggregate_seeds(df: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per (task, method, variant, eval, decoding): mean, std and 95% interval over seeds
    for each metric, mean costs. Failed seeds are counted apart and not averaged in."""
    keys = [c for c in columns.ROW if c != "seed"]
    rows = []
    for key, g in df.groupby(keys, sort=True, dropna=False):
        ok = g[g["status"] == OK]
        row = dict(zip(keys, key))
        row["seeds"] = len(g)
        row["failed"] = int((g["status"] != OK).sum())
        row["status"] = OK if len(ok) else FAILED
        row["error"] = "; ".join(sorted(set(g.loc[g["status"] != OK, "error"]))) if row["failed"] else ""
        row["n"] = len(ok)
        for metric in metrics:
            values = pd.to_numeric(ok[metric], errors="coerce").dropna() if metric in ok else pd.Series(dtype=float)
            n = len(values)
            row[metric] = values.mean() if n else float("nan")
            row[f"{metric}_std"] = values.std(ddof=1) if n > 1 else float("nan")
            row[f"{metric}_ci95"] = seed_mean_half_width(values)
        for col in COST_COLUMNS:
            row[col] = pd.to_numeric(ok[col], errors="coerce").mean() if (col in ok and len(ok)) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def pareto_front(df: pd.DataFrame, quality: str, cost: str, higher_is_better: bool = True) -> pd.Series:
    """The plain front of the means: True for points no other point beats on both, better quality
    at a lower (or equal) cost."""
    valid = df[[quality, cost]].notna().all(axis=1)
    front = pd.Series(False, index=df.index)
    order = df[valid].sort_values([cost, quality], ascending=[True, not higher_is_better])
    sign = 1.0 if higher_is_better else -1.0
    best = -math.inf
    for idx, r in order.iterrows():
        if sign * r[quality] > best:
            front[idx] = True
            best = sign * r[quality]
    return front


def cell_label(r) -> str:
    return r["method"] if r["variant"] == "default" else f"{r['method']} {r['variant']}"


def chosen_cells(agg: pd.DataFrame, choices: dict, decodings) -> tuple[dict, dict]:
    """Where each method enters comparisons, recommendations and fronts (the selection contract):
    method -> (variant, decoding): its choice on the selection set (`choices`: tuning.read_choices),
    else its only variant at the primary decoding; and method -> why it is left out (several
    variants and no choice: picking one on the reported set would flatter it)."""
    primary = primary_decoding(decodings)
    chosen, left_out = {}, {}
    for method, g in agg.groupby("method", sort=True):
        variants = sorted(set(g["variant"]))
        if method in choices:
            chosen[method] = (choices[method]["variant"], choices[method].get("decoding") or primary)
        elif len(variants) == 1:
            chosen[method] = (variants[0], primary)
        else:
            left_out[method] = (f"`{method}` has {len(variants)} variants and no choice made on a selection set: "
                                "it is left out of the comparisons, recommendations and fronts (the sweep figure "
                                "shows every variant).")
    return chosen, left_out


def chosen_rows(agg: pd.DataFrame, chosen: dict, ev: str) -> pd.DataFrame:
    """The finished rows of `agg` on `ev` at each method's chosen (variant, decoding)."""
    keys = {(m, v, d) for m, (v, d) in chosen.items()}
    at = [(m, v, str(d)) in keys for m, v, d in zip(agg["method"], agg["variant"], agg["decoding"].fillna(""))]
    return agg[(agg["eval"] == ev) & (agg["status"] == OK) & pd.Series(at, index=agg.index)]


def metric_columns(metrics: list[str]) -> list[str]:
    """The summary columns the task's metrics fill (rouge -> rouge1, rouge2, rougeL, rougeLsum)."""
    from ..metrics import METRICS

    return [c for m in metrics for c in (METRICS[m].outputs if m in METRICS else (m,))]




def seed_label(cell: dict) -> str:
    """One run's label: method, variant (unless default) and seed."""
    return f"{cell_label(cell)} {cell['seed']}"


# ------------------------------------------------------------------------ paired significance
# Per-example scores come from each cell's predictions.jsonl; rows of every file of one task and
# eval set are the same examples in the same order, so systems are paired by line index.


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
        from ..metrics import metric_kind, per_example_key

        self.metric = metric
        first = runs[0][0]
        if metric in ("bleu", "chrf"):
            refs = [line["references"] for line in runs[0]]
            self.score = sig.RunScore(sig.sacrebleu_score_fn(metric))
            self.values = lambda lines: sig.sacrebleu_stats([x["hypothesis"] for x in lines], refs, metric)
        elif (key := per_example_key(metric)) is not None and key in first:
            self.score = sig.RunScore()
            self.values = lambda lines: np.array([float(x[key]) for x in lines])
        elif "hypothesis" in first:
            raise KeyError(f"no per-example {metric!r} in the predictions")
        elif metric_kind(metric) not in (None, "label"):  # a plugin's kind of task: its own function
            self._registered(metric, runs)
        else:
            self._labels(metric, runs, labels)

    def _registered(self, metric: str, runs: list[list[dict]]) -> None:
        """A registered metric of a task type's own kind (regression: Pearson), re-scored by its
        function from each line's `label` (gold) and `prediction` (peftgrid.metrics.register)."""
        from . import significance as sig
        from ..metrics import COMPUTE

        if metric not in COMPUTE:
            raise KeyError(f"no way to re-score {metric!r} from the predictions")

        def numbers(lines, key):
            return np.array([float(x[key]) for x in lines])

        self.score = sig.RunScore(lambda gold, pred: COMPUTE[metric](gold=gold, pred=pred)[0], gold=numbers(runs[0], "label"))
        self.values = lambda lines: numbers(lines, "prediction")

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


COMPARISON = ["method", "seeds", "examples", "score", "ci_low", "ci_high", "best", "diff_vs_best", "diff_ci_low",
              "diff_ci_high", "p_vs_best", "worse_than_best", "diff_vs_none", "none_ci_low", "none_ci_high", "p_vs_none",
              "better_than_none", "unit", "test", "resamples", "higher_is_better"]


def compare_methods(systems: dict[str, list[list[dict]]], metric: str, n: int = RESAMPLES, seed: int = RESAMPLE_SEED,
                    higher_is_better: bool | None = None, labels: list[str] | None = None,
                    baseline: str | None = None, pw=None) -> pd.DataFrame:
    """One row per system (method -> its runs' predictions, one list of lines per seed; `baseline`:
    the untrained reference's name, its columns named `none`), columns COMPARISON: its score (mean over seeds) with a 95% interval;
    `best`: the trained system with the best observed score (in the metric's direction,
    `higher_is_better`, by default the registry's); `diff_vs_best` / `diff_vs_none`: system minus
    reference, in the metric's units (read the sign with `higher_is_better`), with simultaneous 95%
    intervals and p-values adjusted over every pair of the systems given, so the family-wise error
    covers the choice of the best too (significance.compare); `worse_than_best` / `better_than_none`:
    significant at ALPHA. `unit`, per system (significance.UNITS): "methods": the test is at the seed
    level and the system's own seeds give its spread; "methods, pooled spread": it ran one seed, and
    the seed-level test gives it the other systems' pooled seed spread; "runs": every system has one
    seed, and the verdicts are about these runs (another seed may differ by as much). `labels`: the
    task's label order (see Scorer)."""
    higher = _direction(metric, higher_is_better)
    pw = paired_test(systems, metric, n, seed, labels) if pw is None else pw
    if pw is None:
        return pd.DataFrame(columns=COMPARISON)
    rows = {k: {"method": k, "seeds": pw.seeds[i], "examples": pw.examples, "score": pw.scores[i],
                "ci_low": pw.score_ci[i, 0], "ci_high": pw.score_ci[i, 1], "best": False, "unit": pw.units[i],
                "test": pw.test, "resamples": pw.resamples, "higher_is_better": higher}
            for i, k in enumerate(pw.names)}
    trained = [i for i, k in enumerate(pw.names) if k != baseline]
    if trained:
        b = max(trained, key=lambda i: pw.scores[i] if higher else -pw.scores[i])
        rows[pw.names[b]]["best"] = True
        for i, k in enumerate(pw.names):
            rows[k].update(_versus(pw, i, b, "diff_vs_best", "diff_ci", "p_vs_best"),
                           worse_than_best=_significantly_better(pw, b, i, higher))
    if baseline in pw.names:
        z = pw.index(baseline)
        for i in trained:
            rows[pw.names[i]].update(_versus(pw, i, z, "diff_vs_none", "none_ci", "p_vs_none"),
                                     better_than_none=_significantly_better(pw, i, z, higher))
    return pd.DataFrame(list(rows.values()), columns=COMPARISON)


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


def paired_test(systems: dict[str, list[list[dict]]], metric: str, n: int = RESAMPLES, seed: int = RESAMPLE_SEED, labels=None):
    """significance.compare of the systems with runs (None when there is nothing to compare, or
    the runs do not have the same number of examples). compare_methods and better_pairs read one
    such result when given it (`pw`), so a report computes the tests once."""
    from . import significance as sig

    systems = {k: [r for r in v if r] for k, v in systems.items()}
    systems = {k: v for k, v in systems.items() if v}
    if not systems or len({len(r) for v in systems.values() for r in v}) != 1:
        return None
    scorer = Scorer(metric, [r for v in systems.values() for r in v], labels)
    return sig.compare({k: scorer.stack(v) for k, v in systems.items()}, scorer.score, n, seed)


def better_pairs(systems: dict[str, list[list[dict]]], metric: str, n: int = RESAMPLES, seed: int = RESAMPLE_SEED,
                 higher_is_better: bool | None = None, labels: list[str] | None = None, pw=None) -> dict:
    """(a, b) -> adjusted p that a is better than b, for every pair of the systems given (a: the one
    better on the observed score, in the metric's direction; a tie: the first name in order). The
    family is the same as compare_methods' (every pair of the same systems), so fronts and verdicts
    agree."""
    higher = _direction(metric, higher_is_better)
    pw = paired_test(systems, metric, n, seed, labels) if pw is None else pw
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


# ------------------------------------------------------------------------ fronts and verdicts
FRONT = "front"
FRONT_CAPTION = ("Red: the front. From the cheapest method upwards, a costlier method joins it only when it scores "
                 "better, significantly (paired test, adjusted over all pairs), than the last method on it; so each "
                 "step along the red line buys a gain the data can show. Dashed grey: the plain front of the means "
                 "(no method at most as costly scores better on the mean). With one seed per method, every one of "
                 "these tests compares the runs, not the methods; with more seeds, all compare methods.")


def significant_front(points: pd.DataFrame, cost: str, pairs: dict, higher_is_better: bool = True) -> pd.Series:
    """Each method's place against the front of `cost` (rows: method, score, `cost`; `pairs`:
    better_pairs, (a, b) -> adjusted p that a is better than b), see FRONT_CAPTION:
    "front"; "dominated by `x` (significantly | not significantly)" when a method at most as costly
    scores at least as well on the mean (off the plain front too); "no significant gain over `x`"
    when it beats the last front method `x` on the mean only."""
    order = points.sort_values([cost, "score"], ascending=[True, not higher_is_better])
    status = pd.Series("", index=points.index, dtype=object)
    best = top = None  # the best mean so far (at most this cost) and the last method on the front
    for i, r in order.iterrows():
        if best is not None and not _beats(r["score"], best["score"], higher_is_better):
            how = "significantly" if pairs.get((best["method"], r["method"]), 1.0) < ALPHA else "not significantly"
            status[i] = f"dominated by `{best['method']}` ({how})"
            continue
        best = r
        if top is None or pairs.get((r["method"], top["method"]), 1.0) < ALPHA:
            status[i], top = FRONT, r
        else:
            status[i] = f"no significant gain over `{top['method']}`"
    return status


def _beats(a: float, b: float, higher_is_better: bool) -> bool:
    return a > b if higher_is_better else a < b


def _share(part, whole, what: str) -> str:
    """'0.3% of its trainable parameters', or '128x its ...' when `part` is more than twice `whole`."""
    if part is None or whole is None or not (whole > 0) or math.isnan(part):
        return f"? of its {what}"
    share = 100.0 * part / whole
    if share > 200:
        return f"{share / 100:.3g}× its {what}"
    return f"{share:.2g}% of its {what}" if share < 10 else f"{share:.0f}% of its {what}"


def _num(x: float) -> str:
    return f"{x:.1f}" if abs(x) >= 1 else f"{x:.2g}"


def gap_words(diff: float, reference: str, higher_is_better: bool, scale: float, unit: str) -> str:
    """'4.3 points below `full`' for diff = system - reference (metric units); a lower-is-better
    metric says which way is better."""
    if diff == 0:
        return f"level with `{reference}`"
    side = "above" if diff > 0 else "below"
    if not higher_is_better:
        side += " (better than)" if diff < 0 else " (worse than)"
    return f"{_num(abs(diff) * scale)} {unit}{' ' if unit else ''}{side} `{reference}`"


def _interval(low: float, high: float, scale: float) -> str:
    def signed(x):
        return f"{x:+.1f}" if abs(x) >= 1 else f"{x:+.2g}"

    return f"95% CI {signed(low * scale)} to {signed(high * scale)}"


def recommend(task: str, rows: pd.DataFrame, comp: pd.DataFrame, metric: str, eval_name: str, *,
              higher_is_better: bool, scale: float, within_points: float, budget_pct: float,
              why_no_comparison: str = "no finished trained method with per-example predictions",
              baseline: str | None = None, retention: list | tuple = ()) -> tuple[list[dict], list[str]]:
    """Every recommendation of a task's report, bullets and words, from one place.

    `rows`: one row per method at its chosen (variant, decoding) on `eval_name` (method, variant,
    decoding, `metric`, n, and the costs); `comp`: compare_methods on the same systems. `scale`
    turns metric units into points. `baseline`: the untrained method (`none` below). Rules: `none` is a reference, never recommended; when the study
    has `none` and no trained method is significantly better than it, no bullet names a method. A
    method qualifies when it is not significantly worse than the best (and, with `none` in the
    study, significantly better than `none`); "within X points of the best" means qualifying AND
    at most X points from the best on the mean; costs are compared among those methods only. The
    budget bullet picks the best mean among the methods better than `none` under the budget.
    `retention`: the task's Retention sets; per set, a sentence on which method that learns the task
    (significantly better than `none`; a study without `none` shows no method learning, and gets no
    such sentence) forgets least (least_forgetting_sentence). Returns (bullets: dicts with recommendation, cell, method, variant, decoding, `metric`, costs,
    seeds; sentences)."""
    unit = "points"  # `scale` (from the registry's) puts every metric on 0-100
    if comp.empty or "best" not in comp or not _flag(comp["best"], False).any():
        return [], [f"No paired comparison on `{eval_name}` ({why_no_comparison}): nothing is recommended."]
    comp = comp.merge(rows, on="method", how="left", suffixes=("", "_agg"))
    label = {r["method"]: cell_label(r) for _, r in comp.iterrows()}
    trained = comp[comp["method"] != baseline].copy()
    has_none = baseline in set(comp["method"])
    eligible = _flag(trained["better_than_none"], False) if has_none else pd.Series(True, trained.index)
    qualify = eligible & ~_flag(trained["worse_than_best"], True)
    sentences = []
    if (comp["unit"] == "runs").any():  # the whole family: every method ran one seed
        sentences.append("With one seed per method, these p-values compare these runs, not the methods: the "
                         "variation from seed to seed is not in them.")
    pooled = list(comp.loc[comp["unit"] == "methods, pooled spread", "method"])
    if pooled:  # seed-level test, some methods with one seed: no p-value here compares runs only
        sentences.append(f"{', '.join(f'`{label[m]}`' for m in pooled)} ran one seed: the p-values involving "
                         f"{'it' if len(pooled) == 1 else 'them'} assume {'its' if len(pooled) == 1 else 'their'} "
                         "seed-to-seed spread is the other methods' (pooled); every p-value compares methods.")
    best_row = comp[_flag(comp["best"], False)].iloc[0]
    sentences.append(f"Best trained method on `{eval_name}`: `{label[best_row['method']]}` with {metric} "
                     f"{_num(best_row['score'] * scale)}{' ' if unit else ''}{unit} (95% CI {_num(best_row['ci_low'] * scale)} to "
                     f"{_num(best_row['ci_high'] * scale)}; {int(best_row['seeds'])} seed(s) × "
                     f"{int(best_row['examples'])} examples).")
    order = trained.sort_values("score", ascending=not higher_is_better)
    for _, r in order.iterrows():
        sentences.append(_method_sentence(r, best_row, label, baseline if has_none else None, higher_is_better, scale,
                                          unit))
    learners = list(trained.loc[eligible, "method"]) if has_none else []  # without `none`: nothing shown to learn
    sentences.extend(x for ret in retention if (x := least_forgetting_sentence(ret, learners, label)))
    if has_none and not eligible.any():
        base = comp[comp["method"] == baseline].iloc[0]
        return [], [f"No trained method is significantly better than the untrained baseline `{baseline}` on {task} "
                    f"({metric} on `{eval_name}`: `{baseline}` scores {base['score'] * scale:.3g}): nothing is "
                    "recommended."] + sentences
    if not qualify.any():
        return [], [f"No trained method is both significantly better than `{baseline}` and not significantly worse than "
                    "the best: nothing is recommended."] + sentences
    ok = trained[qualify]
    top = ok.loc[ok["score"].idxmax() if higher_is_better else ok["score"].idxmin()]
    gap = (top["score"] - ok["score"]) * scale * (1 if higher_is_better else -1)
    near = ok[gap <= within_points + 1e-9]
    margin = f"within {within_points:g} point(s) of the best and not significantly worse"
    picks = [("best quality", top),
             (f"fewest trainable parameters {margin}", _least(near, "trainable_params"))]
    under = trained[eligible & (trained["trainable_pct"] <= budget_pct)]
    if len(under):
        picks.append((f"best quality with at most {budget_pct:g}% trainable parameters",
                      under.loc[under["score"].idxmax() if higher_is_better else under["score"].idxmin()]))
    fastest = _least(near, "train_time_s")
    if fastest is not None:
        picks.append((f"fastest to train {margin}", fastest))
    bullets = [{"recommendation": what, "cell": label[r["method"]], "method": r["method"], "variant": r["variant"],
                "decoding": r["decoding"], metric: r[metric], "trainable_params": r["trainable_params"],
                "trainable_pct": r["trainable_pct"], "train_time_s": r["train_time_s"],
                "peak_train_mem_mb": r["peak_train_mem_mb"], "seeds": r["n"]}
               for what, r in picks if r is not None]
    return bullets, sentences


def _flag(column: pd.Series, missing: bool) -> pd.Series:
    """A yes/no column of the comparison table as booleans, `missing` where it is empty."""
    return pd.Series([bool(v) if pd.notna(v) else missing for v in column], index=column.index, dtype=bool)


def _least(df: pd.DataFrame, column: str):
    known = df[df[column].notna()]
    return known.loc[known[column].idxmin()] if len(known) else None


def _method_sentence(r, best, label: dict, baseline: str | None, higher_is_better: bool, scale: float, unit: str) -> str:
    """One trained method against the best and against the untrained `baseline` (if the study has
    it), as a reviewer would write it."""
    evidence = f"{int(r['seeds'])} seed(s) × {int(r['examples'])} examples"
    if r["method"] == best["method"]:
        parts = [f"`{label[r['method']]}` is the best"]
    else:
        sig = "significantly" if r["worse_than_best"] else "not significantly"
        parts = [f"`{label[r['method']]}` is {gap_words(r['diff_vs_best'], label[best['method']], higher_is_better, scale, unit)}, "
                 f"{sig} ({_interval(r['diff_ci_low'], r['diff_ci_high'], scale)}, adjusted p = {r['p_vs_best']:.2g})"]
    if baseline is not None and pd.notna(r.get("diff_vs_none")):
        sig = "significantly" if r["p_vs_none"] < ALPHA else "not significantly"
        parts.append(f"{gap_words(r['diff_vs_none'], baseline, higher_is_better, scale, unit)}, {sig} "
                     f"({_interval(r['none_ci_low'], r['none_ci_high'], scale)}, adjusted p = {r['p_vs_none']:.2g})")
    text = "; ".join(parts) + f"; {evidence}"
    if r["method"] != best["method"]:
        text += (f"; {_share(r.get('trainable_params'), best.get('trainable_params'), 'trainable parameters')} "
                 f"and {_share(r.get('peak_train_mem_mb'), best.get('peak_train_mem_mb'), 'training memory')}")
    return text + "."


# ------------------------------------------------------------------------ retention (issue 20)
# What fine-tuning cost the base model, per retention set (peftgrid/plan/retention.py): each
# reported cell's <run>/retention/<set>/metrics.tsv and per_document.tsv (columns.RETENTION,
# columns.RETENTION_DOCUMENT). "Forgetting" is the loss on the set minus the pretrained model's, in
# nats per token, where the model has an LM head to score text with; else the drift of its hidden
# states, 1 - linear CKA. Higher is worse either way: it is the cost axis of the learn-versus-forget
# front.
LEARN_FORGET_CAPTION = ("Task score against forgetting, each method at its chosen variant with 95% intervals (forgetting: "
                        "the interval of its test against the pretrained model, Holm-adjusted). Red: the front. From the method that forgets least onwards, a method that forgets "
                        "more joins it only when it scores better on the task, significantly (paired test, adjusted "
                        "over all pairs), than the last method on it: each step to the right buys a gain the data can "
                        "show. Dashed grey: the plain front of the means. Forgetting: the loss on the retention text "
                        "minus the pretrained model's (nats/token) where the model has an LM head, else 1 - linear CKA "
                        "of its hidden states with the pretrained model's.")


def retention_column(name: str) -> str:
    """The comparison table's forgetting column of retention set `name` (its p-values: + _p_vs_pretrained,
    _p_vs_best; its place on the learn-versus-forget front: front_ + this)."""
    return f"retention_{name}"


def forgetting_unit(measure: str) -> str:
    return "nats/token" if measure in LOSS_MEASURES else "1 − CKA"


def forgetting_label(measure: str) -> str:
    """The learn-versus-forget figure's x axis."""
    if measure in LOSS_MEASURES:
        return "forgetting: loss on the retention text minus the pretrained model's (nats/token)"
    return "representation drift: 1 − linear CKA with the pretrained model"


def forgetting(row) -> float:
    """One retention metrics row's forgetting (see above); NaN when the row failed."""
    if row.get("status", OK) != OK:
        return math.nan
    if row["measure"] in LOSS_MEASURES:
        return float(row["retention_loss_delta"])
    return 1.0 - float(row["cka"])


def document_values(per_document: pd.DataFrame, column: str = "loss") -> np.ndarray:
    """Each document's loss (`column`: loss, the fine-tuned model's; base_loss, the pretrained model's
    on the same tokens) weighted by its share of the tokens, t_i / mean(t): their mean is the loss per
    token over all scored tokens (metrics.tsv's retention_loss), so the paired tests score a run by
    the plain mean (on a resample: its documents' nats over the average document's tokens; every
    system shares the documents and their tokens)."""
    tokens = per_document["n_tokens"].to_numpy(dtype=float)
    return per_document[column].to_numpy(dtype=float) * tokens / tokens.mean()


VS_PRETRAINED_TEST = ("against the pretrained model, each method alone (the pretrained model has no seeds to vary): "
                      "with two or more seeds a t-test of its seeds' token-weighted deltas against 0 (the seed variance "
                      "pooled over the methods with seeds, floored at the method's own and at the documents' sampling "
                      "variance of its mean delta), with one seed a sign-flip of its per-document deltas; Holm-adjusted "
                      "over the methods, each interval at the level Holm's step-down tested it")


def vs_pretrained(deltas: dict[str, np.ndarray], n: int = RESAMPLES, seed: int = RESAMPLE_SEED) -> dict[str, tuple]:
    """Did each method forget at all? `deltas`: method -> its runs' per-document token-weighted deltas from
    the pretrained model, (seeds, documents); returns method -> (mean delta, low, high, Holm-adjusted p,
    unit). The pretrained model is one deterministic run, so the question is one-sample: a method's mean
    delta against 0. Two or more seeds: a t-test with the seed variance (pooled over every method with
    seeds, df = sum(seeds - 1), as significance.compare pools it; floored at the method's own and at the
    documents' sampling variance of the seed-averaged delta, so seeds that happen to agree give no p near 0
    from nothing). One seed: the within-document sign-flip test of the mean delta (exact under "no
    forgetting", each document's delta symmetric around 0). Two-sided; Holm over the methods; each
    interval at the level Holm's step-down used for it (alpha / (m - rank + 1), frozen where the steps
    stop), so it excludes 0 exactly when the adjusted p < ALPHA."""
    from scipy import stats

    from .significance import holm, pooled_seed_variance, t_critical

    per_seed = {m: d.mean(axis=1) for m, d in deltas.items()}
    pooled, df = pooled_seed_variance(list(per_seed.values()))
    tests = {}  # method -> (mean, p, critical(level) -> half width, unit)
    for i, (m, d) in enumerate(deltas.items()):
        mean = float(per_seed[m].mean())
        if len(d) >= 2:
            documents = d.mean(axis=0)  # resampling documents moves every seed's run together
            se = math.sqrt(max(pooled / len(d), per_seed[m].var(ddof=1) / len(d), documents.var(ddof=1) / len(documents)))
            p = 1.0 if mean == 0 else 0.0 if se == 0 else float(2 * stats.t.sf(abs(mean) / se, df))
            tests[m] = (mean, p, lambda level, se=se: t_critical(df, level) * se, "methods")
        else:
            w = d[0]
            flips = np.random.default_rng([seed, i]).choice([-1.0, 1.0], (n, len(w))) @ w / len(w)
            p = 1.0 if mean == 0 else (1 + int((np.abs(flips) >= abs(mean) - 1e-12).sum())) / (n + 1)
            tests[m] = (mean, p, lambda level, f=np.sort(np.abs(flips))[::-1]: _flip_critical(f, level), "runs")
    names = list(tests)
    adjusted = dict(zip(names, holm([tests[m][1] for m in names])))
    order = sorted(names, key=lambda m: tests[m][1])  # holm's order (stable)
    stop = next((k for k, m in enumerate(order) if not adjusted[m] < ALPHA), len(order))
    out = {}
    for k, m in enumerate(order):
        mean, _, half, unit = tests[m]
        h = half(ALPHA / (len(order) - min(k, stop)))
        out[m] = (mean, mean - h, mean + h, adjusted[m], unit)
    return out


def _flip_critical(desc: np.ndarray, level: float) -> float:
    """c with |mean| > c exactly when the sign-flip p = (1 + #{|flip| >= |mean|}) / (n + 1) is below
    `level` (`desc`: the n flips' |mean|, largest first)."""
    j = math.ceil(level * (len(desc) + 1) - 1) - 1
    return float(desc[j]) if 0 <= j < len(desc) else math.inf


class Retention:
    """One retention set of one task: each method at its chosen cell (`chosen`: method -> (variant,
    decoding), analysis.chosen_cells), its forgetting over the reported seeds (`table`: forgetting,
    low, high — the 95% interval: over seeds, or where tested vs_pretrained's interval of the
    difference from the pretrained model, which excludes 0 exactly when its adjusted p < 0.05), and —
    where the measure has per-document losses — two tests: each method against the pretrained model
    alone (vs_pretrained: did it forget at all? p_vs_pretrained, forgot), and every pair of trained
    methods at once with significance.compare (`pw`, `versus`: does one forget more than another? the
    verdicts' tests: the seeds' spread when some method has two or more, else a permutation of the
    systems within each document; adjusted over the family). `metrics`: cell key (method, variant, seed) -> metrics row (dict);
    `documents`: the same keys -> per_document.tsv as a DataFrame. The untrained `baseline` is the
    pretrained model itself: forgetting 0, in no test."""

    def __init__(self, name: str, metrics: dict, documents: dict, chosen: dict, baseline: str | None = None,
                 n: int = RESAMPLES, seed: int = RESAMPLE_SEED):
        self.name, self.baseline = name, baseline
        rows = {m: [r for (mm, v, _), r in sorted(metrics.items(), key=str) if (mm, v) == (m, var)]
                for m, (var, _) in chosen.items()}
        ok = {m: [r for r in rs if r.get("status") == OK] for m, rs in rows.items()}
        measures = {r["measure"] for rs in ok.values() for r in rs}
        self.measure = measures.pop() if len(measures) == 1 else ("" if not measures else "mixed")
        self.pw, self.pretrained_test = None, ""
        self.table = pd.DataFrame([self._row(m, ok[m]) for m in sorted(ok) if ok[m]],
                                  columns=["method", "forgetting", "low", "high", "seeds", "documents"])
        if self.measure in LOSS_MEASURES:
            self._test(documents, chosen, n, seed)

    def _row(self, method: str, rows: list[dict]) -> dict:
        values = np.array([forgetting(r) for r in rows])
        s = len(values)
        half = seed_mean_half_width(values)
        return {"method": method, "forgetting": float(values.mean()), "low": values.mean() - half,
                "high": values.mean() + half, "seeds": s, "documents": int(float(rows[0]["n_documents"]))}

    def _test(self, documents: dict, chosen: dict, n: int, seed: int) -> None:
        from . import significance as sig

        trained = [m for m in self.table["method"] if m != self.baseline]
        runs = {m: [documents[k] for k in sorted(documents, key=str) if (k[0], k[1]) == (m, chosen[m][0])
                    and len(documents[k])] for m in trained}
        runs = {m: r for m, r in runs.items() if r}
        first = next(iter(runs.values()))[0] if runs else None
        if first is None or not all(d["n_tokens"].equals(first["n_tokens"]) for r in runs.values() for d in r):
            return  # nothing to pair, or the cells scored different tokens: no paired test
        # each run's per-document delta from the pretrained model, token-weighted: its mean is metrics.tsv's delta
        deltas = {m: np.stack([document_values(d) - document_values(d, "base_loss") for d in r]) for m, r in runs.items()}
        tests = vs_pretrained(deltas, n, seed)
        self.pretrained_test = VS_PRETRAINED_TEST
        self.pw = sig.compare({m: np.stack([document_values(d) for d in r]) for m, r in runs.items()}, n=n, seed=seed)
        t = self.table.set_index("method")
        for m, (diff, low, high, p, unit) in tests.items():
            t.loc[m, ["forgetting", "low", "high"]] = [diff, low, high]
        t["p_vs_pretrained"] = [tests[m][3] if m in tests else math.nan for m in t.index]
        t["forgot"] = [m in tests and tests[m][0] > 0 and tests[m][3] < ALPHA for m in t.index]
        t["test_vs_pretrained"] = [tests[m][4] if m in tests else "" for m in t.index]
        t["unit"] = [self.pw.units[self.pw.index(m)] if m in tests else "" for m in t.index]
        self.table = t.reset_index()

    @property
    def tested(self) -> bool:
        return self.pw is not None

    def versus(self, method: str, reference: str) -> tuple[float, bool]:
        """(adjusted p, `method` forgets significantly more than `reference`); (NaN, False) when the
        pair was not tested."""
        if not self.tested or method not in self.pw.names or reference not in self.pw.names or method == reference:
            return math.nan, False
        i, j = self.pw.index(method), self.pw.index(reference)
        return float(self.pw.p[i, j]), bool(self.pw.diff[i, j] > 0 and self.pw.significant[i, j])


def _amount(x: float, measure: str) -> str:
    return f"{x:+.3g} nats/token" if measure in LOSS_MEASURES else f"1 − CKA {x:.3g}"


def least_forgetting_sentence(ret: Retention, learners: list[str], label: dict) -> str | None:
    """Of the methods that learn the task (`learners`: the ones recommend() may name), the one that
    forgets least on retention set `ret`, said only as far as the tests support it: named when it
    forgets significantly less than each other learner; "not resolved" when some learner is within
    the noise (or the measure has no per-document values to test); None when no learner has a
    measurement."""
    known = ret.table[ret.table["method"].isin(learners) & ret.table["forgetting"].notna()]
    if known.empty:
        return None
    least = known.loc[known["forgetting"].idxmin()]
    m, where = least["method"], f"on the retention set `{ret.name}`"
    amount = _amount(least["forgetting"], ret.measure)
    if len(known) == 1:
        if not ret.tested:
            return f"`{label.get(m, m)}` is the only method that learns the task; {where} its forgetting is {amount}."
        p = least["p_vs_pretrained"]
        verdict = ("not significantly" if not p < ALPHA else "significantly: it forgot" if least["forgetting"] > 0
                   else "significantly: it models the text better")
        return (f"`{label.get(m, m)}` is the only method that learns the task; {where} its loss differs from the "
                f"pretrained model's by {amount}, {verdict} (adjusted p = {p:.2g}).")
    others = known[known["method"] != m].sort_values("forgetting")
    listed = ", ".join(f"`{label.get(o, o)}` ({_amount(f, ret.measure)})" for o, f in zip(others["method"], others["forgetting"]))
    if not ret.tested and least["forgetting"] == 0 and (others["forgetting"] > 0).all():
        # exactly the pretrained model's hidden states (a frozen encoder): no sampling question left
        return (f"`{label.get(m, m)}` learns the task with the least forgetting {where}: its hidden states are the "
                f"pretrained model's ({amount}), where every other method that learns it drifts: {listed}.")
    if not ret.tested:
        return (f"Which method that learns the task forgets least {where} is not tested ({forgetting_unit(ret.measure)} "
                f"is a statistic of the whole set: no per-document values to pair): on the mean `{label.get(m, m)}` "
                f"({amount}), then {listed}.")
    tests = {o: ret.versus(o, m) for o in others["method"]}
    runs = " (one seed: about these runs)" if (ret.table["unit"] == "runs").any() else ""
    unresolved = [o for o, (_, more) in tests.items() if not more]
    if unresolved:
        return (f"Which method that learns the task forgets least {where} is not resolved{runs}: `{label.get(m, m)}` "
                f"forgets least on the mean ({amount}) but not significantly less than "
                + ", ".join(f"`{label.get(o, o)}` (adjusted p = {tests[o][0]:.2g})" for o in unresolved) + ".")
    return (f"`{label.get(m, m)}` learns the task with the least forgetting {where}{runs}: {amount}, significantly "
            "less than " + ", ".join(f"`{label.get(o, o)}` (adjusted p = {p:.2g})" for o, (p, _) in tests.items()) + ".")


def load_retention(files: dict) -> dict[str, tuple[dict, dict]]:
    """set -> (metrics, documents) for Retention, from `files`: (method, variant, seed, set) ->
    (metrics.tsv, per_document.tsv) of each reported cell; a file that is missing is left out (its
    cell failed before the measurement wrote anything)."""
    from pathlib import Path

    from ..records import read_tsv

    out: dict[str, tuple[dict, dict]] = {}
    for (method, variant, seed, name), (metrics, per_document) in sorted(files.items(), key=str):
        rows, docs = out.setdefault(name, ({}, {}))
        if Path(metrics).is_file() and (found := read_tsv(metrics)):
            rows[(method, variant, seed)] = found[0]
        if Path(per_document).is_file():
            docs[(method, variant, seed)] = pd.read_csv(per_document, sep="\t")
    return out
