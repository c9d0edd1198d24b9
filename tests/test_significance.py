"""Paired bootstrap, Holm and the sacrebleu wrapper (peftgrid.report.significance)."""
import json
import subprocess
import sys

import numpy as np
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


# --------------------------------------------------------------------------------- the bootstrap


def test_bootstrap_p_hand_worked():
    # observed 1.0; centred |d* - 1| >= 1 for d* in {0, 2.5, -1} (3 of 5): p = (1 + 3) / 6
    assert sig.bootstrap_p(np.array([0.0, 1.5, 2.5, 1.2, -1.0]), 1.0) == pytest.approx(4 / 6)
    # identical systems: observed 0, all resamples 0 -> every resample counts -> p = 1
    assert sig.bootstrap_p(np.zeros(10), 0.0) == 1.0


def test_deterministic_tiny_bootstrap():
    # a is right wherever b is, plus everywhere: every resample has diff = 1 - 0 = 1 exactly
    a = np.ones((1, 5))
    b = np.zeros((1, 5))
    r = sig.paired_bootstrap(a, b, n=200, seed=3)
    assert (r.score_a, r.score_b, r.diff) == (1.0, 0.0, 1.0)
    assert (r.ci_low, r.ci_high) == (1.0, 1.0)
    # centred resamples are all 0 and |0| < 1: only the +1 is left
    assert r.p == pytest.approx(1 / 201)


def test_bootstrap_resamples_match_a_hand_loop():
    # the same rng calls by hand: shared example indices, then seed indices per system
    rng = np.random.default_rng(7)
    a = rng.integers(0, 2, (3, 20)).astype(float)
    b = rng.integers(0, 2, (2, 20)).astype(float)
    r = sig.paired_bootstrap(a, b, n=50, seed=11)
    g = np.random.default_rng(11)
    deltas = []
    for _ in range(50):
        ex = g.integers(0, 20, 20)
        sa = g.integers(0, 3, 3)
        sb = g.integers(0, 2, 2)
        deltas.append(np.mean([a[s][ex].mean() for s in sa]) - np.mean([b[s][ex].mean() for s in sb]))
    assert r.diff == pytest.approx(a.mean() - b.mean())
    assert (r.ci_low, r.ci_high) == pytest.approx(tuple(np.percentile(deltas, [2.5, 97.5])))
    assert r.p == pytest.approx(sig.bootstrap_p(np.array(deltas), a.mean() - b.mean()))
    # the generic path (a metric_fn) draws the same resamples as the fast mean path
    slow = sig.paired_bootstrap(a, b, metric_fn=lambda x: float(np.mean(x)), n=50, seed=11)
    assert (slow.ci_low, slow.ci_high, slow.p) == pytest.approx((r.ci_low, r.ci_high, r.p))


def test_identical_systems_p_near_one():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, (1, 300))
    r = sig.paired_bootstrap(a, a.copy(), n=1000, seed=0)
    assert r.diff == 0.0 and r.p >= 0.9
    # several seeds, resampled per system: still no evidence of a difference
    s = rng.integers(0, 2, (3, 300))
    r = sig.paired_bootstrap(s, s.copy(), n=1000, seed=0)
    assert r.diff == 0.0 and r.p >= 0.9


def test_clearly_better_system():
    rng = np.random.default_rng(1)
    b = (rng.random((1, 400)) < 0.6).astype(float)
    a = np.maximum(b, (rng.random((1, 400)) < 0.5))  # a fixes about half of b's errors
    r = sig.paired_bootstrap(a, b, n=1000, seed=0)
    assert r.diff > 0.1 and r.p < 0.01 and r.ci_low > 0
    # the other way round: same p, mirrored interval
    back = sig.paired_bootstrap(b, a, n=1000, seed=0)
    assert back.diff == pytest.approx(-r.diff) and back.p < 0.01 and back.ci_high < 0


def test_small_noisy_difference_is_not_significant():
    rng = np.random.default_rng(2)
    b = (rng.random((1, 200)) < 0.7).astype(float)
    a = b.copy()
    a[0, :2] = 1 - a[0, :2]  # two examples flipped
    r = sig.paired_bootstrap(a, b, n=1000, seed=0)
    assert r.p > 0.05 and r.ci_low <= r.diff <= r.ci_high


def test_gold_pred_metric_mcc():
    from sklearn.metrics import matthews_corrcoef

    rng = np.random.default_rng(4)
    gold = rng.integers(0, 2, 300)
    good = np.where(rng.random(300) < 0.85, gold, 1 - gold)
    majority = np.zeros(300, dtype=int)  # MCC 0 on every resample
    r = sig.paired_bootstrap(good[None], majority[None], metric_fn=matthews_corrcoef, n=300, seed=0, gold=gold)
    assert r.score_a == pytest.approx(matthews_corrcoef(gold, good)) and r.score_b == 0.0
    assert r.p < 0.01
    with pytest.raises(ValueError, match="gold labels"):
        sig.paired_bootstrap(good[None], majority[None], metric_fn=matthews_corrcoef, gold=gold[:10])


