"""Every local path a config names, checked when the workflow is parsed: a missing file, folder
or `package:` model, or a model folder staging would refuse (no config.json, no safetensors), is
one config error naming the key and the path, before any job starts.
Relative paths are relative to the working directory and `~` is the home folder, as staging reads
them (staging.datasets.local_path).

`check_local_data` then reads the local data files the tasks use (not CoNLL-U, URLs or files over
`PEEK_LIMIT_BYTES`: the data check job reads those before any training) exactly as staging and the
data check will, so a column typo, a blank label or an eval label training never sees is found at
parse time with the key and the file."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError, DataError, ModelError, did_you_mean
from ..metrics import check_settings
from ..staged import check_columns, subsample
from ..staging.datasets import documents, is_url, local_path, read_local_splits, source_files
from ..staging.models import check_model_folder, resolve_local_source
from ..tasks import task_type
from .splits import check_split_declared, task_reads

PEEK_LIMIT_BYTES = 64 << 20  # larger files are read by the data check job only (parse time stays seconds)
PEEK_FORMATS = ("csv", "tsv", "jsonl", "parallel")


def _files(ds: dict):
    """(split, language or None, path) of every file a local dataset names."""
    for split, entry in ds.get("splits", {}).items():
        for lang, path in (entry.items() if isinstance(entry, dict) else [(None, entry)]):
            yield split, lang, path


def check_local_paths(config: dict, base_dir: str | Path = ".") -> None:
    base_dir = Path(base_dir)
    for name, ds in config["datasets"].items():
        for split, lang, path in _files(ds):
            if is_url(path):
                continue
            full = local_path(path, base_dir)
            if not full.is_file():
                key = f"datasets.{name}.splits.{split}" + (f".{lang}" if lang else "")
                what = "a folder, not a file" if full.is_dir() else "no such file"
                where = (f"{path} is {full}" if str(path).startswith("~")
                         else f"relative paths start at the working directory {base_dir.resolve()}")
                raise ConfigError(f"{key}: {path}: {what} ({where})")
    for name, model in config["models"].items():
        source = model["source"]
        try:
            local = resolve_local_source(source, base_dir)
            if local is not None and local.is_dir():  # what staging refuses, refused now
                check_model_folder(local, model["allow_pickle"], source)
            elif local is not None and local.suffix != ".gguf":
                raise ModelError(f"{source}: expected a model folder (config.json + *.safetensors) or a .gguf file")
        except ModelError as e:
            raise ConfigError(f"models.{name}.source: {e}") from None
        except (ImportError, ValueError) as e:  # find_spec imports the parent package of a dotted name
            raise ConfigError(f"models.{name}.source: {source}: the package cannot be imported "
                              f"({type(e).__name__}: {e}); write package:<installed module>/<folder>") from None
    check_settings(config, base_dir)  # e.g. bertscore's local encoder
    comet = config.get("comet")
    if comet and str(comet["source"]).startswith((".", "/", "~")) and not Path(os.path.expanduser(comet["source"])).exists():
        raise ConfigError(f"comet.source: {comet['source']}: no such file or directory")


def _peekable(ds: dict, base_dir: Path) -> bool:
    return ds["format"] in PEEK_FORMATS and all(
        not is_url(p) and local_path(p, base_dir).stat().st_size <= PEEK_LIMIT_BYTES for _, _, p in _files(ds))


def check_local_data(config: dict, base_dir: str | Path = ".") -> None:
    """What the data check job checks, done now for the local files it can read quickly."""
    base_dir = Path(base_dir)
    datasets = config["datasets"]
    splits_of = {}  # dataset -> its rows per split (None: not read at parse time), each dataset read once

    def rows_of(name):
        if name not in splits_of:
            try:
                splits_of[name] = read_local_splits(name, datasets[name], base_dir) if _peekable(datasets[name], base_dir) else None
            except DataError as e:
                raise ConfigError(str(e)) from None
        return splits_of[name]

    for tname, task in config["tasks"].items():
        _check_splits_declared(tname, task, datasets)
        _check_parallel_columns(tname, task, datasets)
        _check_not_training_files(tname, task, datasets, base_dir)
        where = f"tasks.{tname}"
        ttype = task_type(task["type"])
        labels = None
        for read in task_reads(task):  # training first: its labels are what the others are checked against
            key, ds, split, limit = f"{where}.{read.key}", read.dataset, read.split, read.max_examples
            splits = rows_of(ds)
            if splits is None:
                if read.role == "train":
                    break  # labels come from training: without its rows the rest waits for the data check
                continue
            if split not in splits:
                raise ConfigError(f"{key}: dataset {ds!r} has no split {split!r}{did_you_mean(split, splits)}")
            file = source_files(datasets[ds], split)
            rows = subsample(splits[split], limit)
            if not rows:
                raise ConfigError(f"{key}: split {split!r} of dataset {ds!r} has no rows{file}")
            what = f"dataset {ds!r} split {split!r}{file}"
            _check_columns(where, task, rows, what)
            try:
                ttype.check_rows(task, rows, what)  # the task type's own checks: blank labels, tags per word
            except DataError as e:
                raise ConfigError(f"{where}: {e}") from None
            try:
                if read.role == "train":
                    labels = ttype.label_list(task, rows, {})  # training labels missing from tasks.labels
                else:
                    ttype.check_labels(task, rows, labels, f"{key}{file}")  # eval labels training never sees
            except DataError as e:
                raise ConfigError(f"{where}.labels: {e}{file}" if read.role == "train" else str(e)) from None
        _check_retention_text(where, task, rows_of)


def _check_retention_text(where: str, task: dict, rows_of) -> None:
    """Each retention set's split exists and has documents (the data check reads them the same way)."""
    for name, entry in (task.get("retention") or {}).items():
        splits = rows_of(entry["dataset"])
        if splits is None:
            continue
        key, what = f"{where}.retention.{name}", f"dataset {entry['dataset']!r} split {entry['split']!r}"
        if entry["split"] not in splits:
            raise ConfigError(f"{key}.split: dataset {entry['dataset']!r} has no split {entry['split']!r}"
                              f"{did_you_mean(entry['split'], splits)}")
        try:
            if not documents(splits[entry["split"]], what):
                raise DataError(f"{what}: no non-empty text")
        except DataError as e:
            raise ConfigError(f"{key}.dataset: {e}") from None


