"""Across tasks: each method's average rank over the study's tasks, with its uncertainty (a
critical-difference diagram, Demšar 2006).

Per task, each method enters where the task's comparisons put it (analysis.chosen_cells): at the
(variant, decoding) chosen on the unreported selection set at the selection seed (the choice
files, tuning.read_choices), else at its only variant and the task's primary decoding; a method
with several variants and no choice is left out, never chosen on the reported set. Its score is
the mean over the reported seeds on the task's primary eval set and metric. Methods are ranked
per task (1 = best, ties share the average rank), the ranks averaged over tasks. Only methods
finished on every task are ranked; `none` (untrained) is ranked as a reference.

Uncertainty, as Demšar (2006, sec. 3.2.2) prescribes: first the Friedman test of "every method has
the same expected rank", its p exact (the permutation distribution of the statistic when each task's
ranks are shuffled among the methods, ties kept; enumerated, or 20,000 seeded shuffles when there are
too many): Friedman's chi² approximation rejects 6.9% at 3 methods over 4 tasks and the Iman–Davenport
F (Demšar's recommendation) 6.9% there, 19% at 3 x 3 (exact computation, stats audit follow-up); only
when it rejects at ALPHA, the Nemenyi post-hoc test: two average ranks further apart than the critical
difference CD = q_alpha * sqrt(k (k + 1) / (6 N)) (k methods, N tasks; q_alpha the studentized range
quantile for k means and infinite degrees of freedom, over sqrt(2)) differ at level alpha. With two
methods there is one pair and no omnibus step: the exact two-sided sign test on the per-task
differences (Demšar sec. 3.1.3; a tied task counts half a win to each, as Demšar counts ties, and an
odd tie is dropped, which keeps the test at its level), not the CD, whose normal approximation
rejected 12.5% of equal pairs over 4 tasks. And a bootstrap 95% interval of each average rank,
resampling tasks with replacement (fixed seed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .analysis import aggregate_seeds, chosen_cells, chosen_rows, load_summary
from ..metrics import higher_is_better
from ..plan.report_targets import RANKS_FIGURE, RANKS_RESAMPLES, RANKS_SEED, RANKS_TABLE, figure_file, table_file
from ..records import atomic_write_text
from .significance import ALPHA, range_quantile

TABLE_COLUMNS = ["method", "average rank", "95% interval", "tasks", "within CD of the best", "role", "variants"]


def q_alpha(k: int, alpha: float = ALPHA) -> float:
    """Nemenyi's q_alpha for k methods: the studentized range quantile q(1 - alpha; k, inf) / sqrt(2)
    (Demšar 2006, Table 5(a) for k <= 10: 2.569 for k = 4)."""
    if k < 2:
        raise ValueError(f"the Nemenyi test compares two or more methods, not {k}")
    return range_quantile(k, math.inf, 1 - alpha) / math.sqrt(2)


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi CD for k methods over n tasks (Demšar 2006, eq. in section 3.2.2)."""
    return q_alpha(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n))


def friedman_p(ranks: pd.DataFrame, shuffles: int = 20000, seed: int = 0) -> float | None:
    """Exact p of the Friedman test over tasks x methods ranks: the share of within-task shuffles of
    the ranks whose statistic (the sum of squared rank sums; Friedman's Q up to constants that ties
    and shuffles leave alone) is at least the observed one. Enumerated when the rank-sum vectors stay
    few, else `shuffles` seeded Monte Carlo shuffles, p = (1 + #) / (1 + shuffles). None for two
    methods (one pair: `sign_test_p` is the whole test)."""
    import itertools
    from collections import Counter

    if ranks.shape[1] < 3:
        return None
    values = ranks.to_numpy(dtype=float)
    if (values == values[:, :1]).all():  # every method tied on every task: nothing differs
        return 1.0
    doubled = np.rint(values * 2).astype(int)  # average ranks are halves: exact integer sums
    observed = int((doubled.sum(axis=0) ** 2).sum())
    sums = Counter({(0,) * values.shape[1]: 1})
    for row in doubled:
        orders = set(itertools.permutations(row.tolist()))
        if len(sums) * len(orders) > 2_000_000:
            break
        grown = Counter()
        for total, count in sums.items():
            for order in orders:
                grown[tuple(a + b for a, b in zip(total, order))] += count
        sums = grown
    else:
        weight = sum(sums.values())
        return float(sum(c for t, c in sums.items() if sum(x * x for x in t) >= observed) / weight)
    rng = np.random.default_rng(seed)
    at_least = 0
    for start in range(0, shuffles, 1000):  # 1,000 shuffled tables at a time
        shuffled = rng.permuted(np.broadcast_to(doubled, (min(1000, shuffles - start), *doubled.shape)), axis=2)
        at_least += int(((shuffled.sum(axis=1) ** 2).sum(axis=1) >= observed).sum())
    return float((1 + at_least) / (1 + shuffles))


