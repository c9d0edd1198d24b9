"""Which differences between systems are real: every pair of K systems compared at once, so that
the family-wise error rate covers every claim the report makes from one eval set, the choice of
"the best" included (it is one of the pairs).

A system is one method at one variant: its runs (one per training seed), each with per-example
values on the same eval set, shape (seeds, examples, ...) — examples are paired: row i is the same
input for every system. A run's score is `RunScore` of its values on all examples (accuracy: the
mean of 0/1 correctness; BLEU / chrF: the corpus score of summed sufficient statistics; F1, MCC:
from gold and predicted labels); a system's score is the mean of its runs' scores.

Two tests, by what the data can show (`compare` picks):

- `"runs"` (some system has one seed): a paired bootstrap over examples with the runs held fixed
  (one set of example indices per resample, shared by all systems), studentised per pair by the
  bootstrap standard error, with the max-|t| over all pairs as the reference distribution
  (single-step max-T, Westfall & Young 1993):
      p_ab = (1 + #{r : max_pairs |d*_r - d| / se >= |d_ab| / se_ab}) / (n + 1),
  and simultaneous 95% intervals d_ab ± c * se_ab (c: the 95th percentile of the max). It answers
  "would these runs differ on other examples"; it says nothing about another seed: with one seed a
  run-to-run spread of 0.85 accuracy points is called significant in about a quarter of null
  comparisons of equal methods (FACTS.md), so its verdicts are about runs, not methods.

- `"methods"` (every system has two or more seeds): Tukey–Kramer on the runs' scores, the pooled
  within-system variance s² over seeds (df = sum(seeds - 1)) as the error: the seed-to-seed spread
  is estimated from the runs themselves, unbiasedly (not shrunk by (S-1)/S as resampling S seeds
  would), and p from the studentized range of K means, which covers all K(K-1)/2 pairs. Each pair's
  variance is the larger of s²(1/S_a + 1/S_b) and the example-bootstrap variance of its difference,
  so that a small eval set still counts when the seeds happen to agree (taking the larger only makes
  the test more conservative). Intervals: d ± q_0.95(K, df)/√2 * se, simultaneous like the p-values.

Every p-value is two-sided and already adjusted for the whole family; a difference is significant
when p < 0.05, and then its simultaneous interval excludes 0. Differences are system minus
reference, in the metric's units (direction is the caller's: lower may be better).

`holm` (Holm's step-down adjustment) is kept for families of ordinary p-values; `sacrebleu_paired`
is sacrebleu's own paired test, a cross-check only: its rule rejects a true null about twice as often
as it says (FACTS.md), so no verdict uses it.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

CLI_SEED = 12345  # sacrebleu's default SACREBLEU_SEED
CONFIDENCE = 0.95  # of every interval here; the report's alpha (analysis.ALPHA) is 1 - this


# -------------------------------------------------------------------------------- one run's score
class RunScore:
    """A run's score from its per-example values on some examples. `fn(values)` (or, with `gold`,
    `fn(gold, pred)`) scores the values of the chosen examples; no `fn`: the mean (trailing
    dimensions averaged, e.g. 0/1 correctness or per-sentence scores)."""

    def __init__(self, fn: Callable | None = None, gold=None):
        self.fn, self.gold = fn, None if gold is None else np.asarray(gold)

    @property
    def is_mean(self) -> bool:
        return self.fn is None and self.gold is None

    def __call__(self, values, examples=None) -> float:
        values = np.asarray(values) if examples is None else np.asarray(values)[examples]
        if self.is_mean:
            return float(np.mean(values))
        if self.gold is None:
            return float(self.fn(values))
        return float(self.fn(self.gold if examples is None else self.gold[examples], values))

    def resampled(self, runs: np.ndarray, idx: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
        """Mean over `runs` (seeds, N, ...) of each run's score on each resample idx[r] -> (n,);
        `counts`: _counts(idx), for a mean (computed here if not given)."""
        if self.is_mean:
            per_example = runs.reshape(len(runs), runs.shape[1], -1).astype(float).mean(axis=(0, 2))
            counts = _counts(idx, runs.shape[1]) if counts is None else counts
            return counts @ per_example / idx.shape[1]
        return np.array([np.mean([self(run, examples) for run in runs]) for examples in idx])


def _counts(idx: np.ndarray, n_examples: int) -> np.ndarray:
    """(n, N) how often each example is drawn in each resample."""
    n = len(idx)
    flat = (np.arange(n)[:, None] * n_examples + idx).ravel()
    return np.bincount(flat, minlength=n * n_examples).reshape(n, n_examples).astype(np.float32)


def _as_runs(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("per-example values must be an array, not a number")
    return x[None] if x.ndim == 1 else x


# --------------------------------------------------------------------------------- all the pairs
@dataclass
class Pairwise:
    """All pairs of K systems. Matrices are K x K, entry [a, b] about score_a - score_b; `p` is
    symmetric, family-wise adjusted, 1 on the diagonal; `diff_ci` is (K, K, 2), simultaneous;
    `significant` is p < 1 - CONFIDENCE (decided from the critical value, without computing p)."""
    names: list[str]
    seeds: list[int]
    examples: int
    scores: np.ndarray          # (K,) mean over each system's runs
    score_ci: np.ndarray        # (K, 2) 95% interval of each system's score (not simultaneous)
    diff: np.ndarray
    diff_ci: np.ndarray
    significant: np.ndarray
    unit: str                   # "methods" (seed-level test) or "runs" (these runs, examples resampled)
    test: str                   # the procedure, in a few words
    resamples: int
    p_values: Callable[[], np.ndarray] = field(repr=False, default=None)

    @functools.cached_property
    def p(self) -> np.ndarray:
        return self.p_values()

    def index(self, name: str) -> int:
        return self.names.index(name)


def compare(systems: dict[str, np.ndarray], score: RunScore | None = None, n: int = 1000,
            seed: int = 0) -> Pairwise:
    """Every pair of systems (name -> per-example values, (seeds, N, ...)); see the module docstring
    for the two tests. The systems share their N examples; one system alone gets its score interval."""
    score = score or RunScore()
    names = list(systems)
    runs = [_as_runs(systems[k]) for k in names]
    if not runs:
        raise ValueError("no systems to compare")
    n_ex = {r.shape[1] for r in runs}
    if len(n_ex) != 1:
        raise ValueError(f"systems are paired by example: {sorted(n_ex)} examples")
    n_ex = n_ex.pop()
    if n_ex == 0:
        raise ValueError("no examples to compare")
    if score.gold is not None and len(score.gold) != n_ex:
        raise ValueError(f"{len(score.gold)} gold labels for {n_ex} examples")
    run_scores = [np.array([score(run) for run in r]) for r in runs]
    idx = np.random.default_rng(seed).integers(0, n_ex, (n, n_ex))
    counts = _counts(idx, n_ex) if score.is_mean else None
    boot = np.column_stack([score.resampled(r, idx, counts) for r in runs])  # (n, K), runs held fixed
    test = seed_level if min(len(s) for s in run_scores) >= 2 else example_bootstrap
    return test(names, run_scores, boot, n_ex)


def example_bootstrap(names, run_scores: list[np.ndarray], boot: np.ndarray, n_ex: int) -> Pairwise:
    """The "runs" test: max-T over all pairs of the example bootstrap `boot` (n, K)."""
    scores = np.array([s.mean() for s in run_scores])
    diff = scores[:, None] - scores[None, :]
    deltas = boot[:, :, None] - boot[:, None, :]  # (n, K, K)
    se = deltas.std(axis=0)
    # a pair whose difference never moves (identical systems, or one right wherever the other is)
    # adds nothing to the max; its own t is 0 (no difference) or infinite
    with np.errstate(divide="ignore", invalid="ignore"):
        t_star = np.where(se > 0, np.abs(deltas - diff) / se, 0.0)
        t_obs = np.where(se > 0, np.abs(diff) / se, np.where(diff != 0, np.inf, 0.0))
    upper = np.triu_indices(len(names), 1)
    max_t = t_star[:, upper[0], upper[1]].max(axis=1) if len(upper[0]) else np.zeros(len(boot))
    n = len(boot)
    p = (1 + (max_t[None, None, :] >= t_obs[:, :, None] - 1e-12).sum(axis=2)) / (n + 1)
    p[diff == 0] = 1.0  # no difference observed: nothing to reject
    np.fill_diagonal(p, 1.0)
    c = float(np.quantile(max_t, CONFIDENCE))
    ci = np.stack([diff - c * se, diff + c * se], axis=-1)
    tail = (1 - CONFIDENCE) / 2 * 100
    score_ci = np.percentile(boot, [tail, 100 - tail], axis=0).T
    return Pairwise(list(names), [len(s) for s in run_scores], n_ex, scores, score_ci, diff, ci,
                    p < 1 - CONFIDENCE, "runs", "paired bootstrap over examples, runs fixed; max-T over all pairs",
                    n, lambda: p)


def seed_level(names, run_scores: list[np.ndarray], boot: np.ndarray, n_ex: int) -> Pairwise:
    """The "methods" test: Tukey–Kramer on the runs' scores (two or more seeds per system), each
    pair's variance floored at its example-bootstrap variance."""
    from scipy.stats import studentized_range, t

    k = len(names)
    sizes = np.array([len(s) for s in run_scores], dtype=float)
    scores = np.array([s.mean() for s in run_scores])
    df = int((sizes - 1).sum())
    pooled = sum(((s - s.mean()) ** 2).sum() for s in run_scores) / df
    diff = scores[:, None] - scores[None, :]
    boot_var = (boot[:, :, None] - boot[:, None, :]).var(axis=0)
    se = np.sqrt(np.maximum(pooled * (1 / sizes[:, None] + 1 / sizes[None, :]), boot_var))
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(se > 0, np.abs(diff) / se * math.sqrt(2), np.where(diff != 0, np.inf, 0.0))
    crit = _range_quantile(k, df) if k > 1 else np.nan  # no pairs
    ci = np.stack([diff - crit / math.sqrt(2) * se, diff + crit / math.sqrt(2) * se], axis=-1)

    def p_values() -> np.ndarray:  # the studentized range's tail: ~10 ms a pair, hence lazily
        p = np.ones((k, k))
        upper = np.triu_indices(k, 1)
        p[upper] = np.where(np.isinf(q[upper]), 0.0, studentized_range.sf(np.minimum(q[upper], 1e6), k, df))
        return np.minimum(p, p.T)

    own = np.sqrt(np.maximum(pooled / sizes, boot.var(axis=0)))
    half = float(t.ppf(1 - (1 - CONFIDENCE) / 2, df)) * own
    score_ci = np.column_stack([scores - half, scores + half])
    return Pairwise(list(names), [len(s) for s in run_scores], n_ex, scores, score_ci, diff, ci, q > crit, "methods",
                    f"Tukey-Kramer on per-seed scores (pooled seed variance, df {df})", len(boot), p_values)


