"""Task types: from staged rows to model inputs, and the checks that stop bad data before any
training (missing column, empty split, eval labels the model never saw)."""
from __future__ import annotations

from pathlib import Path

import torch

from .data import DataError, check_columns, load_split, subsample


IGNORE = -100  # label id the loss and the metrics skip


def is_token_task(task: dict) -> bool:
    return task["type"] == "token_classification"


def is_generation_task(task: dict) -> bool:
    return task["type"] in ("seq2seq", "causal_lm")


def label_values(task: dict, rows: list[dict]) -> set[str]:
    if is_generation_task(task):
        return set()
    if is_token_task(task):
        col = task["columns"]["tags"]
        return {str(t) for r in rows for t in r[col]}
    return {str(r[task["columns"]["label"]]) for r in rows}


def label_list(task: dict, train_rows: list[dict], meta: dict) -> list[str]:
    """The label order: the config's `labels`, else the dataset's class names, else sorted."""
    if is_generation_task(task):
        return []
    seen = label_values(task, train_rows)
    if "labels" in task:
        labels = [str(x) for x in task["labels"]]
        extra = sorted(seen - set(labels))
        if extra:
            raise DataError(f"training data has labels not in tasks.labels: {', '.join(extra)}")
        return labels
    col = task["columns"].get("label")
    names = meta.get("class_names", {}).get(col) if col else None
    if names:
        return [str(x) for x in names]
    return sorted(seen)


def check_labels(task: dict, rows: list[dict], labels: list[str], where: str) -> None:
    """An eval set whose labels the model never saw is an error, unless the task says
    `unseen_labels: ignore` (those words/examples are then left out of the metrics)."""
    unseen = sorted(label_values(task, rows) - set(labels))
    if unseen and task.get("unseen_labels", "error") == "error":
        shown = ", ".join(map(repr, unseen[:10])) + (" ..." if len(unseen) > 10 else "")
        raise DataError(f"{where}: labels {shown} never occur in training (known: {', '.join(labels)}); "
                        f"set unseen_labels: ignore in the task to leave them out of the metrics")


def load_task_rows(task: dict, data_dir: Path, split: str, limit_key: str, dataset_name: str) -> list[dict]:
    rows = subsample(load_split(data_dir, split, dataset_name), task["max_examples"].get(limit_key))
    where = f"dataset {dataset_name!r} split {split!r}"
    if not rows:
        raise DataError(f"{where}: no examples")
    check_columns(rows, task["columns"], where)
    return rows


def encode(task: dict, rows: list[dict], tokenizer, labels: list[str], max_length: int) -> list[dict]:
    if is_generation_task(task):
        from .generation import encode_generation

        return encode_generation(task, rows, tokenizer, max_length)
    if is_token_task(task):
        return encode_tokens(rows, tokenizer, task["columns"], labels, max_length)
    return encode_classification(rows, tokenizer, task["columns"], labels, max_length)


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
        ex["labels"] = label2id.get(str(r[columns["label"]]), IGNORE)
        ex["row"] = i
        out.append(ex)
    return out


def word_chunks(rows: list[dict], tokenizer, column: str, budget: int) -> list[tuple[int, int, int]]:
    """(row, first word, end word) pieces whose subwords fit in `budget`: a sentence longer than
    the model's window is split between words, so no word is ever dropped."""
    counts = tokenizer([r[column] for r in rows], is_split_into_words=True, add_special_tokens=False)
    pieces = []
    for i, r in enumerate(rows):
        per_word = [0] * len(r[column])
        for w in counts.word_ids(i):
            if w is not None:
                per_word[w] += 1
        start, used = 0, 0
        for w, n in enumerate(per_word):
            n = max(n, 1)
            if used + n > budget and w > start:
                pieces.append((i, start, w))
                start, used = w, 0
            used += n
        pieces.append((i, start, len(per_word)))
    return pieces


def encode_tokens(rows: list[dict], tokenizer, columns: dict, labels: list[str], max_length: int) -> list[dict]:
    """Word-level tags on the first subword of each word; other subwords and special tokens get
    IGNORE, so loss and metrics count each word once."""
    label2id = {name: i for i, name in enumerate(labels)}
    special = len(tokenizer.build_inputs_with_special_tokens([]))
    pieces = word_chunks(rows, tokenizer, columns["tokens"], max_length - special)
    words = [rows[i][columns["tokens"]][a:b] for i, a, b in pieces]
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    out = []
    for j, (i, a, b) in enumerate(pieces):
        tags = rows[i][columns["tags"]][a:b]
        ids, positions, previous = [], [], None
        for pos, w in enumerate(enc.word_ids(j)):
            first = w is not None and w != previous
            ids.append(label2id.get(str(tags[w]), IGNORE) if first else IGNORE)
            if first:
                positions.append(pos)
            previous = w
        ex = {k: enc[k][j] for k in keys}
        ex.update(labels=ids, row=i, first_word=a, n_words=b - a, word_positions=positions)
        out.append(ex)
    return out


def collate(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e["input_ids"]) for e in examples)
    batch = {}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
        if key in examples[0]:
            batch[key] = torch.tensor([e[key] + [fill] * (width - len(e[key])) for e in examples])
    if isinstance(examples[0]["labels"], list):
        batch["labels"] = torch.tensor([e["labels"] + [IGNORE] * (width - len(e["labels"])) for e in examples])
    else:
        batch["labels"] = torch.tensor([e["labels"] for e in examples])
    return batch


def truncated_count(examples: list[dict], max_length: int) -> int:
    """Examples cut at max_length; for token tasks, the extra pieces of sentences split to fit
    (their words are all kept)."""
    if examples and "first_word" in examples[0]:
        return sum(1 for e in examples if e["first_word"] > 0)
    return sum(len(e["input_ids"]) >= max_length for e in examples)
