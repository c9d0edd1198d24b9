"""Our metrics against scikit-learn's on known inputs, and BLEU / chrF against values worked out by hand."""
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from peftgrid.metrics.classification import classification_metrics

ALL = ["accuracy", "f1_macro", "precision_macro", "recall_macro", "f1_weighted", "f1", "precision", "recall", "mcc"]


@pytest.mark.parametrize("num_labels, seed", [(2, 0), (2, 1), (6, 2), (6, 3), (3, 4)])
def test_against_sklearn(num_labels, seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, num_labels, 200)
    pred = np.where(rng.random(200) < 0.6, gold, rng.integers(0, num_labels, 200))
    ours = classification_metrics(gold, pred, num_labels, ALL)
    assert ours["accuracy"] == pytest.approx(skm.accuracy_score(gold, pred))
    assert ours["mcc"] == pytest.approx(skm.matthews_corrcoef(gold, pred))
    for avg in ("macro", "weighted"):
        assert ours[f"f1_{avg}"] == pytest.approx(skm.f1_score(gold, pred, average=avg, zero_division=0))
    assert ours["precision_macro"] == pytest.approx(skm.precision_score(gold, pred, average="macro", zero_division=0))
    assert ours["recall_macro"] == pytest.approx(skm.recall_score(gold, pred, average="macro", zero_division=0))
    if num_labels == 2:
        assert ours["f1"] == pytest.approx(skm.f1_score(gold, pred))