@functools.lru_cache(maxsize=None)
def _range_quantile(k: int, df: int) -> float:
    """The CONFIDENCE quantile of the studentized range of k means with df error degrees of freedom."""
    from scipy.stats import studentized_range

    return float(studentized_range.ppf(CONFIDENCE, k, df))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order: the k-th smallest of m p-values is multiplied by
    (m - k + 1), made non-decreasing along that order and capped at 1. NaN stays NaN and is not
    counted in m."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return [float(v) for v in out]


# ---------------------------------------------------------------------------------------- sacrebleu
@dataclass
class Comparison:
    """score_a - score_b with an interval and a p-value (sacrebleu's cross-check)."""
    score_a: float
    score_b: float
    diff: float
    ci_low: float
    ci_high: float
    p: float
    n: int


def _sacrebleu_metric(metric: str, references: list[list[str]] | None = None):
    from sacrebleu.metrics import BLEU, CHRF

    cls = {"bleu": BLEU, "chrf": CHRF}.get(metric.lower())
    if cls is None:
        raise ValueError(f"sacrebleu paired tests cover 'bleu' and 'chrf', not {metric!r}")
    return cls(references=references)


@contextlib.contextmanager
def _sacrebleu_seed(seed: int):
    old = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SACREBLEU_SEED", None)
        else:
            os.environ["SACREBLEU_SEED"] = old