def test_unpaired_shapes_refused():
    with pytest.raises(ValueError, match="paired by example"):
        sig.paired_bootstrap(np.ones((1, 5)), np.ones((1, 6)))


def test_bootstrap_ci_contains_the_score():
    rng = np.random.default_rng(5)
    a = (rng.random((2, 200)) < 0.7).astype(float)
    score, low, high = sig.bootstrap_ci(a, n=500, seed=0)
    assert score == pytest.approx(a.mean()) and low < score < high and high - low < 0.2


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


def test_sacrebleu_stats_bootstrap_over_seeds():
    # several seeds: the generic bootstrap over sacrebleu's sufficient statistics
    good, weak, refs = corpus(seed=3)
    sa = sig.sacrebleu_stats(good, refs, "bleu")
    sb = sig.sacrebleu_stats(weak, refs, "bleu")
    fn = sig.sacrebleu_score_fn("bleu")
    import sacrebleu

    assert fn(sa) == pytest.approx(sacrebleu.corpus_bleu(good, [[x[0] for x in refs]]).score)
    r = sig.paired_bootstrap(np.stack([sa, sa]), np.stack([sb, sb]), metric_fn=fn, n=200, seed=0)
    assert r.score_a == pytest.approx(fn(sa)) and r.ci_low <= r.diff <= r.ci_high


# ------------------------------------------------------------------------------- in the report


def write_study(tmp_path, systems, metric="mcc", evals=("validation", "test")):
    """summary.tsv + predictions.jsonl per (method, variant, seed, eval) from per-example
    predicted labels; gold is shared. `systems`: (method, variant, params, mem) -> {eval: [preds per seed]}."""
    from peftgrid.metrics.classification import classification_metrics

    rows, predictions = [], {}
    for (method, variant, params, mem), by_eval in systems.items():
        for ev, (gold, seeds) in by_eval.items():
            for seed, pred in enumerate(seeds):
                path = tmp_path / f"{method}_{variant}_{seed}_{ev}.jsonl"
                path.write_text("".join(json.dumps({"label": str(g), "prediction": str(p), "confidence": 0.9,
                                                    "correct": int(g == p)}) + "\n" for g, p in zip(gold, pred)))
                predictions[(method, variant, seed, ev, "")] = path
                score = classification_metrics(np.array(gold), np.array(pred), 2, [metric])[metric]
                rows.append({"task": "cola", "method": method, "variant": variant, "seed": seed, "eval": ev,
                             "decoding": "", "status": "ok", "error": "", metric: score, "trainable_params": params,
                             "trainable_pct": 100 * params / 1e6, "train_time_s": 10.0, "time_per_epoch_s": 5.0,
                             "peak_train_mem_mb": mem, "peak_infer_mem_mb": 100.0, "infer_throughput": 10.0})
    import pandas as pd

    pd.DataFrame(rows).to_csv(tmp_path / "summary.tsv", sep="\t", index=False)
    return predictions


def run_report(tmp_path, predictions, metric="mcc", evals=("validation", "test")):
    import pandas as pd

    from peftgrid.report.tables import build_task_report

    out = {n: tmp_path / f"{n}.{'png' if n in ('learning_curves', 'pareto', 'distances', 'sweep') else 'tsv'}"
           for n in ("table", "table_md", "recommendations", "transfer", "learning_curves", "pareto", "distances",
                     "sweep")}
    task_cfg = {"eval": {e: {} for e in evals}, "metrics": [metric], "transfer": None, "decoding": []}
    build_task_report("cola", tmp_path / "summary.tsv", {}, {}, task_cfg, {}, out, predictions)
    return (pd.read_csv(out["recommendations"], sep="\t"), pd.read_csv(out["table"], sep="\t"),
            out["table_md"].read_text())


def test_report_says_no_method_beat_the_untrained_baseline(tmp_path):
    # CoLA as it happened: full and LoRA predict the majority class (MCC 0), the random head of
    # `none` scores a little above 0 by chance
    rng = np.random.default_rng(0)
    sets = {ev: (rng.integers(0, 2, 300) * (rng.random(300) < 0.7)).tolist() for ev in ("validation", "test")}
    majority = {ev: (g, [[0] * len(g)]) for ev, g in sets.items()}
    noisy = {ev: (g, [[int(x) if rng.random() < 0.53 else 1 - int(x) for x in g]]) for ev, g in sets.items()}
    predictions = write_study(tmp_path, {("full", "default", 1e6, 900.0): majority,
                                         ("lora", "r=8", 3e3, 400.0): majority,
                                         ("none", "default", 0.0, 0.0): noisy})
    recs, table, md = run_report(tmp_path, predictions)
    words = " ".join(recs.loc[recs["recommendation"] == "in words", "statement"])
    assert "No method beat the untrained baseline on cola" in words
    assert "none" not in set(recs.loc[recs["recommendation"] == "best quality", "cell"])
    assert "not worse than best (p>=0.05)" in table.columns and "Paired comparisons" in md