def test_hand_computed_and_degenerate_cases():
    # gold 0 0 1 1, pred 0 1 1 1: class 1 precision 2/3, recall 1; class 0 precision 1, recall 1/2
    m = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], 2, ALL)
    assert m["accuracy"] == 0.75
    assert m["f1"] == pytest.approx(0.8)
    assert m["f1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert m["mcc"] == pytest.approx(1 / np.sqrt(3))
    constant = classification_metrics([0, 1, 1, 0], [1, 1, 1, 1], 2, ["mcc", "accuracy"])
    assert constant == {"mcc": 0.0, "accuracy": 0.5}
    assert set(classification_metrics([0], [0], 2, ["mcc"])) == {"mcc"}


# --------------------------------------------------------------------------- BLEU / chrF by hand
# The generation metrics are sacrebleu's; these checks do not ask sacrebleu what the answer is:
# the values are worked out by hand (n-gram counts written out below) or are the figures
# sacrebleu's own README publishes for its example.

def test_bleu_by_hand():
    from peftgrid.metrics.text import generation_metrics

    ref = "the cat sat on the red mat"
    # hyp 1 "the cat sat on the mat today" (7 words; the reference has 7):
    #   1-grams  the×2 cat sat on mat match, today not          6/7
    #   2-grams  the cat, cat sat, sat on, on the | the mat, mat today   4/6
    #   3-grams  the cat sat, cat sat on, sat on the | on the mat, the mat today   3/5
    #   4-grams  the cat sat on, cat sat on the | sat on the mat, on the mat today   2/4
    #   same length: no brevity penalty
    one = (6 / 7 * 4 / 6 * 3 / 5 * 2 / 4) ** 0.25
    # hyp 2 "the cat sat on the" (5 words): every n-gram matches (5/5, 4/4, 3/3, 2/2);
    #   brevity penalty exp(1 - 7/5)
    two = math.exp(1 - 7 / 5)
    hyp1, hyp2 = "the cat sat on the mat today", "the cat sat on the"
    assert generation_metrics([hyp1], [[ref]], ["bleu"])[0]["bleu"] == pytest.approx(100 * one, abs=1e-9)
    assert 100 * one == pytest.approx(64.3459, abs=1e-4)
    assert generation_metrics([hyp2], [[ref]], ["bleu"])[0]["bleu"] == pytest.approx(100 * two, abs=1e-9)
    # corpus BLEU adds the counts of both sentences before dividing (not a mean of sentence scores):
    # matches/total 11/12, 8/10, 6/8, 4/6; hypothesis length 12, reference length 14
    corpus = math.exp(1 - 14 / 12) * (11 / 12 * 8 / 10 * 6 / 8 * 4 / 6) ** 0.25
    scores, per_sentence = generation_metrics([hyp1, hyp2], [[ref], [ref]], ["bleu", "sentence_bleu"])
    assert scores["bleu"] == pytest.approx(100 * corpus, abs=1e-9)
    assert scores["sentence_bleu"] == pytest.approx(100 * (one + two) / 2, abs=1e-9)
    assert [s["sentence_bleu"] for s in per_sentence] == pytest.approx([100 * one, 100 * two], abs=1e-9)
    # two references: counts are clipped by the larger count in any reference, and the brevity
    # penalty uses the reference length closest to the hypothesis's (7 words, not 3)
    multi, _ = generation_metrics([hyp1], [["a cat sat", ref]], ["bleu"])
    assert multi["bleu"] == pytest.approx(100 * one, abs=1e-9)


def chrf_by_hand(pairs: list[tuple[str, str]], order: int = 6, beta: float = 2.0) -> float:
    """chrF (Popović 2015) as sacrebleu 2 defines it: character n-grams (n = 1..6) with the
    whitespace removed, counts added over the corpus, precision and recall averaged over the
    orders both sides have n-grams of, then the F-score with recall weighted beta times."""
    from collections import Counter

    totals = [[0, 0, 0] for _ in range(order)]  # hyp n-grams, ref n-grams, matches
    for hyp, ref in pairs:
        h, r = "".join(hyp.split()), "".join(ref.split())
        for n in range(1, order + 1):
            hc = Counter(h[i:i + n] for i in range(len(h) - n + 1))
            rc = Counter(r[i:i + n] for i in range(len(r) - n + 1))
            totals[n - 1][0] += sum(hc.values())
            totals[n - 1][1] += sum(rc.values())
            totals[n - 1][2] += sum((hc & rc).values())
    used = [(m / nh, m / nr) for nh, nr, m in totals if nh and nr]
    p = sum(x for x, _ in used) / len(used)
    r = sum(y for _, y in used) / len(used)
    return 100 * (1 + beta ** 2) * p * r / (beta ** 2 * p + r) if p + r else 0.0


def test_chrf_by_hand():
    from peftgrid.metrics.text import generation_metrics

    # "cat" against "cats": n = 1: 3 of 3 hypothesis n-grams match, 3 of the reference's 4;
    # n = 2: ca at | ca at ts -> 2/2, 2/3; n = 3: cat | cat ats -> 1/1, 1/2; n >= 4: the hypothesis
    # has none, so those orders do not count. P = 1, R = (3/4 + 2/3 + 1/2) / 3 = 23/36,
    # chrF2 = 5 P R / (4 P + R)
    r = (3 / 4 + 2 / 3 + 1 / 2) / 3
    assert r == pytest.approx(23 / 36)
    expected = 100 * 5 * r / (4 + r)
    assert expected == pytest.approx(68.8623, abs=1e-4)
    assert chrf_by_hand([("cat", "cats")]) == pytest.approx(expected)
    assert generation_metrics(["cat"], [["cats"]], ["chrf"])[0]["chrf"] == pytest.approx(expected, abs=1e-9)
    # a corpus adds the counts of its sentences; whitespace is not part of any n-gram (Cyrillic too)
    pairs = [("the cat sat on the mat", "the cat sat on a mat"), ("Кошка сидит на ковре", "Кошка сидела на ковре")]
    scores, _ = generation_metrics([h for h, _ in pairs], [[r] for _, r in pairs], ["chrf"])
    assert scores["chrf"] == pytest.approx(chrf_by_hand(pairs), abs=1e-9)
    assert generation_metrics(["thecat sat"], [["the catsat"]], ["chrf"])[0]["chrf"] == pytest.approx(100.0)


def test_sacrebleu_readme_example():
    """The example in sacrebleu's README (two reference streams): BLEU = 48.53, chrF2 = 59.73."""
    from peftgrid.metrics.text import generation_metrics

    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    streams = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
               ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]
    refs = [list(r) for r in zip(*streams)]  # ours: the references of each source together
    scores, _ = generation_metrics(hyps, refs, ["bleu", "chrf"])
    assert round(scores["bleu"], 2) == 48.53
    assert round(scores["chrf"], 2) == 59.73


def test_the_report_reads_each_per_example_score_the_registry_names():
    """The report's paired tests read a column's per-example score where the registry says the
    evaluation job keeps it (rouge1 -> rouge1, rouge -> rougeL, comet -> comet): a column whose key
    the report looked up in a list of its own (as it once did) would score the wrong numbers."""
    from peftgrid.metrics import METRICS, per_example_key
    from peftgrid.report.analysis import Scorer

    assert per_example_key("rouge") == "rougeL" and per_example_key("rouge2") == "rouge2"
    assert per_example_key("accuracy") == "correct" and per_example_key("f1_macro") is None
    assert per_example_key("comet") == "comet"
    for m in METRICS.values():
        for column in {m.name, *m.outputs} - {"bleu", "chrf"}:  # BLEU / chrF: corpus statistics
            key = per_example_key(column)
            if key is None:
                continue
            lines = [{"hypothesis": "h", "references": ["r"], key: v, "decoy": -v} for v in (10.0, 20.0, 60.0)]
            scorer = Scorer(column, [lines])
            assert list(scorer.values(lines)) == [10.0, 20.0, 60.0], column
