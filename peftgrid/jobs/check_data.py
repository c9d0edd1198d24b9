"""A task's data checked before any cell trains: the training split, the label set, every eval
set (columns, empty splits, labels the model will never see), the selection set, and leakage by
content. Its output marks the task's data good; every training job waits for all of them, so a bad
file anywhere stops the study while nothing has trained.

Leakage is judged by content, not by names: a set declared twice under two dataset names, two
hub entries with one source, or a `split_ratio` carved from a file that is also reported all
pass a name check. The staged split files are compared by sha256 and their rows by the hash of
the text the model reads; training and the selection set are each compared with every reported
eval set. A retention set (plan/retention.py) is compared the same way with every set the task
reads, by every text the task's rows hold (inputs and targets): a model scored on text it was
trained or evaluated on would show no forgetting."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from ..errors import DataError
from ..plan.specs import CheckDataSpec
from ..plan.splits import SplitRead, task_reads
from ..records import write_json
from ..staged import load_split, staged_meta
from ..staging.datasets import retention_documents
from ..staging.models import file_record
from ..tasks import task_type

# The columns a model reads (task types' column roles); labels and targets repeat across sets by nature.
INPUT_ROLES = ("text", "text_pair", "tokens", "source")
# Largest share of the smaller set's rows whose input text may also occur in the other set. Real
# splits repeat a few short inputs by chance (measured: emotion train/test 0.6%, CoLA train/dev
# 1.1%, UD English-EWT train/test 4.5% — "Thank you.", "-"); a set carved from the same file
# shares all of them.
LEAK_SHARE = 0.2


def check_task_data(spec: CheckDataSpec, data_dirs: dict[str, Path], out: Path) -> dict:
    task = spec.data
    ttype = task_type(task["type"])
    labels, counts = None, {}
    for read in task_reads(task):  # training first: the others' labels are checked against its own
        if read.role == "selection":
            _check_default_split(spec.task, task["selection"], data_dirs[read.dataset])
        rows = ttype.load_rows(task, data_dirs[read.dataset], read.split, read.max_examples, read.dataset)
        if read.role == "train":
            labels = ttype.label_list(task, rows, staged_meta(data_dirs[read.dataset]))
        else:
            ttype.check_labels(task, rows, labels, f"tasks.{spec.task}.{read.key}")
        counts[read.name or read.role] = len(rows)
    overlaps = check_leakage(spec.task, task, data_dirs)
    shared, documents = check_retention_overlap(spec.task, task, data_dirs)
    overlaps.update(shared)
    counts.update({f"retention {name}": n for name, n in documents.items()})
    summary = {"task": spec.task, "examples": counts, "labels": labels, "shared_inputs": overlaps}
    write_json(out, summary)
    return summary


def _check_default_split(name: str, selection: dict, data_dir: Path) -> None:
    """The default selection set (the dataset's `validation` split) is assumed for a hub dataset."""
    splits = staged_meta(data_dir)["splits"]
    if selection.get("default") and selection["split"] not in splits:
        d = selection["dataset"]
        raise DataError(f"tasks.{name}.validation: dataset {d!r} has no split {selection['split']!r} (its splits: "
                        f"{', '.join(splits)}), the default selection set: write tasks.{name}.validation: null "
                        f"(nothing is then chosen), or carve one from train: datasets.{d}.split_ratio: "
                        f"{{train: 0.9, validation: 0.1}}")


def _described(what: str, dataset: str, split: str) -> str:
    return f"{what} (dataset {dataset!r}, split {split!r})"


def _read_described(name: str, read: SplitRead) -> str:
    what = {"train": "the training split", "selection": f"the selection set (tasks.{name}.validation)"}.get(read.role)
    return _described(what or f"reported eval set {read.name!r}", read.dataset, read.split)


def check_leakage(name: str, task: dict, data_dirs: dict[str, Path]) -> dict[str, int]:
    """Refuse (DataError naming both sets) when training or the unreported selection set has the
    content of a reported eval set, or the selection set has the training data's (choices would
    reward fitting the training data): the same staged file, or more than LEAK_SHARE of the smaller
    set's inputs. Returns the number of shared inputs per compared pair, for the record."""
    reads = task_reads(task)
    reported = [(_read_described(name, r), r.dataset, r.split) for r in reads if r.role == "eval"]
    sources = [(_read_described(name, r), r.dataset, r.split) for r in reads if r.role != "eval"]  # training first
    columns = [task["columns"][role] for role in INPUT_ROLES if role in task["columns"]]
    inputs: dict[tuple, list[bytes]] = {}

    def hashes(dataset: str, split: str) -> list[bytes]:
        if (dataset, split) not in inputs:
            rows = load_split(data_dirs[dataset], split, dataset)
            inputs[(dataset, split)] = [hashlib.sha256(json.dumps([r.get(c) for c in columns], ensure_ascii=False)
                                                       .encode()).digest() for r in rows]
        return inputs[(dataset, split)]

    digests: dict[tuple, str] = {}

    def sha256(dataset: str, split: str) -> str:  # each staged split hashed once
        if (dataset, split) not in digests:
            digests[(dataset, split)] = file_record(Path(data_dirs[dataset]) / f"{split}.jsonl")["sha256"]
        return digests[(dataset, split)]

    pairs = [(s, t) for s in sources for t in reported]
    if len(sources) > 1:  # the selection set against the training data
        pairs.append((sources[1], sources[0]))
    shared = {}
    for (source, sd, ss), (target, td, ts) in pairs:
        if sha256(sd, ss) == sha256(td, ts):
            raise DataError(f"tasks.{name}: {source} and {target} are the same file (sha256 of the staged splits): "
                            f"a score on it is not a held-out result; point one of them at other data")
        shared[f"{source} | {target}"] = refuse_shared(name, source, target, hashes(sd, ss), hashes(td, ts))
    return shared


def refuse_shared(name: str, source: str, target: str, a: list[bytes], b: list[bytes],
                  what: str = "a score on it is not a held-out result") -> int:
    """The number of the smaller set's items whose hash the other set has; DataError naming both
    sets when it is more than LEAK_SHARE of them."""
    small, large = (a, set(b)) if len(a) <= len(b) else (b, set(a))
    count = sum(h in large for h in small)
    if count > LEAK_SHARE * len(small):
        raise DataError(f"tasks.{name}: {source} and {target} share {count} of {len(small)} inputs "
                        f"({count / len(small):.0%}; chance repeats stay under {LEAK_SHARE:.0%}): {what}; "
                        f"point one of them at data the other does not contain")
    return count


# The columns whose text the task's rows hold: what the model reads and what it is taught to write
TEXT_ROLES = INPUT_ROLES + ("target",)


def _text_hash(value) -> bytes:
    text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
    return hashlib.sha256(text.strip().encode()).digest()


def check_retention_overlap(name: str, task: dict, data_dirs: dict[str, Path]) -> tuple[dict[str, int], dict[str, int]]:
    """Refuse a retention set whose documents are the task's own data: the same staged file as a
    split the task reads, or more than LEAK_SHARE of its documents equal to a text of one (any
    input or target column, compared stripped). Returns the shared documents per compared pair and
    each set's document count. Each split the task reads is hashed and read once, whatever the sets."""
    reads = task_reads(task)
    columns = [task["columns"][role] for role in TEXT_ROLES if role in task["columns"]]
    sha256 = functools.cache(lambda dataset, split: file_record(Path(data_dirs[dataset]) / f"{split}.jsonl")["sha256"])
    texts_of = functools.cache(lambda dataset, split: [_text_hash(r[c]) for r in load_split(data_dirs[dataset], split, dataset)
                                                       for c in columns if c in r])
    shared, counts = {}, {}
    for set_name, rset in (task.get("retention") or {}).items():
        label = _described(f"retention set {set_name!r}", rset["dataset"], rset["split"])
        docs = [_text_hash(d) for d in retention_documents(data_dirs[rset["dataset"]], {"name": set_name, **rset})]
        counts[set_name] = len(docs)
        own = sha256(rset["dataset"], rset["split"])
        for read in reads:
            target, dataset, split = _read_described(name, read), read.dataset, read.split
            if own == sha256(dataset, split):
                raise DataError(f"tasks.{name}: {label} and {target} are the same file (sha256 of the staged splits): "
                                f"retention would be measured on the task's own data; point the retention set at "
                                f"general text the task does not read")
            shared[f"{label} | {target}"] = refuse_shared(name, label, target, docs, texts_of(dataset, split),
                                                          "retention would be measured on the task's own data")
    return shared, counts
