"""Our metrics against scikit-learn's on known inputs."""
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
