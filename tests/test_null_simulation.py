"""Null simulations of the report's verdicts (peftgrid.report.significance.compare, as
compare_methods uses it): K methods of identical true accuracy, the best chosen on the same data,
every pair tested. A false positive is a replicate where some method is called significantly worse
than the best (`worse`), or any pair is called different (`any`); both must stay at the nominal 5%.

The generator is the auditor's (issue 17): 8 methods, true accuracy 0.8, 500 examples shared by all,
each run's accuracy shifted by its own seed effect ~N(0, spread) accuracy points; 1, 3 and 5 seeds.
The stats audit's (2026-12-06) failing nulls are cases too: one method's seeds spreading 6 points
among seven at 2; one method with one seed among seven with three; one seed on 100 examples.
A variant gives each example its own difficulty, shared by every run (correlated systems). The default run is reduced (300 replicates; the
bound is 5% plus two binomial standard errors); the slow one runs 2,000 replicates per setting and
holds the target, 6%. One seed with a seed spread is the documented exception: the test is about
runs then, not methods, and it rejects equal methods far more often than 5% (`unit` says "runs")."""
import math

import numpy as np
import pytest

from peftgrid.report import significance as sig

K, EXAMPLES, ACCURACY, ALPHA = 8, 500, 0.8, 0.05


def null_study(rng, seeds, spread, shift: dict | None = None, shared_difficulty: bool = False,
               examples: int = EXAMPLES) -> dict:
    """K methods' per-example correctness (seeds, examples); `seeds` and `spread` (accuracy points):
    one for all methods or one per method; `shift`: method index -> accuracy points added to its
    true accuracy (for power checks; none under the null)."""
    seeds = seeds if np.iterable(seeds) else [seeds] * K
    spread = spread if np.iterable(spread) else [spread] * K
    difficulty = (rng.beta(8 * ACCURACY, 8 * (1 - ACCURACY), examples) if shared_difficulty  # mean ACCURACY
                  else np.full(examples, ACCURACY))
    out = {}
    for m in range(K):
        effect = rng.normal((shift or {}).get(m, 0.0) / 100, spread[m] / 100, (seeds[m], 1))
        out[f"m{m}"] = (rng.random((seeds[m], examples)) < np.clip(difficulty + effect, 0, 1)).astype(float)
    return out


def rejection_rates(replicates: int, seeds, spread, seed: int = 0, shift: dict | None = None,
                    shared_difficulty: bool = False, examples: int = EXAMPLES, among: list | None = None):
    """(share of replicates with some method significantly worse than the observed best, share with
    any pair significant, the units the test reported); `among`: only these methods' pairs count
    (the best chosen among them too)."""
    rng = np.random.default_rng(seed)
    worse = anything = 0
    units = set()
    for r in range(replicates):
        pw = sig.compare(null_study(rng, seeds, spread, shift, shared_difficulty, examples), n=1000, seed=r)
        sub = np.ix_(among, among) if among else np.s_[:, :]
        significant = pw.significant[sub]
        best = int(np.argmax(pw.scores[among] if among else pw.scores))
        worse += bool(significant[best].any())
        anything += bool(significant.any())
        units.update(pw.units)
    return worse / replicates, anything / replicates, units


def bound(replicates: int) -> float:
    return ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / replicates)


@pytest.mark.parametrize("seeds, spread, shared_difficulty", [(1, 0.0, False), (3, 2.4, False), (5, 3.0, False),
                                                              (3, 0.85, True)])
def test_false_positive_rate_reduced(seeds, spread, shared_difficulty):
    """Best of 8 chosen on the same data, then tested: with Holm over the K-1 comparisons with the
    best this was 12.7% at one seed; resampling 3 seeds gave 14.7% at a 2.4-point spread."""
    worse, anything, units = rejection_rates(300, seeds, spread, shared_difficulty=shared_difficulty)
    assert units == {"runs" if seeds == 1 else "methods"}
    assert worse <= anything <= bound(300), (worse, anything)


# the stats audit's failing nulls (2026-12-06), each at 5% now
HETEROSCEDASTIC = dict(seeds=3, spread=[2.0] * 7 + [6.0])  # pooled spread only: 10.9%
MIXED_SEEDS = dict(seeds=[1] + [3] * 7, spread=2.0)        # any 1-seed method made all pairs "runs": 40%
SMALL_EVAL = dict(seeds=1, spread=0.0, examples=100)       # example bootstrap max-T: 6.7%


