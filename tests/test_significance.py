"""The pairwise tests (peftgrid.report.significance.compare: max-T example bootstrap for runs,
Tukey-Kramer on seed scores for methods), Holm, sacrebleu's cross-check, compare_methods' API."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from peftgrid.report import significance as sig

# ------------------------------------------------------------------------------------------- Holm


def test_holm_hand_worked():
    # sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> raised to the running max 0.06
    assert sig.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # capped at 1, NaN left out of the family (m = 2 here)
    out = sig.holm([0.6, float("nan"), 0.2])
    assert out[0] == pytest.approx(0.6) and out[2] == pytest.approx(0.4) and np.isnan(out[1])
    assert sig.holm([0.5, 0.7]) == pytest.approx([1.0, 1.0])
    assert sig.holm([]) == []


def test_holm_four_values():
    # m = 4, worked by hand
    p = [0.01, 0.02, 0.03, 0.04]
    assert sig.holm(p) == pytest.approx([0.04, 0.06, 0.06, 0.06])
    p = [0.001, 0.3, 0.012, 0.04]
    assert sig.holm(p) == pytest.approx([0.004, 0.3, 0.036, 0.08])


# ------------------------------------------------------------------------------------- sacrebleu

WORDS = "the a cat dog sat ran on under mat table quickly slowly red big small house".split()


def corpus(n=60, seed=0):
    rng = np.random.default_rng(seed)
    refs, good, weak = [], [], []
    for _ in range(n):
        ref = [WORDS[i] for i in rng.integers(0, len(WORDS), rng.integers(5, 10))]
        refs.append([" ".join(ref)])
        g = [w if rng.random() < 0.8 else WORDS[rng.integers(0, len(WORDS))] for w in ref]
        w = [w if rng.random() < 0.75 else WORDS[rng.integers(0, len(WORDS))] for w in ref]
        good.append(" ".join(g))
        weak.append(" ".join(w))
    return good, weak, refs


@pytest.mark.parametrize("metric", ["bleu", "chrf"])
def test_sacrebleu_wrapper_equals_paired_test(metric):
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    good, weak, refs = corpus()
    r = sig.sacrebleu_paired(good, weak, refs, metric=metric, n=1000, seed=12345)
    m = {"bleu": BLEU, "chrf": CHRF}[metric](references=[[x[0] for x in refs]])
    # what sacrebleu's CLI does: baseline first, seed from SACREBLEU_SEED (12345 by default)
    _, scores = PairedTest([("weak", weak), ("good", good)], {metric: m}, references=None, test_type="bs",
                           n_samples=1000)()
    (base, other), = [v for k, v in scores.items() if k != "System"]
    assert r.score_a == pytest.approx(other.score) and r.score_b == pytest.approx(base.score)
    assert r.p == pytest.approx(other.p_value)
    assert r.ci_low <= r.diff <= r.ci_high
    # the corpus score equals sacrebleu's plain corpus score
    import sacrebleu

    plain = {"bleu": sacrebleu.corpus_bleu, "chrf": sacrebleu.corpus_chrf}[metric](good, [[x[0] for x in refs]])
    assert r.score_a == pytest.approx(plain.score)


def test_sacrebleu_wrapper_equals_the_cli(tmp_path):
    good, weak, refs = corpus(seed=1)
    for name, lines in (("ref.txt", [x[0] for x in refs]), ("weak.txt", weak), ("good.txt", good)):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, "-m", "sacrebleu", "ref.txt", "-i", "weak.txt", "good.txt", "--paired-bs",
                           "-m", "bleu", "chrf", "-f", "json"], cwd=tmp_path, capture_output=True, text=True,
                          check=True, env={"PATH": "/usr/bin:/bin"})
    cli = json.loads(proc.stdout)[1]
    for metric, key in (("bleu", "BLEU"), ("chrf", "chrF2")):
        r = sig.sacrebleu_paired(good, weak, refs, metric=metric)
        assert r.score_a == pytest.approx(cli[key]["score"])
        assert r.p == pytest.approx(cli[key]["p_value"])


def test_sacrebleu_identical_and_clearly_better():
    good, weak, refs = corpus(seed=2)
    same = sig.sacrebleu_paired(good, list(good), refs, metric="bleu")
    assert same.diff == 0.0 and same.p == 1.0
    junk = ["red red red"] * len(good)
    better = sig.sacrebleu_paired(good, junk, refs, metric="chrf")
    assert better.diff > 10 and better.p < 0.01 and better.ci_low > 0
    with pytest.raises(ValueError, match="non-zero seed"):
        sig.sacrebleu_paired(good, weak, refs, seed=0)


# ---------------------------------------------------------------------- all pairs: the two tests


def test_runs_test_is_a_within_example_permutation_max_over_all_pairs_worked_by_hand():
    """One seed: on each resample the systems' values are shuffled among the systems on each example
    (one permutation per example), and p comes from the largest |difference| over ALL pairs (so the
    choice of the best is covered); a per-pair p (no max), or resampling examples (the old
    bootstrap, 6.7% false positives at 100 examples), would give other numbers. (Replaces the
    bootstrap max-T worked example: that procedure is gone.)"""
    rng = np.random.default_rng(7)
    systems = {k: (rng.random((1, 40)) < acc).astype(float) for k, acc in (("a", .85), ("b", .7), ("c", .6))}
    pw = sig.compare(systems, n=300, seed=11)
    assert pw.unit == "runs" and pw.units == ["runs"] * 3 and pw.seeds == [1, 1, 1] and pw.examples == 40
    x = np.stack([systems[k][0] for k in "abc"])  # (K, N)
    perm_rng = np.random.default_rng([11, 1])
    max_d = []
    for start in range(0, 300, 100):
        for keys in perm_rng.random((100, 40, 3)):
            shuffled = np.array([[x[np.argsort(keys[i])[j], i] for i in range(40)] for j in range(3)])
            means = shuffled.mean(axis=1)
            max_d.append(means.max() - means.min())
    max_d = np.array(max_d)
    c = np.sort(max_d)[::-1][14]  # p < .05 with n = 300: at most 14 maxima at or above |d|
    obs = np.array([systems[k].mean() for k in "abc"])
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        d = obs[i] - obs[j]
        assert pw.diff[i, j] == pytest.approx(d) and pw.diff[j, i] == pytest.approx(-d)
        assert pw.p[i, j] == pytest.approx((1 + (max_d >= abs(d) - 1e-12).sum()) / 301) == pw.p[j, i]
        assert pw.diff_ci[i, j] == pytest.approx([d - c, d + c])
        assert pw.significant[i, j] == (pw.p[i, j] < 0.05) == (abs(d) > c)
    idx = np.random.default_rng(11).integers(0, 40, (300, 40))
    assert pw.score_ci[0] == pytest.approx(np.percentile(x[0][idx].mean(axis=1), [2.5, 97.5]))
    # two systems alone: the same pair's p is smaller (a family of one pair)
    alone = sig.compare({"a": systems["a"], "c": systems["c"]}, n=300, seed=11)
    assert alone.p[0, 1] < pw.p[0, 2]


@pytest.mark.parametrize("n", [99, 300, 999, 1000, 1999])
def test_the_permutation_critical_value_agrees_with_p_below_alpha_at_every_resample_count(n):
    """|d| > the critical value exactly when p = (1 + #{max* >= |d|}) / (n + 1) < ALPHA. Defect caught
    (the one-home audit, 2026-12-07): with the level written 1 - CONFIDENCE (0.050000000000000044),
    999 resamples put the critical value one maximum lower, so a difference with p exactly 0.05 was
    called significant while the report's verdicts (p < 0.05) were not."""
    max_d = np.arange(1, n + 1) / (n + 1)  # distinct maxima
    c = sig._critical(max_d)
    for d in np.concatenate([max_d, max_d + 0.5 / (n + 1)]):
        p = (1 + (max_d >= d - 1e-12).sum()) / (n + 1)
        assert (d > c) == (p < sig.ALPHA), (n, d, p, c)


def test_runs_test_is_exact_for_two_systems():
    """Two systems, one seed: the permutation p is the exact sign-flip p of the paired differences
    (here 6 of 16 flips of 4 discordant examples reach |d|), up to Monte Carlo error."""
    a = np.array([[1, 1, 1, 1, 0, 1, 1, 0, 1, 1.0]])
    b = np.array([[0, 0, 0, 1, 0, 1, 1, 0, 1, 0.0]])  # a right and b wrong on 4 examples, never the reverse
    pw = sig.compare({"a": a, "b": b}, n=4000, seed=0)
    assert pw.p[0, 1] == pytest.approx(2 / 16, abs=0.015)  # all 4 flipped or none: |d| = 0.4


def test_identical_and_dominating_systems():
    # a right wherever b is wrong: significant only once the exact sign-flip p 2 / 2^N is below 5%
    # (5 examples: 2/32 = 6%, not significant; the old bootstrap called it significant at 1/201)
    five = sig.compare({"a": np.ones((1, 5)), "b": np.zeros((1, 5))}, n=2000, seed=3)
    assert five.diff[0, 1] == 1.0 and five.p[0, 1] == pytest.approx(2 / 32, abs=0.015) and not five.significant[0, 1]
    ten = sig.compare({"a": np.ones((1, 10)), "b": np.zeros((1, 10))}, n=2000, seed=3)
    assert ten.p[0, 1] < 0.01 and ten.significant[0, 1] and ten.diff_ci[0, 1, 0] > 0
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, (1, 300)).astype(float)
    same = sig.compare({"x": x, "y": x.copy(), "z": x.copy()}, n=500, seed=0)
    assert (same.p == 1.0).all() and not same.significant.any()
    s = rng.integers(0, 2, (3, 300)).astype(float)
    same = sig.compare({"x": s, "y": s.copy()}, n=500, seed=0)
    assert same.unit == "methods" and same.p[0, 1] == 1.0 and not same.significant.any()