def sign_test_p(ranks: pd.DataFrame) -> float:
    """Exact two-sided sign test of two methods over tasks (ranks: tasks x 2): wins of each, a tied
    task half a win to each (Demšar 2006, 3.1.3), an odd tie left out; p = P(|W - n/2| >= |w - n/2|),
    W ~ Binomial(n, 1/2)."""
    from scipy.stats import binom

    a, b = ranks.to_numpy(dtype=float).T
    wins, ties = int((a < b).sum()), int((a == b).sum())
    n = int((a != b).sum()) + ties - ties % 2
    w = wins + ties // 2
    if n == 0:
        return 1.0
    dev = abs(w - n / 2)
    lo, hi = math.floor(n / 2 - dev + 1e-9), math.ceil(n / 2 + dev - 1e-9)
    return float(min(1.0, binom.cdf(lo, n, 0.5) + binom.sf(hi - 1, n, 0.5)))


def rank_table(scores: pd.DataFrame, higher: dict[str, bool]) -> pd.DataFrame:
    """tasks x methods scores -> tasks x methods ranks (1 = best, ties: average rank)."""
    return pd.DataFrame({t: scores.loc[t].rank(ascending=not higher[t], method="average") for t in scores.index}).T


def bootstrap_intervals(ranks: pd.DataFrame, resamples: int = RANKS_RESAMPLES, seed: int = RANKS_SEED) -> pd.DataFrame:
    """2.5% and 97.5% percentiles of each method's average rank over tasks resampled with replacement."""
    rng = np.random.default_rng(seed)
    values = ranks.to_numpy(dtype=float)
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    means = values[idx].mean(axis=1)  # resamples x methods
    return pd.DataFrame({"lo": np.percentile(means, 2.5, axis=0), "hi": np.percentile(means, 97.5, axis=0)},
                        index=ranks.columns)


@dataclass
class Ranking:
    tasks: list[str]
    table: pd.DataFrame                       # TABLE_COLUMNS + numeric lo / hi / rank
    cd: float | None                          # None: no post-hoc test (Friedman did not reject)
    excluded: dict[str, str] = field(default_factory=dict)   # method -> why
    choices: pd.DataFrame = field(default_factory=pd.DataFrame)  # task, method, variant, chosen_on, score
    note: str = ""
    friedman_p: float | None = None           # None: two methods, no omnibus step
    sign_p: float | None = None               # two methods: the exact sign test's p (no CD then)


