"""Task types: from staged rows to model inputs, and the checks that stop bad data before any
training (missing column, empty split, eval labels the model never saw)."""
from __future__ import annotations

from pathlib import Path

import torch

from .data import DataError, check_columns, load_split, staged_meta, subsample


def label_list(task: dict, train_rows: list[dict], meta: dict) -> list[str]:
    """The label order: the config's `labels`, else the dataset's class names, else sorted."""
    col = task["columns"]["label"]
    seen = {str(r[col]) for r in train_rows}
    if "labels" in task:
        labels = [str(x) for x in task["labels"]]
        extra = sorted(seen - set(labels))
        if extra:
            raise DataError(f"training data has labels not in tasks.labels: {', '.join(extra)}")
        return labels
    names = meta.get("class_names", {}).get(col)
    if names:
        return [str(x) for x in names]
    return sorted(seen)


def check_labels(rows: list[dict], label_col: str, labels: list[str], where: str) -> None:
    unseen = sorted({str(r[label_col]) for r in rows} - set(labels))
    if unseen:
        shown = ", ".join(map(repr, unseen[:10])) + (" ..." if len(unseen) > 10 else "")
        raise DataError(f"{where}: labels {shown} never occur in training (known: {', '.join(labels)})")


def load_task_rows(task: dict, data_dir: Path, split: str, limit_key: str, dataset_name: str) -> list[dict]:
    rows = subsample(load_split(data_dir, split, dataset_name), task["max_examples"].get(limit_key))
    where = f"dataset {dataset_name!r} split {split!r}"
    if not rows:
        raise DataError(f"{where}: no examples")
    check_columns(rows, task["columns"], where)
    return rows


def encode_classification(rows: list[dict], tokenizer, columns: dict, labels: list[str], max_length: int) -> list[dict]:
    """Tokenise once, unpadded: batches are padded to their own longest example."""
    label2id = {name: i for i, name in enumerate(labels)}
    texts = [str(r[columns["text"]]) for r in rows]
    pairs = [str(r[columns["text_pair"]]) for r in rows] if "text_pair" in columns else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    out = []
    for i, r in enumerate(rows):
        ex = {k: enc[k][i] for k in keys}
        ex["labels"] = label2id[str(r[columns["label"]])]
        out.append(ex)
    return out


def collate(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e["input_ids"]) for e in examples)
    batch = {}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
        if key in examples[0]:
            batch[key] = torch.tensor([e[key] + [fill] * (width - len(e[key])) for e in examples])
    batch["labels"] = torch.tensor([e["labels"] for e in examples])
    return batch


def truncated_count(rows_encoded: list[dict], max_length: int) -> int:
    return sum(len(e["input_ids"]) >= max_length for e in rows_encoded)


def dataset_meta(data_dir: Path) -> dict:
    return staged_meta(data_dir)