def test_methods_test_is_tukey_kramer_on_seed_scores_worked_by_hand():
    """Several seeds: the seed-to-seed spread comes from the runs themselves (pooled variance, df =
    sum(S - 1)), p from the studentized range of K means. Each run here scores the same on every
    example, so the example bootstrap adds nothing and the numbers are Tukey's exactly."""
    from scipy.stats import studentized_range

    runs = {"a": [0.80, 0.82, 0.84], "b": [0.70, 0.71, 0.75], "c": [0.79, 0.80, 0.81]}
    systems = {k: np.repeat(np.array(v)[:, None], 50, axis=1) for k, v in runs.items()}
    pw = sig.compare(systems, n=200, seed=0)
    assert pw.unit == "methods" and "Tukey" in pw.test and pw.seeds == [3, 3, 3]
    ss = sum(((np.array(v) - np.mean(v)) ** 2).sum() for v in runs.values())
    pooled = ss / 6  # df = 3 x (3 - 1)
    q95 = studentized_range.ppf(0.95, 3, 6)
    for (i, a), (j, b) in [((0, "a"), (1, "b")), ((0, "a"), (2, "c")), ((1, "b"), (2, "c"))]:
        d = np.mean(runs[a]) - np.mean(runs[b])
        # the pooled variance, or the pair's own when larger (b's seeds spread more than the others')
        se = np.sqrt(max(pooled * 2 / 3, (np.var(runs[a], ddof=1) + np.var(runs[b], ddof=1)) / 3))
        assert pw.p[i, j] == pytest.approx(studentized_range.sf(abs(d) / se * np.sqrt(2), 3, 6), rel=1e-6)
        assert pw.diff_ci[i, j] == pytest.approx([d - q95 / np.sqrt(2) * se, d + q95 / np.sqrt(2) * se])
        assert pw.significant[i, j] == (pw.p[i, j] < 0.05)
    assert pw.significant[0, 1] and not pw.significant[0, 2]  # a - b = 0.1 (p ~ 0.01); a - c = 0.02
    half = __import__("scipy").stats.t.ppf(0.975, 6) * np.sqrt(pooled / 3)
    assert pw.score_ci[0] == pytest.approx([0.82 - half, 0.82 + half])


