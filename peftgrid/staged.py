"""Reading what staging wrote under resources/datasets/<name>/: <split>.jsonl and meta.json.
Every job reads data through here; only staging (peftgrid.staging) writes it."""
from __future__ import annotations

import json
import random
from pathlib import Path

from .errors import DataError

META_FILE = "meta.json"  # a staged dataset's description, written last (staging/datasets.py)


def read_jsonl(path: str | Path, encoding: str = "utf-8") -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    records = []
    with open(path, encoding=encoding) as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {i}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path} line {i}: expected a JSON object per line")
            records.append(rec)
    return records


def staged_meta(data_dir: str | Path) -> dict:
    with open(Path(data_dir) / META_FILE) as fh:
        return json.load(fh)


def load_split(data_dir: str | Path, split: str, dataset_name: str | None = None) -> list[dict]:
    data_dir = Path(data_dir)
    meta = staged_meta(data_dir)
    if split not in meta["splits"]:
        raise DataError(f"dataset {dataset_name or meta['name']!r} has no split {split!r} "
                        f"(splits: {', '.join(meta['splits'])})")
    return read_jsonl(data_dir / f"{split}.jsonl")


def subsample(rows: list[dict], n: int | None) -> list[dict]:
    """The first n after a fixed shuffle: every cell of a study sees the same examples."""
    if n is None or n >= len(rows):
        return rows
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    return [rows[i] for i in sorted(order[:n])]


def check_columns(rows: list[dict], columns: dict[str, str], where: str) -> None:
    present = set(rows[0]) if rows else set()
    for role, col in columns.items():
        if col not in present:
            raise DataError(f"{where}: no column {col!r} (columns.{role}); columns are {', '.join(sorted(present))}")
    for i, r in enumerate(rows):
        for role, col in columns.items():
            if r.get(col) is None:
                raise DataError(f"{where} row {i + 1}: column {col!r} (columns.{role}) is empty")
