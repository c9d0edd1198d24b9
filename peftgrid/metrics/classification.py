"""Classification metrics from the confusion matrix (numpy only; tests check them against
scikit-learn). Macro averages are over the labels that occur in gold or predictions."""
from __future__ import annotations

import math

import numpy as np

NAN = float("nan")  # nothing was scored: no number, never a silent 0
# Binary F1 / precision / recall score the label with this id in the task's label order (run.json
# `labels`: the config's `labels`, else the dataset's class names): CoLA's "acceptable", SST-2's
# "positive". Every binary score uses it, the significance tests included.
POSITIVE_LABEL = 1


def confusion(gold, pred, num_labels: int) -> np.ndarray:
    cm = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(cm, (np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return cm


def _prf(cm: np.ndarray, missed: np.ndarray | None = None):
    tp = np.diag(cm).astype(float)
    pred_pos = cm.sum(axis=0).astype(float)
    gold_pos = cm.sum(axis=1).astype(float) + (0 if missed is None else missed)
    precision = np.divide(tp, pred_pos, out=np.zeros_like(tp), where=pred_pos > 0)
    recall = np.divide(tp, gold_pos, out=np.zeros_like(tp), where=gold_pos > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1, gold_pos, pred_pos


def matthews(cm: np.ndarray) -> float:
    """Multiclass Matthews correlation (Gorodkin's R_K), as scikit-learn computes it."""
    t = cm.sum(axis=1).astype(float)
    p = cm.sum(axis=0).astype(float)
    c = float(np.trace(cm))
    s = float(cm.sum())
    cov_ytyp = c * s - t @ p
    cov_ypyp = s * s - p @ p
    cov_ytyt = s * s - t @ t
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return cov_ytyp / math.sqrt(cov_ytyt * cov_ypyp)


def classification_metrics(gold, pred, num_labels: int, names: list[str], positive_label: int = POSITIVE_LABEL) -> dict:
    """Every metric a classification task may ask for, by its config name. A predicted id of
    `num_labels` means "no prediction" (a word the model had no position for): it counts as wrong
    and adds no class of its own to the macro averages."""
    full = confusion(gold, pred, num_labels + 1)
    missed = full[:num_labels, num_labels]  # gold label -> no prediction
    cm = full[:num_labels, :num_labels]
    precision, recall, f1, gold_pos, pred_pos = _prf(cm, missed)
    present = (gold_pos + pred_pos) > 0
    n = cm.sum() + missed.sum()
    out = {
        "accuracy": float(np.trace(cm) / n) if n else NAN,
        "precision_macro": float(precision[present].mean()) if present.any() else NAN,
        "recall_macro": float(recall[present].mean()) if present.any() else NAN,
        "f1_macro": float(f1[present].mean()) if present.any() else NAN,
        "f1_weighted": float((f1 * gold_pos).sum() / gold_pos.sum()) if gold_pos.sum() else NAN,
        "mcc": matthews(full) if n else NAN,
    }
    if num_labels == 2:
        out.update(precision=float(precision[positive_label]), recall=float(recall[positive_label]),
                   f1=float(f1[positive_label]))
    else:
        out.update(precision=out["precision_macro"], recall=out["recall_macro"], f1=out["f1_macro"])
    return {k: v for k, v in out.items() if k in names}


def per_label_table(gold, pred, labels: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of every label (the per-tag table of token tasks)."""
    full = confusion(gold, pred, len(labels) + 1)
    precision, recall, f1, gold_pos, _ = _prf(full[:len(labels), :len(labels)], full[:len(labels), len(labels)])
    return [{"label": name, "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
             "support": int(gold_pos[i])} for i, name in enumerate(labels)]