def test_methods_test_keeps_the_eval_sets_own_noise():
    """Seeds that agree exactly (no seed spread) do not make a 2-example difference on 200
    examples significant: each pair's variance is at least its example-bootstrap variance."""
    rng = np.random.default_rng(2)
    b = (rng.random(200) < 0.7).astype(float)
    a = b.copy()
    a[:2] = 1 - a[:2]
    pw = sig.compare({"a": np.stack([a] * 3), "b": np.stack([b] * 3)}, n=500, seed=0)
    assert pw.unit == "methods" and pw.diff[0, 1] != 0
    assert not pw.significant[0, 1] and pw.p[0, 1] > 0.05
    assert pw.diff_ci[0, 1, 0] < 0 < pw.diff_ci[0, 1, 1]


def test_one_single_seed_system_borrows_the_pooled_spread():
    """One method with one seed no longer turns the family into a test of runs (40% false
    positives among the 3-seed pairs, stats audit): Tukey-Kramer admits S = 1, that method's seed
    variance being the pooled one."""
    from scipy.stats import studentized_range

    runs = {"a": [0.80, 0.82, 0.84], "b": [0.70], "c": [0.79, 0.80, 0.81]}
    systems = {k: np.repeat(np.array(v)[:, None], 50, axis=1) for k, v in runs.items()}
    pw = sig.compare(systems, n=200, seed=0)
    assert pw.unit == "methods" and pw.units == ["methods", "methods, pooled spread", "methods"]
    pooled = (0.0008 + 0.0002) / 4  # df = 2 + 0 + 2
    se = np.sqrt(max(pooled * (1 / 3 + 1), 0.0004 / 3 + pooled))  # a's own spread, b's the pooled one
    d = 0.82 - 0.70
    assert pw.p[0, 1] == pytest.approx(studentized_range.sf(d / se * np.sqrt(2), 3, 4), rel=1e-6)


