"""Which differences between systems are real: every pair of K systems compared at once, so that
the family-wise error rate covers every claim the report makes from one eval set, the choice of
"the best" included (it is one of the pairs).

A system is one method at one variant: its runs (one per training seed), each with per-example
values on the same eval set, shape (seeds, examples, ...) — examples are paired: row i is the same
input for every system. A run's score is `RunScore` of its values on all examples (accuracy: the
mean of 0/1 correctness; BLEU / chrF: the corpus score of summed sufficient statistics; F1, MCC:
from gold and predicted labels); a system's score is the mean of its runs' scores.

Two tests, by what the data can show (`compare` picks):

- `"methods"` (some system has two or more seeds: sum(seeds - 1) >= 1): Tukey–Kramer on the runs'
  scores, the pooled within-system variance s² over seeds (df = sum(seeds - 1)) as the error: the
  seed-to-seed spread is estimated from the runs themselves, unbiasedly (not shrunk by (S-1)/S as
  resampling S seeds would), and p from the studentized range of K means, which covers all
  K(K-1)/2 pairs. Each pair's variance is the largest of s²(1/S_a + 1/S_b), the pair's own
  s_a²/S_a + s_b²/S_b (a method whose seeds spread more than the others' would otherwise borrow
  their smaller pooled spread: 10.9% false positives with one such method in eight, 5.5% with this
  floor, stats audit 2026-12-06), and the example-bootstrap variance of its difference, so that a
  small eval set still counts when the seeds happen to agree (taking the largest only makes the test
  more conservative). A system with one seed has no spread of its own: its s² is the pooled one
  (Tukey–Kramer admits S = 1; `units` says "methods, pooled spread" for it), so one single-seed
  method does not turn the whole family into a test of runs. Intervals: d ± q_0.95(K, df)/√2 * se,
  simultaneous like the p-values.

- `"runs"` (every system has one seed): a within-example permutation test, max over all pairs
  (single-step max-T, Westfall & Young 1993): on each resample the K systems' values on each
  example are shuffled among the systems (one permutation per example), every system re-scored, and
  the largest |score_a - score_b| over all pairs kept; p_ab = (1 + #{r : max* >= |d_ab|}) / (n + 1).
  When the K runs are exchangeable (the "these runs do not differ" null) this is exact at any eval
  set size, for any metric (corpus BLEU, F1 and MCC are re-scored from the shuffled values); the
  example bootstrap it replaces rejected equal runs 6.7% of the time at 100 examples. The
  differences are not studentized (a bootstrap inside every shuffle would cost n² scorings): a pair
  whose runs agree on most examples is held to the same bar as any other, which costs it power, not
  level. Intervals:
  d ± c, c the permutation max's critical value (the upper-ALPHA point of the differences
  equal runs show; the interval of a shift model, simultaneous, and it excludes 0 exactly when
  p < ALPHA). It answers "would these runs differ on other examples"; it says nothing about
  another seed: with one seed a run-to-run spread of 0.85 accuracy points is called significant in
  about 10% of null comparisons of 8 equal methods (9.7 ± 0.9% over 1,000 studies; 10.6 ± 1.0% with
  the bootstrap this replaced, stats audit), so its verdicts are about runs, not methods.

Each system's own 95% score interval: the percentile interval of the example bootstrap (one seed,
runs fixed), or mean ± t(df) * its standard error (seeds).

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
ALPHA = 0.05  # the report's significance level: every test, verdict and front (analysis, ranks)
CONFIDENCE = 1 - ALPHA  # of every interval here (exactly 0.95)
RESAMPLES = 1000  # the report's bootstrap and permutation draws per test, unless a caller gives others
RESAMPLE_SEED = 0  # and their seed


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
UNITS = {"methods": "its own seeds' spread", "methods, pooled spread": "one seed: the other methods' pooled spread",
         "runs": "these runs (every system has one seed)"}


@dataclass
class Pairwise:
    """All pairs of K systems. Matrices are K x K, entry [a, b] about score_a - score_b; `p` is
    symmetric, family-wise adjusted, 1 on the diagonal; `diff_ci` is (K, K, 2), simultaneous;
    `significant` is p < ALPHA (decided from the critical value, without computing p)."""
    names: list[str]
    seeds: list[int]
    examples: int
    scores: np.ndarray          # (K,) mean over each system's runs
    score_ci: np.ndarray        # (K, 2) 95% interval of each system's score (not simultaneous)
    diff: np.ndarray
    diff_ci: np.ndarray
    significant: np.ndarray
    unit: str                   # the family's test: "methods" (seed level) or "runs" (one seed each, permutation)
    test: str                   # the procedure, in a few words
    resamples: int
    p_values: Callable[[], np.ndarray] = field(repr=False, default=None)
    units: list[str] = field(default_factory=list)  # per system: what its p-values are about (UNITS)

    @functools.cached_property
    def p(self) -> np.ndarray:
        return self.p_values()

    def index(self, name: str) -> int:
        return self.names.index(name)


def compare(systems: dict[str, np.ndarray], score: RunScore | None = None, n: int = RESAMPLES,
            seed: int = RESAMPLE_SEED) -> Pairwise:
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
    if sum(len(s) - 1 for s in run_scores) >= 1:  # some seed spread to estimate
        return seed_level(names, run_scores, boot, n_ex)
    return example_permutation(names, [r[0] for r in runs], run_scores, boot, score, n, seed)


def example_permutation(names, runs: list[np.ndarray], run_scores: list[np.ndarray], boot: np.ndarray,
                        score: RunScore, n: int, seed: int) -> Pairwise:
    """The "runs" test: max-|difference| over all pairs, the systems' values shuffled within each
    example (`runs`: one run per system, (N, ...)); `boot` (n, K) gives each system's own interval."""
    k, n_ex = len(runs), len(runs[0])
    scores = np.array([s.mean() for s in run_scores])
    diff = scores[:, None] - scores[None, :]
    max_d = np.zeros(n)
    if k > 1:
        rng = np.random.default_rng([seed, 1])  # apart from the bootstrap's indices
        stacked = np.stack(runs)  # (K, N, ...)
        per_example = stacked.reshape(k, n_ex, -1).astype(float).mean(axis=2) if score.is_mean else None
        for start in range(0, n, 100):  # (chunk, N, K) permutation indices at a time
            perm = np.argsort(rng.random((min(100, n - start), n_ex, k)), axis=2)
            if score.is_mean:
                shuffled = np.take_along_axis(np.broadcast_to(per_example.T, perm.shape), perm, axis=2)
                s_star = shuffled.mean(axis=1)  # (chunk, K)
            else:  # corpus / gold-pred metrics: re-score each system's shuffled values
                s_star = np.array([[score(stacked[p[:, j], np.arange(n_ex)]) for j in range(k)] for p in perm])
            max_d[start:start + len(perm)] = s_star.max(axis=1) - s_star.min(axis=1)
    p = (1 + (max_d[None, None, :] >= np.abs(diff)[:, :, None] - 1e-12).sum(axis=2)) / (n + 1)
    p[diff == 0] = 1.0  # no difference observed: nothing to reject
    np.fill_diagonal(p, 1.0)
    c = _critical(max_d)
    ci = np.stack([diff - c, diff + c], axis=-1)
    tail = ALPHA / 2 * 100
    score_ci = np.percentile(boot, [tail, 100 - tail], axis=0).T
    return Pairwise(list(names), [len(s) for s in run_scores], n_ex, scores, score_ci, diff, ci,
                    p < ALPHA, "runs", "permutation of the systems within each example; max over all pairs",
                    n, lambda: p, ["runs"] * k)