def rank_methods(summary: pd.DataFrame, tasks: dict[str, dict], choices: dict[str, dict] | None = None,
                 resamples: int = RANKS_RESAMPLES, seed: int = RANKS_SEED) -> Ranking:
    """`tasks`: task -> {metric (summary column), eval (primary), decodings (config order; [] unless
    generation), baseline (the untrained method's name, or None)}; `choices`: task -> tuning.read_choices of that task's choice files."""
    choices = choices or {}
    names = sorted(tasks)
    if len(names) < 2:
        return Ranking(names, pd.DataFrame(columns=TABLE_COLUMNS), None,
                       note=f"Across-task ranks need two or more tasks; this study has {len(names)}.")
    scores, entered, missing, higher = {}, [], {}, {}
    baselines = {tasks[t].get("baseline") for t in names} - {None}
    all_methods = sorted(set(summary.loc[summary["task"].isin(names), "method"]))
    for task in names:
        t = tasks[task]
        column, ev = t["metric"], t["eval"]
        higher[task] = higher_is_better(column)
        df = summary[(summary["task"] == task) & (summary["eval"] == ev)]
        agg = aggregate_seeds(df, [column]) if len(df) else pd.DataFrame(columns=["method", "variant", "decoding"])
        mine = choices.get(task, {})
        picked, left_out = chosen_cells(agg, mine, t.get("decodings") or [])
        finished = chosen_rows(agg, picked, ev) if len(agg) else agg
        row = {}
        for method in all_methods:
            if method in left_out:
                missing.setdefault(method, []).append(f"{task}: several variants and no choice on a selection set")
                continue
            if method not in picked:
                missing.setdefault(method, []).append(f"{task}: not run")
                continue
            variant, decoding = picked[method]
            hit = finished[finished["method"] == method]
            ok = hit[hit[column].notna()]
            if ok.empty:
                missing.setdefault(method, []).append(f"{task}: no finished `{variant}` cell on `{ev}`")
                continue
            row[method] = float(ok[column].iloc[0])
            how = (f"chosen on `{mine[method]['on']}` at seed {mine[method]['seed']}" if method in mine
                   else "its only variant")
            entered.append({"task": task, "method": method, "variant": variant, "decoding": decoding,
                            "chosen_on": how, "eval": ev, "metric": column, "score": row[method]})
        scores[task] = row
    excluded = {m: "; ".join(r) for m, r in missing.items()}
    ranked = [m for m in all_methods if m not in excluded]
    choices = pd.DataFrame(entered, columns=["task", "method", "variant", "decoding", "chosen_on", "eval", "metric",
                                             "score"])
    choices = choices[choices["method"].isin(ranked)].reset_index(drop=True)
    if len(ranked) < 2:
        return Ranking(names, pd.DataFrame(columns=TABLE_COLUMNS), None, excluded, choices,
                       note=f"Fewer than two methods finished on every task ({', '.join(ranked) or 'none'}): no ranking.")
    score = pd.DataFrame(scores).T.loc[names, ranked]
    ranks = rank_table(score, higher)
    mean = ranks.mean(axis=0)
    ci = bootstrap_intervals(ranks, resamples, seed)
    k, n = len(ranked), len(names)
    omnibus = friedman_p(ranks)
    pair = sign_test_p(ranks) if k == 2 else None
    cd = critical_difference(k, n) if omnibus is not None and omnibus < ALPHA else None
    best = mean.min()
    rows = []
    for m in sorted(ranked, key=lambda m: (mean[m], m)):
        vs = choices[choices["method"] == m]
        rows.append({"method": m, "average rank": float(mean[m]),
                     "95% interval": f"{ci.loc[m, 'lo']:.2f} – {ci.loc[m, 'hi']:.2f}", "tasks": n,
                     # no post-hoc test: no method is shown to differ from the best
                     "within CD of the best": (bool(mean[m] - best < cd) if cd is not None
                                               else pair is None or mean[m] == best or pair >= ALPHA),
                     "role": "reference (untrained)" if m in baselines else "trained",
                     "variants": "; ".join(f"{r.task}: {r.variant}" + (f" [{r.decoding}]" if r.decoding else "")
                                           for r in vs.itertuples()),
                     "lo": float(ci.loc[m, "lo"]), "hi": float(ci.loc[m, "hi"])})
    table = pd.DataFrame(rows)
    table.attrs["ranks"] = ranks
    return Ranking(names, table, cd, excluded, choices, friedman_p=omnibus, sign_p=pair)


def groups(table: pd.DataFrame, cd: float) -> list[tuple[int, int]]:
    """Maximal runs (first, last index in rank order) of methods whose ranks differ by less than CD."""
    r = table["average rank"].tolist()
    out = []
    for i in range(len(r)):
        j = max(j for j in range(i, len(r)) if r[j] - r[i] < cd)
        if j > i and not any(a <= i and j <= b for a, b in out):
            out.append((i, j))
    return out


def figure(ranking: Ranking, png) -> None:
    from . import plots  # matplotlib (Agg) and the shared save helper

    plt = plots.plt
    t = ranking.table
    k = len(t)
    joined = groups(t, ranking.cd) if ranking.cd is not None else []
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * k + 0.25 * max(1, len(joined))))
    ys = np.arange(k)[::-1] + 1.0
    for y, (_, r) in zip(ys, t.iterrows()):
        ref, x = r["role"].startswith("reference"), r["average rank"]
        ax.errorbar([x], [y], xerr=[[x - r["lo"]], [r["hi"] - x]], fmt="s" if ref else "o",
                    color="grey" if ref else "C0", capsize=4, ms=7)
        ax.annotate(f"{r['method']}{' (reference)' if ref else ''}  {x:.2f}", (x, y), xytext=(0, 8),
                    textcoords="offset points", ha="center", fontsize=9)
    if ranking.cd is not None:
        top = k + 1.0
        ax.plot([1, 1 + ranking.cd], [top, top], color="k", lw=2)
        ax.plot([1, 1], [top - 0.12, top + 0.12], color="k", lw=2)
        ax.plot([1 + ranking.cd] * 2, [top - 0.12, top + 0.12], color="k", lw=2)
        ax.text(1 + ranking.cd / 2, top + 0.18, f"CD = {ranking.cd:.2f} (Nemenyi, α = {ALPHA})", ha="center", fontsize=9)
        for level, (i, j) in enumerate(joined):
            y = 0.3 - 0.25 * level
            ax.plot([t["average rank"].iloc[i], t["average rank"].iloc[j]], [y, y], color="C3", lw=4,
                    solid_capstyle="round")
    ax.set_xlim(0.5, k + 0.5)
    ax.set_xticks(range(1, k + 1))
    ax.set_yticks([])
    ax.set_ylim(0.3 - 0.25 * max(1, len(joined)) - 0.2, k + 1.6)
    ax.set_xlabel("average rank over tasks (1 = best); bars: bootstrap 95% interval over tasks; "
                  "red lines join methods within CD")
    title = f"Average rank over {len(ranking.tasks)} tasks: {', '.join(ranking.tasks)}"
    if ranking.sign_p is not None:
        title += f"\nsign test over tasks: p = {ranking.sign_p:.2g}"
    elif ranking.cd is None:
        title += f"\nFriedman p = {ranking.friedman_p:.2g}: no significant difference, no post-hoc test"
    ax.set_title(title, fontsize=10)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    plots.save(fig, png)