def test_a_spread_out_method_is_judged_by_its_own_spread():
    """Each pair's variance is at least s_a^2/S_a + s_b^2/S_b: a method whose seeds spread widely
    does not borrow the others' small pooled spread (the pooled-only test: 10.9% false positives)."""
    from scipy.stats import studentized_range

    runs = {"a": [0.80, 0.801, 0.802], "b": [0.80, 0.801, 0.802], "c": [0.82, 0.90, 0.98], "d": [0.8, 0.8005, 0.801]}
    systems = {k: np.repeat(np.array(v)[:, None], 50, axis=1) for k, v in runs.items()}
    pw = sig.compare(systems, n=200, seed=0)
    own = np.var(runs["c"], ddof=1) / 3 + np.var(runs["a"], ddof=1) / 3
    d = 0.9 - 0.801
    assert pw.p[2, 0] == pytest.approx(studentized_range.sf(d / np.sqrt(own) * np.sqrt(2), 4, 8), rel=1e-6)
    assert not pw.significant[2, 0]  # the pooled variance alone (own / 4 or so) would call it


def test_one_system_alone_gets_its_interval():
    rng = np.random.default_rng(8)
    one = sig.compare({"a": (rng.random((1, 200)) < 0.7).astype(float)}, n=300)
    assert one.unit == "runs" and one.score_ci[0, 0] < one.scores[0] < one.score_ci[0, 1]
    three = sig.compare({"a": (rng.random((3, 200)) < 0.7).astype(float)}, n=300)
    assert three.unit == "methods" and three.score_ci[0, 0] < three.scores[0] < three.score_ci[0, 1]
    assert not three.significant.any() and three.p[0, 0] == 1.0


def test_gold_pred_metric_mcc():
    from sklearn.metrics import matthews_corrcoef

    rng = np.random.default_rng(4)
    gold = rng.integers(0, 2, 300)
    good = np.where(rng.random(300) < 0.85, gold, 1 - gold)
    majority = np.zeros(300, dtype=int)  # MCC 0 on every resample
    score = sig.RunScore(matthews_corrcoef, gold=gold)
    pw = sig.compare({"good": good[None], "majority": majority[None]}, score, n=300, seed=0)
    assert pw.scores == pytest.approx([matthews_corrcoef(gold, good), 0.0])
    assert pw.p[0, 1] < 0.01 and pw.diff_ci[0, 1, 0] > 0
    with pytest.raises(ValueError, match="gold labels"):
        sig.compare({"good": good[None], "majority": majority[None]}, sig.RunScore(matthews_corrcoef, gold[:10]))


def test_unpaired_shapes_refused():
    with pytest.raises(ValueError, match="paired by example"):
        sig.compare({"a": np.ones((1, 5)), "b": np.ones((1, 6))})


def test_corpus_bleu_resamples_sentences_through_their_statistics():
    """BLEU on a resample is sacrebleu's corpus BLEU of the resampled sentences (not a mean of
    sentence scores), and the verdict is the same rule as every other metric's."""
    import sacrebleu

    good, weak, refs = corpus(seed=3)
    score = sig.RunScore(sig.sacrebleu_score_fn("bleu"))
    stats = {"good": sig.sacrebleu_stats(good, refs, "bleu"), "weak": sig.sacrebleu_stats(weak, refs, "bleu")}
    assert score(stats["good"]) == pytest.approx(sacrebleu.corpus_bleu(good, [[x[0] for x in refs]]).score)
    some = np.random.default_rng(0).integers(0, len(good), len(good))
    assert score(stats["good"], some) == pytest.approx(
        sacrebleu.corpus_bleu([good[i] for i in some], [[refs[i][0] for i in some]]).score)
    pw = sig.compare({k: v[None] for k, v in stats.items()}, score, n=200, seed=0)
    assert pw.diff[0, 1] > 0 and pw.diff_ci[0, 1, 0] <= pw.diff[0, 1] <= pw.diff_ci[0, 1, 1]
    junk = sig.sacrebleu_stats(["red red red"] * len(good), refs, "bleu")
    pw = sig.compare({"good": stats["good"][None], "junk": junk[None]}, score, n=200, seed=0)
    assert pw.significant[0, 1] and pw.diff[0, 1] > 10


# ------------------------------------------------------------------------- compare_methods (API)


def lines(gold, pred):
    return [{"label": str(g), "prediction": str(p), "correct": int(g == p)} for g, p in zip(gold, pred)]