def _critical(max_d: np.ndarray) -> float:
    """The value c of the n permutation maxima with |d| > c exactly when p = (1 + #{max* >= |d|}) / (n + 1)
    is below ALPHA: the (j+1)-th largest, j the largest count whose p is still below it."""
    n = len(max_d)
    j = math.ceil(ALPHA * (n + 1) - 1) - 1
    return float(np.sort(max_d)[::-1][j]) if 0 <= j < n else np.inf


def pooled_seed_variance(run_scores) -> tuple[float, int]:
    """The seed variance pooled over every system's runs, and its degrees of freedom sum(seeds - 1)
    (NaN when no system has two seeds)."""
    df = int(sum(len(s) - 1 for s in run_scores))
    return (sum(((s - s.mean()) ** 2).sum() for s in run_scores) / df if df else math.nan), df


def t_critical(df: float, level: float = ALPHA) -> float:
    """The two-sided Student t critical value at `level` with df degrees of freedom: an estimate ±
    this times its standard error is its 1 - level interval."""
    from scipy.stats import t

    return float(t.ppf(1 - level / 2, df))


def seed_mean_half_width(values) -> float:
    """Half the width of the CONFIDENCE Student t interval of the mean of `values` (one per seed,
    n - 1 degrees of freedom); NaN under two values."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    return t_critical(n - 1) * float(values.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan


def seed_level(names, run_scores: list[np.ndarray], boot: np.ndarray, n_ex: int) -> Pairwise:
    """The "methods" test: Tukey–Kramer on the runs' scores (sum(seeds - 1) >= 1), each pair's
    variance floored at the pair's own seed variance and at its example-bootstrap variance."""
    from scipy.stats import studentized_range

    k = len(names)
    sizes = np.array([len(s) for s in run_scores], dtype=float)
    scores = np.array([s.mean() for s in run_scores])
    pooled, df = pooled_seed_variance(run_scores)
    # each system's own seed variance; one seed has none: the pooled one stands in
    own_var = np.array([s.var(ddof=1) if len(s) > 1 else pooled for s in run_scores]) / sizes
    diff = scores[:, None] - scores[None, :]
    boot_var = (boot[:, :, None] - boot[:, None, :]).var(axis=0)
    se = np.sqrt(np.maximum.reduce([pooled * (1 / sizes[:, None] + 1 / sizes[None, :]),
                                    own_var[:, None] + own_var[None, :], boot_var]))
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(se > 0, np.abs(diff) / se * math.sqrt(2), np.where(diff != 0, np.inf, 0.0))
    crit = range_quantile(k, df) if k > 1 else np.nan  # no pairs
    ci = np.stack([diff - crit / math.sqrt(2) * se, diff + crit / math.sqrt(2) * se], axis=-1)

    def p_values() -> np.ndarray:  # the studentized range's tail: ~10 ms a pair, hence lazily
        p = np.ones((k, k))
        upper = np.triu_indices(k, 1)
        p[upper] = np.where(np.isinf(q[upper]), 0.0, studentized_range.sf(np.minimum(q[upper], 1e6), k, df))
        return np.minimum(p, p.T)

    own = np.sqrt(np.maximum.reduce([pooled / sizes, own_var, boot.var(axis=0)]))
    half = t_critical(df) * own
    score_ci = np.column_stack([scores - half, scores + half])
    return Pairwise(list(names), [len(s) for s in run_scores], n_ex, scores, score_ci, diff, ci, q > crit, "methods",
                    f"Tukey-Kramer on per-seed scores (pooled seed variance, df {df}, floored at each pair's own)",
                    len(boot), p_values, ["methods" if s >= 2 else "methods, pooled spread" for s in sizes])


@functools.lru_cache(maxsize=None)
def range_quantile(k: int, df: float, confidence: float = CONFIDENCE) -> float:
    """The `confidence` quantile of the studentized range of k means with df error degrees of
    freedom (math.inf: the normal limit, as Nemenyi's test uses it in report/ranks.py)."""
    from scipy.stats import studentized_range

    return float(studentized_range.ppf(confidence, k, df))


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