def _check_columns(where: str, task: dict, rows: list[dict], what: str) -> None:
    present = list(rows[0])
    for role, column in task["columns"].items():
        if column in rows[0]:
            continue
        near = [p for p in present if p.strip().lstrip("\ufeff") == column.strip()]
        glued = [sep for sep in ("\t", ";", ",", "|") if len(present) == 1 and sep in present[0]]
        hint = (f"; the file's column is {near[0]!r} (invisible characters differ): fix the header or write "
                f"columns.{role}: {near[0]!r}") if near else (
                f"; the header looks separated by {glued[0]!r}: set the dataset's sep: {glued[0]!r}") if glued else \
            did_you_mean(column, present)
        raise ConfigError(f"{where}.columns.{role}: {what} has no column {column!r}; its columns are "
                          f"{', '.join(map(repr, present))}{hint}")
    try:
        check_columns(rows, task["columns"], what)  # a row without a value in a mapped column
    except DataError as e:
        raise ConfigError(f"{where}: {e}") from None


def _check_splits_declared(tname: str, task: dict, datasets: dict) -> None:
    for read in task_reads(task):
        check_split_declared(f"tasks.{tname}.{read.split_key}", read.dataset, datasets[read.dataset], read.split)


def _check_parallel_columns(tname: str, task: dict, datasets: dict) -> None:
    """A parallel dataset's columns are its languages, known from the config."""
    ds = datasets[task["dataset"]]
    if ds["format"] != "parallel":
        return
    langs = {lang for _, lang, _ in _files(ds)}
    for role, column in task["columns"].items():
        if column not in langs:
            raise ConfigError(f"tasks.{tname}.columns.{role}: dataset {task['dataset']!r} has no language {column!r}"
                              f"{did_you_mean(column, langs)}")


def _check_not_training_files(tname: str, task: dict, datasets: dict, base_dir: Path) -> None:
    """An eval set whose file is the training file (under another dataset or split name) reports a
    score on training data."""
    train_ds = datasets[task["dataset"]]
    entry = train_ds.get("splits", {}).get(task["train_split"])
    if entry is None or isinstance(entry, dict) or is_url(entry) or "split_ratio" in train_ds:
        return
    train_file = local_path(entry, base_dir).resolve()
    for ename, ev in task["eval"].items():
        ds = datasets[ev["dataset"]]
        other = ds.get("splits", {}).get(ev["split"])
        if isinstance(other, str) and not is_url(other) and "split_ratio" not in ds \
                and local_path(other, base_dir).resolve() == train_file:
            raise ConfigError(f"tasks.{tname}.eval.{ename}: reads {other}, the training file: a score on training data "
                              f"is no test score; evaluate on another file")