def test_binary_f1_scores_the_tasks_positive_label():
    """CoLA's label order is (unacceptable, acceptable): binary F1 is F1 of `acceptable` (id 1), as
    the evaluation job scores it; sorted label strings would score `unacceptable` instead."""
    from peftgrid.metrics.classification import POSITIVE_LABEL, classification_metrics
    from peftgrid.report.analysis import compare_methods

    labels = ["unacceptable", "acceptable"]
    rng = np.random.default_rng(5)
    gold = rng.integers(0, 2, 200)
    pred = np.where(rng.random(200) < 0.8, gold, 1 - gold)
    systems = {"a": [lines([labels[g] for g in gold], [labels[p] for p in pred])]}
    systems["b"] = [lines([labels[g] for g in gold], [labels[1]] * 200)]
    comp = compare_methods(systems, "f1", n=50, labels=labels).set_index("method")
    job = classification_metrics(gold, pred, 2, ["f1"])["f1"]
    assert labels[POSITIVE_LABEL] == "acceptable"
    assert comp.loc["a", "score"] == pytest.approx(job)
    flipped = classification_metrics(1 - gold, 1 - pred, 2, ["f1"])["f1"]  # F1 of "unacceptable"
    assert comp.loc["a", "score"] != pytest.approx(flipped)
    with pytest.raises(KeyError, match="run.json"):
        compare_methods(systems, "f1", n=50)


def test_compare_methods_columns_and_direction():
    """The API the report reads; with a lower-is-better metric the best is the lowest score and a
    higher one is the worse."""
    from peftgrid.report.analysis import better_pairs, compare_methods

    rng = np.random.default_rng(6)
    gold = rng.integers(0, 2, 400)

    def run(acc):
        return lines(gold, np.where(rng.random(400) < acc, gold, 1 - gold))

    systems = {"hi": [run(0.95)], "mid": [run(0.94)], "lo": [run(0.6)], "none": [run(0.5)]}
    up = compare_methods(systems, "accuracy", n=300, baseline="none").set_index("method")
    for col in ("seeds", "examples", "score", "ci_low", "ci_high", "best", "diff_vs_best", "diff_ci_low",
                "diff_ci_high", "p_vs_best", "worse_than_best", "diff_vs_none", "none_ci_low", "none_ci_high",
                "p_vs_none", "better_than_none", "unit", "test"):
        assert col in up.columns
    assert up["best"].tolist() == [True, False, False, False] and (up["unit"] == "runs").all()
    assert up.loc["lo", "worse_than_best"] and not up.loc["mid", "worse_than_best"]
    assert up.loc["lo", "diff_vs_best"] == pytest.approx(up.loc["lo", "score"] - up.loc["hi", "score"])
    assert up.loc["hi", "better_than_none"] and up.loc["lo", "better_than_none"]
    assert (up["examples"] == 400).all() and (up["seeds"] == 1).all()
    down = compare_methods(systems, "accuracy", n=300, higher_is_better=False, baseline="none").set_index("method")
    assert down.loc["lo", "best"] and down.loc["hi", "worse_than_best"] and not down.loc["lo", "better_than_none"]
    # one family: better_pairs reads the same adjusted p-values
    pairs = better_pairs(systems, "accuracy", n=300)
    assert pairs[("hi", "lo")] == pytest.approx(up.loc["lo", "p_vs_best"])
    assert pairs[("hi", "none")] == pytest.approx(up.loc["hi", "p_vs_none"])
    assert ("lo", "hi") in better_pairs(systems, "accuracy", n=300, higher_is_better=False)


# ------------------------------------------------------------------------------- in the report


def write_study(tmp_path, systems, metric="mcc"):
    """summary.tsv + predictions.jsonl per (method, variant, seed, eval) from per-example
    predicted labels; gold is shared. `systems`: (method, variant, params, mem) -> {eval: (gold,
    [preds per seed])}."""
    from peftgrid.metrics.classification import classification_metrics

    rows, predictions = [], {}
    for (method, variant, params, mem), by_eval in systems.items():
        for ev, (gold, runs) in by_eval.items():
            for seed, pred in enumerate(runs):
                path = tmp_path / f"{method}_{variant}_{seed}_{ev}.jsonl"
                path.write_text("".join(json.dumps({"label": str(g), "prediction": str(p), "confidence": 0.9,
                                                    "correct": int(g == p)}) + "\n" for g, p in zip(gold, pred)))
                predictions[(method, variant, seed, ev, "")] = path
                score = classification_metrics(np.array(gold), np.array(pred), 2, [metric])[metric]
                rows.append({"task": "cola", "method": method, "variant": variant, "seed": seed, "eval": ev,
                             "decoding": "", "status": "ok", "error": "", metric: score, "trainable_params": params,
                             "trainable_pct": 100 * params / 1e6, "train_time_s": 10.0, "time_per_epoch_s": 5.0,
                             "peak_train_mem_mb": mem, "peak_infer_mem_mb": 100.0, "infer_throughput": 10.0})
    pd.DataFrame(rows).to_csv(tmp_path / "summary.tsv", sep="\t", index=False)
    return predictions