@pytest.mark.parametrize("case, units", [(HETEROSCEDASTIC, {"methods"}),
                                         (MIXED_SEEDS, {"methods", "methods, pooled spread"}),
                                         (SMALL_EVAL, {"runs"})], ids=["heteroscedastic", "mixed-seeds", "small-eval"])
def test_false_positive_rate_of_the_audits_cases_reduced(case, units):
    worse, anything, seen = rejection_rates(300, **case, seed=3)
    assert seen == units
    assert worse <= anything <= bound(300), (worse, anything)


def test_mixed_seeds_pairs_among_seeded_methods_stay_at_the_level():
    """The pairs among the 3-seed methods (the audit's 40%: they were tested as runs)."""
    worse, anything, _ = rejection_rates(300, **MIXED_SEEDS, seed=4, among=list(range(1, K)))
    assert worse <= anything <= bound(300), (worse, anything)


@pytest.mark.parametrize("seeds, spread, gap", [(1, 0.0, 8.0), (3, 0.85, 7.0)])
def test_a_real_difference_is_found(seeds, spread, gap):
    """Control: the same tests find one method `gap` points below the others most of the time (a
    test that never rejects would pass the null simulations)."""
    worse, _, _ = rejection_rates(60, seeds, spread, seed=1, shift={0: -gap})
    assert worse >= 0.8


@pytest.mark.audit  # 1,000-2,000 studies a case: the README's rate table (`-m audit`), not CI
@pytest.mark.slow
@pytest.mark.parametrize("seeds, spread", [(1, 0.0), (3, 0.0), (3, 0.85), (3, 3.0), (5, 0.85), (5, 3.0)])
def test_false_positive_rate_full(seeds, spread):
    worse, anything, _ = rejection_rates(2000, seeds, spread, seed=10)
    print(f"seeds {seeds}, spread {spread} points: worse than best {worse:.4f}, any pair {anything:.4f}")
    assert worse <= anything <= 0.06, (worse, anything)


@pytest.mark.audit  # 1,000-2,000 studies a case: the README's rate table (`-m audit`), not CI
@pytest.mark.slow
@pytest.mark.parametrize("case", [HETEROSCEDASTIC, dict(HETEROSCEDASTIC, seeds=5), MIXED_SEEDS,
                                  dict(MIXED_SEEDS, among=list(range(1, K))), SMALL_EVAL, dict(SMALL_EVAL, examples=50)],
                         ids=["heteroscedastic-3", "heteroscedastic-5", "mixed-seeds", "mixed-seeds-among-seeded",
                              "small-eval-100", "small-eval-50"])
def test_false_positive_rate_of_the_audits_cases_full(case):
    """One wide-spread method at 3 seeds keeps a residual excess (any pair 6.05 ± 0.38% over 4,000
    studies, seed 11): its pair's variance comes from its own 2 degrees of freedom while the critical
    value keeps the pooled df (the audit's fix B2; Games-Howell's per-pair df holds the level but had
    no power at 3 seeds). Its bound is 7% (the pooled-only test: 10.9%); every other case holds 6%."""
    worse, anything, _ = rejection_rates(2000, **case, seed=11)
    print(f"{case}: worse than best {worse:.4f}, any pair {anything:.4f} (2000 replicates, SE ~0.005)")
    assert worse <= anything <= (0.07 if case == HETEROSCEDASTIC else 0.06), (worse, anything)


@pytest.mark.audit  # 1,000-2,000 studies a case: the README's rate table (`-m audit`), not CI
@pytest.mark.slow
def test_one_seed_with_a_seed_spread_compares_runs_not_methods():
    """The documented limit: with one seed, a 0.85-point run-to-run spread is taken for a method
    difference in far more than 5% of null replicates (9.7% here with the permutation test, 10.6%
    with the bootstrap it replaced), which is why such verdicts say "runs"."""
    worse, anything, units = rejection_rates(1000, 1, 0.85, seed=20)
    print(f"one seed, spread 0.85 points: worse than best {worse:.4f}, any pair {anything:.4f}")
    assert units == {"runs"} and anything > 0.08  # 5% + 4 standard errors
