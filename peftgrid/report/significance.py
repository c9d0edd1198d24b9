"""Paired significance tests between methods, from per-example scores.

- `paired_bootstrap(a, b, metric_fn, n, seed, gold=None)`: paired bootstrap of score(a) - score(b).
  `a`, `b` hold per-example values, shape (seeds, examples) (one seed: (1, N); a 1-D array is taken
  as one seed; trailing dimensions are allowed, e.g. (seeds, N, K) sufficient statistics). Each
  resample draws ONE set of example indices shared by both systems (the examples are paired: row i
  is the same input for every system) and, when a system has several seeds, its own seed indices
  (seed 0 of one method has nothing to do with seed 0 of another). A system's score on a resample
  is the mean over the drawn seeds of `metric_fn` on the drawn examples; its observed score is the
  mean over its seeds of `metric_fn` on all examples.
  `metric_fn(values)` takes one seed's (resampled) per-example values and returns a number; with
  `gold` (per-example gold labels) it is `metric_fn(gold, pred)` instead, for corpus metrics that
  are not means (macro-F1, MCC). No `metric_fn`: the mean (accuracy from 0/1 correctness).

  The p-value is two-sided, the shifted-null bootstrap test (Efron & Tibshirani 1993, sec. 16.4;
  the "paired bootstrap" of Berg-Kirkpatrick et al. 2012 made two-sided): the bootstrap differences
  d*_r are centred on the observed difference d to mimic the null of no difference, and
      p = (1 + #{r : |d*_r - d| >= |d|}) / (n + 1).
  Identical systems (d = 0, every d* = 0) give p = 1; the +1 keeps p > 0 for a finite number of
  resamples. The 95% interval is the percentile interval of d* (2.5th and 97.5th percentiles).

- `holm(pvalues)`: Holm's step-down adjustment (family-wise error), NaNs left out of the family.

- `sacrebleu_paired(hyps_a, hyps_b, refs, metric)`: BLEU / chrF through sacrebleu's own PairedTest
  (`test="bs"`: paired bootstrap, `"ar"`: approximate randomization), with system `b` as sacrebleu's
  baseline, so the p-value is the one `sacrebleu REF -i B A --paired-bs` prints for A (same seed,
  same number of resamples; sacrebleu's CLI seed is 12345). The interval of the difference comes
  from the same resample indices sacrebleu draws. One deliberate difference: two systems with the
  same sufficient statistics on every sentence get p = 1 (sacrebleu counts only strictly larger
  resampled differences, so it reports 1/(n+1), "significant", for a system against itself).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

CLI_SEED = 12345  # sacrebleu's default SACREBLEU_SEED


@dataclass
class Comparison:
    """score_a - score_b with its bootstrap 95% interval and two-sided p-value."""
    score_a: float
    score_b: float
    diff: float
    ci_low: float
    ci_high: float
    p: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def _as_seeds(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("per-example scores must be an array, not a number")
    return x[None] if x.ndim == 1 else x


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values))


def _score(x: np.ndarray, seeds: np.ndarray, examples: np.ndarray, metric_fn, gold) -> float:
    if gold is None:
        return float(np.mean([metric_fn(x[s][examples]) for s in seeds]))
    g = gold[examples]
    return float(np.mean([metric_fn(g, x[s][examples]) for s in seeds]))


def bootstrap_p(deltas: np.ndarray, observed: float) -> float:
    """Two-sided shifted-null bootstrap p-value (see the module docstring)."""
    deltas = np.asarray(deltas, dtype=float)
    extreme = np.abs(deltas - observed) >= abs(observed) - 1e-12 * max(1.0, abs(observed))
    return float((1 + int(extreme.sum())) / (len(deltas) + 1))


def paired_bootstrap(a, b, metric_fn: Callable | None = None, n: int = 1000, seed: int = 0,
                     gold=None) -> Comparison:
    """Paired bootstrap of score(a) - score(b) over examples (and seeds); see the module docstring."""
    a, b = _as_seeds(a), _as_seeds(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"systems are paired by example: {a.shape[1]} examples against {b.shape[1]}")
    n_ex = a.shape[1]
    if n_ex == 0:
        raise ValueError("no examples to compare")
    if gold is not None:
        gold = np.asarray(gold)
        if len(gold) != n_ex:
            raise ValueError(f"{len(gold)} gold labels for {n_ex} examples")
    fast = metric_fn is None and gold is None
    metric_fn = metric_fn or _mean
    all_ex = np.arange(n_ex)
    score_a = _score(a, np.arange(len(a)), all_ex, metric_fn, gold)
    score_b = _score(b, np.arange(len(b)), all_ex, metric_fn, gold)
    observed = score_a - score_b
    rng = np.random.default_rng(seed)
    deltas = np.empty(n)
    if fast:
        a = a.reshape(len(a), n_ex, -1).mean(axis=2) if a.ndim > 2 else a.astype(float)
        b = b.reshape(len(b), n_ex, -1).mean(axis=2) if b.ndim > 2 else b.astype(float)
    for r in range(n):
        examples = rng.integers(0, n_ex, n_ex)
        seeds_a = rng.integers(0, len(a), len(a))
        seeds_b = rng.integers(0, len(b), len(b))
        if fast:
            deltas[r] = a[seeds_a][:, examples].mean() - b[seeds_b][:, examples].mean()
        else:
            deltas[r] = (_score(a, seeds_a, examples, metric_fn, gold)
                         - _score(b, seeds_b, examples, metric_fn, gold))
    low, high = np.percentile(deltas, [2.5, 97.5])
    return Comparison(score_a, score_b, observed, float(low), float(high), bootstrap_p(deltas, observed), n)


def bootstrap_ci(a, metric_fn: Callable | None = None, n: int = 1000, seed: int = 0, gold=None,
                 ) -> tuple[float, float, float]:
    """(score, 2.5th, 97.5th percentile) of one system's score, resampling examples and seeds."""
    a = _as_seeds(a)
    metric_fn = metric_fn or _mean
    n_ex = a.shape[1]
    gold = None if gold is None else np.asarray(gold)
    score = _score(a, np.arange(len(a)), np.arange(n_ex), metric_fn, gold)
    rng = np.random.default_rng(seed)
    values = np.empty(n)
    for r in range(n):
        examples = rng.integers(0, n_ex, n_ex)
        values[r] = _score(a, rng.integers(0, len(a), len(a)), examples, metric_fn, gold)
    low, high = np.percentile(values, [2.5, 97.5])
    return score, float(low), float(high)


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
def _sacrebleu_metric(metric: str, references: list[list[str]] | None = None):
    from sacrebleu.metrics import BLEU, CHRF

    cls = {"bleu": BLEU, "chrf": CHRF}.get(metric.lower())
    if cls is None:
        raise ValueError(f"sacrebleu paired tests cover 'bleu' and 'chrf', not {metric!r}")
    return cls(references=references)


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str]]:
    """Per-example reference lists -> sacrebleu's one stream per reference slot (a source with
    fewer references repeats its first one, as peftgrid.metrics.text does for corpus scores)."""
    width = max(len(r) for r in references)
    return [[refs[i] if i < len(refs) else refs[0] for refs in references] for i in range(width)]


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
    """Per-sentence sufficient statistics (N, K) of sacrebleu's corpus BLEU / chrF, for resampling
    several seeds with `paired_bootstrap(..., metric_fn=sacrebleu_score_fn(metric))`."""
    m = _sacrebleu_metric(metric, reference_streams(refs))
    return np.array(m._extract_corpus_statistics(list(hyps), None), dtype="float64")


def sacrebleu_score_fn(metric: str = "bleu") -> Callable[[np.ndarray], float]:
    """metric_fn for `paired_bootstrap` over `sacrebleu_stats`: the corpus score of summed stats."""
    m = _sacrebleu_metric(metric)
    return lambda stats: float(m._compute_score_from_stats(np.asarray(stats).sum(0)).score)


def sacrebleu_paired(hyps_a: Sequence[str], hyps_b: Sequence[str], refs: Sequence[Sequence[str]],
                     metric: str = "bleu", n: int = 1000, seed: int = CLI_SEED, test: str = "bs") -> Comparison:
    """System a against baseline b with sacrebleu's PairedTest (see the module docstring). `refs`:
    one list of references per example. `seed` must be non-zero (sacrebleu treats 0 as "unseeded")."""
    from sacrebleu.significance import PairedTest

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