def run_report(tmp_path, predictions, metric="mcc", evals=("test",), choices=None, labels=None):
    from peftgrid.report.tables import build_task_report

    figures = ("learning_curves", "pareto", "learn_forget", "distances", "sweep")
    out = {n: tmp_path / f"{n}.{'png' if n in figures else 'tsv'}"
           for n in ("table", "table_md", "recommendations", "transfer", *figures)}
    task_cfg = {"eval": {e: {} for e in evals}, "metrics": [metric], "transfer": None, "decoding": [], "labels": labels,
                "baseline": "none"}
    build_task_report("cola", tmp_path / "summary.tsv", {}, {}, task_cfg, {}, out, predictions, choices)
    return (pd.read_csv(out["recommendations"], sep="\t"), pd.read_csv(out["table"], sep="\t"),
            out["table_md"].read_text())


def exactly(rng, gold, correct):
    """One run's predictions with exactly `correct` examples right (at random positions)."""
    right = set(rng.choice(len(gold), correct, replace=False).tolist())
    return [g if i in right else 1 - g for i, g in enumerate(gold)]


def said(recs, kind="in words"):
    return list(recs.loc[recs["recommendation"] == kind, "statement"])


def noisy(rng, gold, acc, n_seeds=2):
    return [[g if rng.random() < acc else 1 - g for g in gold] for _ in range(n_seeds)]


def test_report_recommends_nothing_when_no_method_beat_the_untrained_baseline(tmp_path):
    # CoLA as it happened: full and LoRA predict the majority class (MCC 0), the random head of
    # `none` scores a little above 0 by chance; the old bullets still said "best quality: `full` — mcc 0"
    rng = np.random.default_rng(0)
    gold = (rng.integers(0, 2, 300) * (rng.random(300) < 0.7)).tolist()
    majority = {"test": (gold, [[0] * len(gold)])}
    predictions = write_study(tmp_path, {("full", "default", 1e6, 900.0): majority,
                                         ("lora", "r=8", 3e3, 400.0): majority,
                                         ("none", "default", 0.0, 0.0): {"test": (gold, noisy(rng, gold, 0.53, 1))}})
    recs, table, md = run_report(tmp_path, predictions)
    assert set(recs["recommendation"]) == {"nothing recommended", "in words"}  # no bullet names a method
    assert said(recs, "nothing recommended")[0].startswith(
        "No trained method is significantly better than the untrained baseline `none` on cola")
    assert "significantly worse than best" in table.columns and "Paired comparisons" in md


def test_report_words_columns_and_the_selection_set_named(tmp_path):
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 2, 400).tolist()

    def runs(correct, n_seeds=2):
        return {"test": (gold, [exactly(rng, gold, correct) for _ in range(n_seeds)])}

    systems = {("full", "default", 1e6, 1000.0): runs(362), ("lora", "r=8", 3e3, 380.0): runs(360),
               ("lora", "r=2", 1e3, 370.0): runs(320), ("bitfit", "default", 1e2, 500.0): runs(260),
               ("none", "default", 0.0, 0.0): runs(200, 1)}
    choices = {"lora": {"variant": "r=8", "decoding": "", "on": "validation", "seed": 1000}}
    recs, table, md = run_report(tmp_path, write_study(tmp_path, systems, metric="accuracy"), metric="accuracy",
                                 choices=choices)
    words = said(recs)
    assert words[0].startswith("Chosen on the selection set `validation` at seed 1000 (runs never reported): "
                               "`lora` → `r=8`")
    assert any(w.startswith("Best trained method on `test`: `full` with accuracy") and "2 seed(s) × 400 examples" in w for w in words)
    lora = next(w for w in words if w.startswith("`lora r=8`"))
    assert "below `full`, not significantly" in lora and "0.3% of its trainable parameters" in lora
    assert "38% of its training memory" in lora and "above `none`, significantly" in lora
    assert any(w.startswith("`bitfit` is ") and "below `full`, significantly" in w for w in words)
    bullets = recs[~recs["recommendation"].isin(["in words", "nothing recommended"])].set_index("recommendation")
    assert bullets.loc["best quality", "cell"] == "full"
    assert bullets.loc["fewest trainable parameters within 1 point(s) of the best and not significantly worse",
                       "cell"] == "lora r=8"
    rows = table.set_index("cell")
    col = "significantly worse than best"
    assert rows.loc["lora r=8", col] == False and rows.loc["bitfit", col] == True  # noqa: E712
    assert np.isnan(rows.loc["lora r=2", col])  # not the chosen variant: not compared
    assert rows.loc["bitfit", "p vs best (adjusted)"] < 0.01