def test_report_words_and_not_worse_column(tmp_path):
    rng = np.random.default_rng(1)
    systems = {}
    sets = {ev: rng.integers(0, 2, 400).tolist() for ev in ("validation", "test")}

    def noisy(gold, acc, n_seeds=2):
        return [[g if rng.random() < acc else 1 - g for g in gold] for _ in range(n_seeds)]

    systems[("full", "default", 1e6, 1000.0)] = {ev: (g, noisy(g, 0.90)) for ev, g in sets.items()}
    systems[("lora", "r=8", 3e3, 380.0)] = {ev: (g, noisy(g, 0.895)) for ev, g in sets.items()}
    # the better LoRA variant on validation is r=8; r=2 is worse there (and chosen against)
    systems[("lora", "r=2", 1e3, 370.0)] = {ev: (g, noisy(g, 0.80)) for ev, g in sets.items()}
    systems[("bitfit", "default", 1e2, 500.0)] = {ev: (g, noisy(g, 0.65)) for ev, g in sets.items()}
    systems[("none", "default", 0.0, 0.0)] = {ev: (g, noisy(g, 0.5, 1)) for ev, g in sets.items()}
    recs, table, md = run_report(tmp_path, write_study(tmp_path, systems, metric="accuracy"), metric="accuracy")
    words = list(recs.loc[recs["recommendation"] == "in words", "statement"])
    assert words[0].startswith("Best on `test`: `full`") and "chosen on `validation`" in words[0]
    lora = next(w for w in words if w.startswith("`lora r=8`"))
    assert "is within" in lora and "0.3% of its trainable parameters" in lora and "38% of its training memory" in lora
    assert any(w.startswith("`bitfit` is significantly worse than") for w in words)
    test_rows = table[table["eval"] == "test"].set_index("cell")
    col = "not worse than best (p>=0.05)"
    assert test_rows.loc["lora r=8", col] == True and test_rows.loc["bitfit", col] == False  # noqa: E712
    assert np.isnan(test_rows.loc["lora r=2", col])  # not the chosen variant: not compared
    assert test_rows.loc["bitfit", "p vs best (Holm)"] < 0.01


def test_comet_is_compared_from_its_segment_scores(tmp_path):
    """COMET's per-example scores come from the task's COMET job (examples.tsv), not from
    predictions.jsonl: a clearly better system by COMET is found significantly better, and two
    systems with the same segment scores are not."""
    import pandas as pd

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
    comp = significance(agg, predictions, ["test"], ["greedy"], "comet", comet=comet)
    assert "note" not in comp or comp["note"].isna().all()
    by = comp.set_index("method")
    assert by.loc["bitfit", "p_vs_best_holm"] < 0.01
    assert by.loc["lora", "p_vs_best_holm"] > 0.05
    without = significance(agg, predictions, ["test"], ["greedy"], "comet")  # no segment scores: said so
    assert "no per-example 'comet'" in without["note"].iloc[0]


def test_pareto_front_drops_only_methods_significantly_beaten_at_no_more_cost(tmp_path):
    """Front by trainable parameters: `tiny` (cheapest, poor) and `big` (best) are on any front;
    `mid` costs more than `small` and scores a little less, not significantly: the plain mean front
    drops it, the significance-aware one keeps it; `fat` costs more than `small` and is far worse:
    dropped by both."""
    import pandas as pd

    from peftgrid.report.analysis import aggregate_seeds, pareto_front
    from peftgrid.report.tables import significance

    rng = np.random.default_rng(4)
    gold = rng.integers(0, 2, 600).tolist()

    def noisy(acc):
        return [[g if rng.random() < acc else 1 - g for g in gold] for _ in range(2)]

    small = noisy(0.85)
    mid = [[p if rng.random() < 0.99 else 1 - p for p in seed] for seed in small]  # ~1 point below, paired
    systems = {("tiny", "default", 1e2, 100.0): {"test": (gold, noisy(0.60))},
               ("small", "default", 1e3, 200.0): {"test": (gold, small)},
               ("mid", "default", 5e3, 300.0): {"test": (gold, mid)},
               ("fat", "default", 1e4, 400.0): {"test": (gold, noisy(0.70))},
               ("big", "default", 1e6, 900.0): {"test": (gold, noisy(0.95))}}
    predictions = write_study(tmp_path, systems, metric="accuracy", evals=("test",))
    agg = aggregate_seeds(pd.read_csv(tmp_path / "summary.tsv", sep="\t").fillna({"decoding": ""}), ["accuracy"])
    agg["decoding"] = ""
    comp = significance(agg, predictions, ["test"], [], "accuracy").set_index("method")
    front = comp["front_trainable_params"].to_dict()
    assert front == {"tiny": True, "small": True, "mid": True, "fat": False, "big": True}
    plain = pareto_front(agg.set_index("method"), "accuracy", "trainable_params").to_dict()
    assert plain["mid"] is False or plain["mid"] == False  # noqa: E712 — the mean front drops it