def significance_words(ranking: Ranking) -> str:
    """The omnibus and post-hoc tests in a sentence (Demšar 2006: Friedman first, then Nemenyi; two
    methods: the sign test)."""
    nemenyi = f"Nemenyi critical difference at α = {ALPHA}: CD = {ranking.cd:.3f}." if ranking.cd is not None else ""
    if ranking.sign_p is not None:  # two methods: the one pair is the whole test
        verdict = "differ significantly" if ranking.sign_p < ALPHA else "do not differ significantly"
        return (f"Two methods: exact two-sided sign test over the {len(ranking.tasks)} tasks (a tie half a win to "
                f"each): p = {ranking.sign_p:.2g}, they {verdict} at α = {ALPHA} (the column says \"no\" for the "
                "worse one only then).")
    friedman = f"Friedman test over the {len(ranking.tasks)} tasks (exact permutation p): p = {ranking.friedman_p:.2g}"
    if ranking.cd is None:
        return (f"{friedman} ≥ {ALPHA}: the average ranks do not differ significantly, so no post-hoc test is "
                "run and no method is shown to differ from the best (the column says so for every method).")
    return f"{friedman} < {ALPHA}; post hoc, {nemenyi}"


def markdown(ranking: Ranking, resamples: int = RANKS_RESAMPLES, seed: int = RANKS_SEED) -> str:
    from .tables import markdown_table

    if ranking.note:
        lines = [ranking.note + "\n"]
    else:
        shown = ranking.table[TABLE_COLUMNS].copy()
        shown["average rank"] = shown["average rank"].map(lambda v: f"{v:.2f}")
        shown["within CD of the best"] = shown["within CD of the best"].map(lambda v: "yes" if v else "no")
        lines = [f"Average rank over {len(ranking.tasks)} tasks ({', '.join(ranking.tasks)}); 1 = best, ties share "
                 f"the average rank. {significance_words(ranking)} The interval is a bootstrap "
                 f"95% interval over tasks resampled with replacement ({resamples:,} resamples, seed {seed}). Each method at "
                 "its (variant, decoding) chosen on the unreported selection set at the selection seed (or its only "
                 "variant), scored on each task's primary eval set and metric over the reported seeds. `none` is the untrained reference.\n\n",
                 markdown_table(shown)]
    if ranking.excluded:
        lines.append("\nLeft out (not finished on every task):\n\n")
        lines.extend(f"- `{m}`: {why}\n" for m, why in sorted(ranking.excluded.items()))
    return "".join(lines)


def build_ranks(summary_path, tasks: dict[str, dict], choice_files: dict[str, list], out: dict[str, Path],
                resamples: int = RANKS_RESAMPLES, seed: int = RANKS_SEED) -> Ranking:
    """Write out["table"] (TSV), out["table_md"] and, with two or more tasks and methods,
    out["figure"] (PNG + SVG). `choice_files`: task -> its choice files (plan/tune.py CHOICE_FILE)."""
    from .tuning import read_choices

    summary = load_summary(summary_path)
    ranking = rank_methods(summary, tasks, {t: read_choices(p) for t, p in choice_files.items()}, resamples, seed)
    cols = TABLE_COLUMNS + ["lo", "hi"]
    (ranking.table[cols] if len(ranking.table) else pd.DataFrame(columns=cols)).to_csv(
        out["table"], sep="\t", index=False)
    atomic_write_text(out["table_md"], markdown(ranking, resamples, seed))
    if not ranking.note:
        figure(ranking, out["figure"])
    return ranking


def across_tasks_section(report_dir) -> str:
    """The report.md section: the ranks table and figure (empty when there is no table)."""
    report_dir = Path(report_dir)
    md = report_dir / table_file(RANKS_TABLE)
    if not md.is_file():
        return ""
    part = "\n## Across tasks\n\n" + md.read_text()
    if (report_dir / figure_file(None, RANKS_FIGURE)).is_file():
        part += f"\n![Average rank over tasks with the critical difference]({figure_file(None, RANKS_FIGURE)})\n"
    return part