def test_variants_enter_only_as_chosen_on_the_selection_set(tmp_path):
    """Five equally good LoRA ranks: the best of them on the reported set beats a fixed one by
    chance (the audit: 0.56-0.97 points on 2,000 examples). Only the variant chosen on the
    selection set is compared; without a choice the method is left out and the report says so."""
    rng = np.random.default_rng(2)
    gold = rng.integers(0, 2, 500).tolist()
    systems = {("full", "default", 1e6, 1000.0): {"test": (gold, noisy(rng, gold, 0.92))},
               ("none", "default", 0.0, 0.0): {"test": (gold, noisy(rng, gold, 0.5))}}
    for r in (1, 2, 4, 8, 16):
        systems[("lora", f"r={r}", 1e3 * r, 400.0)] = {"test": (gold, noisy(rng, gold, 0.85))}
    predictions = write_study(tmp_path, systems, metric="accuracy")
    summary = pd.read_csv(tmp_path / "summary.tsv", sep="\t")
    lora = summary[summary["method"] == "lora"].groupby("variant")["accuracy"].mean()
    luckiest, fixed = lora.idxmax(), "r=4" if lora.idxmax() != "r=4" else "r=2"
    choices = {"lora": {"variant": fixed, "decoding": "", "on": "validation", "seed": 1000}}
    recs, table, md = run_report(tmp_path, predictions, metric="accuracy", choices=choices)
    rows = table.set_index("cell")
    compared = "significantly worse than best"
    assert pd.notna(rows.loc[f"lora {fixed}", compared]) and pd.isna(rows.loc[f"lora {luckiest}", compared])
    recs, table, md = run_report(tmp_path, predictions, metric="accuracy")  # no choice: lora is left out
    assert table.set_index("cell")[compared].dropna().index.tolist() == ["full", "none"]
    assert any(w.startswith("`lora` has 5 variants and no choice made on a selection set") for w in said(recs))


def test_binary_f1_is_compared_at_the_tasks_positive_label(tmp_path):
    """Binary F1 needs the task's label order (run.json `labels`): with it the comparison scores the
    same F1 as the table; without it the report says why it cannot compare, rather than guessing."""
    rng = np.random.default_rng(6)
    gold = rng.integers(0, 2, 300).tolist()
    systems = {("full", "default", 1e6, 900.0): {"test": (gold, noisy(rng, gold, 0.9))},
               ("lora", "default", 3e3, 400.0): {"test": (gold, noisy(rng, gold, 0.7))}}
    predictions = write_study(tmp_path, systems, metric="f1")
    recs, table, md = run_report(tmp_path, predictions, metric="f1", labels=["0", "1"])
    rows = table.set_index("cell")
    assert rows.loc["lora", "significantly worse than best"] == True  # noqa: E712
    shown = md.split("#### Paired comparisons")[1]
    assert f"| {rows.loc['full', 'f1']:.4g} |" in shown  # the table's F1 (positive label "1")
    recs, table, md = run_report(tmp_path, predictions, metric="f1")
    assert "significantly worse than best" not in table.columns and "labels" in md


def test_comet_is_compared_from_its_segment_scores(tmp_path):
    """COMET's per-example scores come from the task's COMET job (examples.tsv), not from
    predictions.jsonl: a clearly better system by COMET is found significantly better, and two
    systems with the same segment scores are not."""
    from peftgrid.records import write_tsv
    from peftgrid.report.analysis import comet_segment_scores
    from peftgrid.report.tables import significance

    rng = np.random.default_rng(3)
    n = 200
    base = rng.normal(60, 10, n)
    systems = {"full": base + rng.normal(8, 3, n), "lora": base + rng.normal(7.9, 3, n), "bitfit": base}
    predictions, rows, summary = {}, [], []
    for method, scores in systems.items():
        path = tmp_path / f"{method}.jsonl"
        path.write_text("".join(json.dumps({"source": "s", "references": ["r"], "hypothesis": "h"}) + "\n"
                                for _ in range(n)))
        predictions[(method, "default", 1, "test", "greedy")] = path
        rows += [{"task": "mt", "method": method, "variant": "default", "seed": 1, "eval": "test",
                  "decoding": "greedy", "example": i, "comet": float(s)} for i, s in enumerate(scores)]
        summary.append({"method": method, "variant": "default", "seed": 1, "eval": "test", "decoding": "greedy",
                        "status": "ok", "comet": float(np.mean(scores))})
    write_tsv(tmp_path / "examples.tsv", rows, ["task", "method", "variant", "seed", "eval", "decoding", "example",
                                                "comet"])
    comet = comet_segment_scores(tmp_path / "examples.tsv")
    assert comet[("bitfit", "default", 1, "test", "greedy")] == pytest.approx(list(base))
    agg = pd.DataFrame(summary).assign(comet_mean=lambda d: d["comet"])
    chosen = {m: ("default", "greedy") for m in systems}
    comp = significance(agg, predictions, ["test"], chosen, "comet", comet=comet)
    assert "note" not in comp or comp["note"].isna().all()
    by = comp.set_index("method")
    assert by.loc["bitfit", "worse_than_best"] and by.loc["bitfit", "p_vs_best"] < 0.01
    assert not by.loc["lora", "worse_than_best"]
    without = significance(agg, predictions, ["test"], chosen, "comet")  # no segment scores: said so
    assert "no per-example 'comet'" in without["note"].iloc[0]