def sacrebleu_stats(hyps: Sequence[str], refs: Sequence[Sequence[str]], metric: str = "bleu") -> np.ndarray:
    """Per-sentence sufficient statistics (N, K) of sacrebleu's corpus BLEU / chrF: resampling
    sentences resamples these, and the corpus score is computed from their sum (`sacrebleu_score_fn`)."""
    from ..metrics.text import reference_streams

    m = _sacrebleu_metric(metric, reference_streams(refs))
    return np.array(m._extract_corpus_statistics(list(hyps), None), dtype="float64")


def sacrebleu_score_fn(metric: str = "bleu") -> Callable[[np.ndarray], float]:
    """RunScore's fn over `sacrebleu_stats`: the corpus score of the summed statistics."""
    m = _sacrebleu_metric(metric)
    return lambda stats: float(m._compute_score_from_stats(np.asarray(stats).sum(0)).score)


def sacrebleu_paired(hyps_a: Sequence[str], hyps_b: Sequence[str], refs: Sequence[Sequence[str]],
                     metric: str = "bleu", n: int = 1000, seed: int = CLI_SEED, test: str = "bs") -> Comparison:
    """Cross-check only: system a against baseline b with sacrebleu's PairedTest (`test="bs"`: paired
    bootstrap, `"ar"`: approximate randomization), the p-value `sacrebleu REF -i B A --paired-bs`
    prints for A (same seed and resamples; the CLI's seed is 12345; 0 means unseeded to sacrebleu, so
    it is refused). Two systems with the same statistics on every sentence get p = 1 (sacrebleu would
    report 1/(n+1))."""
    from sacrebleu.significance import PairedTest

    from ..metrics.text import reference_streams

    if not seed:
        raise ValueError("sacrebleu_paired needs a non-zero seed (sacrebleu reads 0 as 'no seed')")
    hyps_a, hyps_b = list(hyps_a), list(hyps_b)
    if not (len(hyps_a) == len(hyps_b) == len(refs)):
        raise ValueError(f"paired sentences: {len(hyps_a)} and {len(hyps_b)} hypotheses, {len(refs)} references")
    streams = reference_streams(refs)
    m = _sacrebleu_metric(metric, streams)
    with _sacrebleu_seed(seed):
        test_run = PairedTest([("b", hyps_b), ("a", hyps_a)], {metric: m}, references=None, test_type=test,
                              n_samples=n)
        _, scores = test_run()
    (result_b, result_a), = [v for k, v in scores.items() if k != "System"]
    # the interval of the difference, on the resamples sacrebleu's bootstrap draws (same rng calls)
    stats_a = np.array(m._extract_corpus_statistics(hyps_a, None), dtype="float32")
    stats_b = np.array(m._extract_corpus_statistics(hyps_b, None), dtype="float32")
    n_boot = n if test == "bs" else 1000
    idxs = np.random.default_rng(seed).choice(len(hyps_a), size=(n_boot, len(hyps_a)), replace=True)
    deltas = np.array([m._compute_score_from_stats(sa.sum(0)).score - m._compute_score_from_stats(sb.sum(0)).score
                       for sa, sb in zip(stats_a[idxs], stats_b[idxs])])
    low, high = np.percentile(deltas, [2.5, 97.5])
    p = float(result_a.p_value)
    if np.array_equal(stats_a, stats_b):
        p = 1.0  # sacrebleu counts only strictly larger differences: identical systems would get 1/(n+1)
    return Comparison(float(result_a.score), float(result_b.score), float(result_a.score - result_b.score),
                      float(low), float(high), p, n)