def test_front_drops_boft_and_full_below_lora_at_many_times_its_parameters(tmp_path):
    """The audit's 500-example task with 9 methods: BOFT 4.4 points below LoRA with 17x its trainable
    parameters and full fine-tuning 2.6 below with 367x, neither significantly worse after adjustment,
    stayed on the old "no method significantly better and cheaper" front; both must leave it."""
    from peftgrid.report.analysis import FRONT, aggregate_seeds
    from peftgrid.report.tables import significance

    rng = np.random.default_rng(4)
    gold = rng.integers(0, 2, 500).tolist()
    lora = 1.2e5
    spec = {"prompt": (2e4, 275), "bitfit": (1e4, 300), "vera": (8e4, 325), "ia3": (5e4, 350), "lora": (lora, 400),
            "adalora": (1.5e5, 390), "prefix": (3e5, 395), "boft": (17 * lora, 378), "full": (367 * lora, 387)}
    systems = {(m, "default", p, 100.0): {"test": (gold, [exactly(rng, gold, c)])} for m, (p, c) in spec.items()}
    predictions = write_study(tmp_path, systems, metric="accuracy")
    agg = aggregate_seeds(pd.read_csv(tmp_path / "summary.tsv", sep="\t").fillna({"decoding": ""}), ["accuracy"])
    agg["decoding"] = agg["decoding"].fillna("")
    comp = significance(agg, predictions, ["test"], {m: ("default", "") for m in spec}, "accuracy")
    front = comp.set_index("method")["front_trainable_params"]
    assert front["bitfit"] == FRONT and front["lora"] != "dominated by `ia3`"
    for m in ("boft", "full"):
        assert front[m].startswith("dominated by `lora`"), (m, front[m])
    assert not comp.set_index("method").loc[["boft", "full"], "worse_than_best"].any()  # the audit's premise


def test_each_method_is_compared_and_drawn_at_its_chosen_decoding(tmp_path):
    """Generation fronts were drawn at one decoding (the first sorted) while their intervals came
    from another: now every comparison, front and figure uses the decoding chosen on the selection
    set, else the primary one (first in config order), and the title names them."""
    from peftgrid.report.analysis import chosen_cells, load_summary
    from peftgrid.report.tables import _decoding_title, significance

    rng = np.random.default_rng(5)
    gold = rng.integers(0, 2, 300).tolist()
    correct = {("lora", "greedy"): 270, ("lora", "beam4"): 180, ("full", "greedy"): 150, ("full", "beam4"): 240}
    rows, predictions = [], {}
    for (method, decoding), c in correct.items():
        pred = exactly(rng, gold, c)
        path = tmp_path / f"{method}_{decoding}.jsonl"
        path.write_text("".join(json.dumps({"label": str(g), "prediction": str(p), "correct": int(g == p)}) + "\n"
                                for g, p in zip(gold, pred)))
        predictions[(method, "default", 1, "test", decoding)] = path
        rows.append({"task": "t", "method": method, "variant": "default", "seed": 1, "eval": "test",
                     "decoding": decoding, "status": "ok", "error": "", "accuracy": c / 300,
                     "trainable_params": 1e3 if method == "lora" else 1e6, "trainable_pct": 1.0})
    pd.DataFrame(rows).to_csv(tmp_path / "summary.tsv", sep="\t", index=False)
    agg = load_summary(tmp_path / "summary.tsv")
    choices = {"lora": {"variant": "default", "decoding": "greedy", "on": "validation", "seed": 1000}}
    chosen, _ = chosen_cells(agg, choices, ["beam4", "greedy"])
    comp = significance(agg, predictions, ["test"], chosen, "accuracy", choices=choices, n=200).set_index("method")
    assert (comp.loc["lora", "decoding"], comp.loc["lora", "score"]) == ("greedy", pytest.approx(0.9))
    assert (comp.loc["full", "decoding"], comp.loc["full", "score"]) == ("beam4", pytest.approx(0.8))
    assert _decoding_title(chosen) == ", each method at its chosen decoding: full `beam4`, lora `greedy`"
    assert _decoding_title({"full": ("default", "beam4")}) == ", decoding `beam4`"
