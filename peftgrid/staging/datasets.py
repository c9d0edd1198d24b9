"""Datasets: read a source (hub id or local files in their original format), stage it under
resources/datasets/<name>/ as one JSON-lines file per split, and read staged splits back.

Staged layout: <split>.jsonl (one record per example, all columns) and meta.json (source,
splits with row counts, columns, class names of hub ClassLabel columns). meta.json is written
last: it is the staging rule's output and marks the folder complete.
"""
from __future__ import annotations

import csv
import io
import json
import os
import random
from pathlib import Path

from ..errors import DataError, first_line
from ..records import atomic_write_text, write_json
from ..staged import META_FILE, load_split, read_jsonl, subsample


# --------------------------------------------------------------------------- local formats

BOM = "\ufeff"


def read_text(path: Path, encoding: str) -> str:
    """A local file's text; a file the encoding cannot decode, or a UTF-8 byte-order mark read as
    text, is one line naming the file and the fix."""
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not {encoding} text (byte {e.object[e.start:e.start + 1]!r} at offset {e.start}); "
                        f"set the dataset's encoding: to the file's encoding (e.g. latin-1, cp1252, utf-16)") from None
    if text.startswith(BOM):
        raise DataError(f"{path}: starts with a byte-order mark ({BOM!r}), which {encoding} keeps as text: "
                        f"set the dataset's encoding: utf-8-sig")
    return text


def read_delimited(path: str | Path, sep: str, header: bool, column_names: list[str] | None,
                   quoting: str = "minimal", encoding: str = "utf-8") -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    quote = csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL
    rows = list(csv.reader(io.StringIO(read_text(path, encoding), newline=""), delimiter=sep, quoting=quote))
    rows = [r for r in rows if r]  # a trailing blank line is not an example
    if header:
        if not rows:
            raise DataError(f"{path}: empty file (expected a header line)")
        names, rows, first_line = rows[0], rows[1:], 2
        if column_names:
            if len(column_names) != len(names):
                raise DataError(f"{path}: column_names has {len(column_names)} names but the header has {len(names)} columns")
            names = column_names
    else:
        if not column_names:
            raise DataError(f"{path}: header is false, so the dataset needs column_names")
        names, first_line = column_names, 1
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: column {repeated[0]!r} is named twice (one would hide the other): rename one, "
                        f"or set column_names")
    records = []
    for i, row in enumerate(rows):
        if len(row) != len(names):
            raise DataError(f"{path} line {i + first_line}: expected {len(names)} fields ({', '.join(names)}) "
                            f"separated by {sep!r}, found {len(row)}")
        records.append(dict(zip(names, row)))
    return records


# The columns a CoNLL-U sentence record has, and CoNLL-U's own field names for them
CONLLU_COLUMNS = ("sent_id", "text", "tokens", "lemmas", "upos", "xpos", "feats", "head", "deprel")
CONLLU_FIELDS = {"form": "tokens", "lemma": "lemmas", "id": "sent_id"}


def conllu_column(name: str) -> str | None:
    """Our column for a CoNLL-U field name or column name (form -> tokens), or None."""
    name = CONLLU_FIELDS.get(name.lower(), name.lower())
    return name if name in CONLLU_COLUMNS else None


def read_conllu(path: str | Path, encoding: str = "utf-8") -> list[dict]:
    """One record per sentence: sent_id, text, tokens (FORM), lemmas, upos, xpos, feats, head, deprel.

    Multi-word token ranges (`1-2`) and empty nodes (`8.1`) are skipped: their words appear as
    ordinary integer-id lines, which is what a tagger labels."""
    import conllu

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    records = []
    with io.StringIO(read_text(path, encoding)) as fh:
        try:
            for i, sentence in enumerate(conllu.parse_incr(fh)):
                words = [t for t in sentence if isinstance(t["id"], int)]
                short = next((t for t in words if "upos" not in t), None)
                if short is not None:
                    raise DataError(f"{path}: not valid CoNLL-U (sentence {i + 1}, word {short['id']} "
                                    f"{short['form']!r} has fewer than the 10 tab-separated columns)")
                records.append({
                    "sent_id": sentence.metadata.get("sent_id", str(i + 1)),
                    "text": sentence.metadata.get("text", " ".join(t["form"] for t in words)),
                    "tokens": [t["form"] for t in words],
                    "upos": [t["upos"] for t in words],
                    "xpos": [t["xpos"] if t["xpos"] is not None else "_" for t in words],
                    "lemmas": [t["lemma"] for t in words],
                    "feats": ["|".join(f"{k}={v}" for k, v in t["feats"].items()) if t["feats"] else "_" for t in words],
                    "head": [str(t["head"]) if t["head"] is not None else "_" for t in words],
                    "deprel": [t["deprel"] or "_" for t in words],
                })
        except conllu.exceptions.ParseException as e:
            raise DataError(f"{path}: not valid CoNLL-U ({first_line(e, typed=False)})") from None
    return records


def read_parallel(paths: dict[str, Path], encoding: str = "utf-8") -> list[dict]:
    """Line-aligned text files, one per language: line i of each file is one example."""
    columns = {}
    for lang, path in paths.items():
        if not Path(path).is_file():
            raise DataError(f"{path}: file not found")
        columns[lang] = read_text(Path(path), encoding).split("\n")
        if columns[lang] and columns[lang][-1] == "":
            columns[lang].pop()  # the final newline ends the last line, it does not start one
    counts = {lang: len(lines) for lang, lines in columns.items()}
    if len(set(counts.values())) > 1:
        raise DataError("parallel files differ in line count: " + ", ".join(f"{paths[l]} {n}" for l, n in counts.items()))
    langs = list(columns)
    return [{lang: columns[lang][i] for lang in langs} for i in range(next(iter(counts.values()), 0))]


TEXT_COLUMN = "text"  # format text stages each document under this column; retention sets read it


def read_lines(path: Path, encoding: str = "utf-8") -> list[dict]:
    """format text: one document per line (column `text`); empty and whitespace-only lines are
    skipped (they separate paragraphs, they are not documents). Line ends are not kept."""
    if not Path(path).is_file():
        raise DataError(f"{path}: file not found")
    lines = read_text(Path(path), encoding).splitlines()
    return [{TEXT_COLUMN: line} for line in lines if line.strip()]


def documents(rows: list[dict], where: str) -> list[str]:
    """The non-empty `text` of staged rows (a hub dataset such as WikiText keeps its blank lines)."""
    if rows and TEXT_COLUMN not in rows[0]:
        raise DataError(f"{where}: no {TEXT_COLUMN!r} column (columns: {', '.join(sorted(rows[0]))}); a retention "
                        f"set reads documents from a {TEXT_COLUMN!r} column: use format: text (one document per line)")
    return [r[TEXT_COLUMN] for r in rows if isinstance(r.get(TEXT_COLUMN), str) and r[TEXT_COLUMN].strip()]


def retention_documents(data_dir: Path, rset: dict) -> list[str]:
    """A retention set's documents (plan/retention.py): the staged split's non-empty `text`,
    `max_examples` of them by the studies' fixed shuffle — what the jobs score and the data check compares."""
    where = f"dataset {rset['dataset']!r} split {rset['split']!r}"
    docs = subsample(documents(load_split(data_dir, rset["split"], rset["dataset"]), where), rset.get("max_examples"))
    if not docs:
        raise DataError(f"{where}: no non-empty text for retention set {rset['name']!r}")
    return docs


def download(url: str, cache_dir: Path) -> Path:
    """Fetch a URL once into cache_dir (staging is the only step allowed on the network)."""
    import hashlib
    import urllib.request

    target = cache_dir / (hashlib.sha256(url.encode()).hexdigest()[:16] + "_" + url.rstrip("/").rsplit("/", 1)[-1])
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        try:
            with urllib.request.urlopen(url, timeout=120) as response, open(tmp, "wb") as fh:
                fh.write(response.read())
        except OSError as e:
            raise DataError(f"{url}: download failed ({e})") from None
        os.replace(tmp, target)
    return target


def local_path(path, base_dir) -> Path:
    """A local path as the config writes it: `~` is the home folder, relative paths start at base_dir
    (the working directory). The parse-time checks and staging both resolve paths here."""
    path = os.path.expanduser(str(path))
    return Path(path) if os.path.isabs(path) else Path(base_dir) / path


def is_url(path) -> bool:
    return str(path).startswith(("http://", "https://"))


def read_local_split(spec: dict, path, base_dir: Path, cache_dir: Path | None = None) -> list[dict]:
    fmt = spec["format"]

    def resolve(p):
        if is_url(p):
            return download(str(p), cache_dir or base_dir / "resources" / "downloads")
        return local_path(p, base_dir)
    if fmt in ("csv", "tsv"):
        sep = spec.get("sep", "," if fmt == "csv" else "\t")
        quoting = spec.get("quoting", "minimal" if fmt == "csv" else "none")
        return read_delimited(resolve(path), sep, spec.get("header", True), spec.get("column_names"),
                              quoting, spec.get("encoding", "utf-8"))
    if fmt == "jsonl":
        path = resolve(path)
        if path.is_file():
            read_text(path, spec.get("encoding", "utf-8"))  # decoding and byte-order mark, with their fixes
        return read_jsonl(path, spec.get("encoding", "utf-8"))
    if fmt == "conllu":
        return read_conllu(resolve(path), spec.get("encoding", "utf-8"))
    if fmt == "parallel":
        return read_parallel({lang: resolve(p) for lang, p in path.items()}, spec.get("encoding", "utf-8"))
    if fmt == "text":
        return read_lines(resolve(path), spec.get("encoding", "utf-8"))
    raise DataError(f"format {fmt!r} is not implemented yet")


# --------------------------------------------------------------------------- hub

def flatten(record: dict, prefix: str = "") -> dict:
    """Nested mappings become dotted columns: opus_books' {"translation": {"en": .., "ru": ..}}
    gives the columns translation.en and translation.ru."""
    out = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def read_hub(spec: dict, name: str = "") -> tuple[dict[str, list[dict]], dict[str, list[str]]]:
    """All splits of a hub dataset, ClassLabel columns turned into their names."""
    import datasets  # slow import: only staging needs it
    from huggingface_hub import HfApi

    offline = ("without the Hub, give local files: datasets.{0}: {{format: csv|tsv|jsonl|conllu|parallel|text, "
               "splits: {{train: path, ...}}}}").format(name or "<name>")
    try:  # one quick probe: datasets.load_dataset would retry for half a minute before failing
        HfApi().dataset_info(spec["source"], revision=spec.get("revision"), timeout=15)
    except Exception as e:
        raise DataError(f"datasets.{name}.source: cannot reach {spec['source']!r} on the Hugging Face Hub "
                        f"({type(e).__name__}); {offline}") from None
    try:
        ds = datasets.load_dataset(spec["source"], spec.get("subset"), revision=spec.get("revision"))
    except (ConnectionError, OSError) as e:
        raise DataError(f"datasets.{name}.source: cannot download {spec['source']!r} ({type(e).__name__}); {offline}") from None
    splits, class_names = {}, {}
    for split, d in ds.items():
        sequences = {}
        for col, feat in d.features.items():
            if isinstance(feat, datasets.ClassLabel):
                class_names[col] = list(feat.names)
            elif isinstance(feat, (datasets.Sequence, list)):
                inner = feat.feature if isinstance(feat, datasets.Sequence) else feat[0]
                if isinstance(inner, datasets.ClassLabel):
                    class_names[col] = sequences[col] = list(inner.names)
        rows = [flatten(r) for r in d.to_list()]
        for col, names in class_names.items():
            for r in rows:
                if col in sequences:
                    r[col] = [names[v] for v in r[col]]
                else:
                    # GLUE test sets carry label -1 (hidden): keep it as None, not a wrong name
                    r[col] = names[r[col]] if r.get(col, -1) is not None and r[col] >= 0 else None
        splits[split] = rows
    return splits, class_names


# --------------------------------------------------------------------------- staging

def declared_splits(spec: dict) -> set[str] | None:
    """The splits a dataset will have once staged, as its config declares them (local files: the
    `splits` keys, carved by `split_ratio` as carve_splits does); None for a hub dataset (known
    only at staging)."""
    if spec.get("format", "hub" if "source" in spec else None) == "hub" or "splits" not in spec:
        return None
    splits = set(spec["splits"])
    ratio = spec.get("split_ratio")
    source = carved_split(list(spec["splits"])) if ratio else None
    return (splits - {source}) | set(ratio) if source else splits


def carved_split(names: list[str]) -> str | None:
    """The split `split_ratio` carves: the only one, or `train` when there are several; None: neither."""
    return names[0] if len(names) == 1 else "train" if "train" in names else None


def carve_splits(splits: dict[str, list[dict]], ratio: dict[str, float], seed: int) -> dict[str, list[dict]]:
    """Split one source split (carved_split) into the named fractions (a fixed shuffle); the others
    are kept as they are — e.g. CoLA's train carved into train + selection, its one labelled dev
    set kept for reporting."""
    source = carved_split(list(splits))
    if source is None:
        raise DataError(f"split_ratio carves one split: the only one, or 'train'; found {', '.join(splits)}")
    clash = sorted(set(ratio) & (set(splits) - {source}))
    if clash:
        raise DataError(f"split_ratio: {clash[0]!r} is already a split of this dataset")
    rows = splits[source]
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    out, start = {k: v for k, v in splits.items() if k != source}, 0
    names = list(ratio)
    for i, name in enumerate(names):
        end = len(rows) if i == len(names) - 1 else start + round(ratio[name] * len(rows))
        out[name] = [rows[j] for j in order[start:end]]
        start = end
    return out


def split_key(name: str, spec: dict, split: str) -> str:
    """The config key of the file(s) a staged split comes from (a carved split: its source's)."""
    files = spec.get("splits", {})
    if split in files:
        return f"datasets.{name}.splits.{split}"
    return f"datasets.{name}.split_ratio" if files else f"datasets.{name}.source"


def source_files(spec: dict, split: str) -> str:
    files = spec.get("splits", {})
    entry = files.get(split) if split in files else next(iter(files.values()), None) if len(files) == 1 else None
    if entry is None:
        return ""
    return f" ({', '.join(map(str, entry.values())) if isinstance(entry, dict) else entry})"


def read_local_splits(name: str, spec: dict, base_dir, cache_dir: Path | None = None) -> dict[str, list[dict]]:
    """Every split of a local dataset as staging stores it (read, then carved by split_ratio); a
    reading error names the config key as well as the file."""
    splits = {}
    for split, path in spec["splits"].items():
        try:
            splits[split] = read_local_split(spec, path, Path(base_dir), cache_dir)
        except DataError as e:
            raise DataError(f"datasets.{name}.splits.{split}: {e}") from None
    if "split_ratio" in spec:
        try:
            splits = carve_splits(splits, spec["split_ratio"], spec.get("split_seed", 0))
        except DataError as e:
            raise DataError(f"datasets.{name}.{e}") from None
    return splits


def stage_dataset(name: str, spec: dict, out_dir: str | Path, base_dir: str | Path = ".") -> dict:
    out_dir, base_dir = Path(out_dir), Path(base_dir)
    class_names: dict[str, list[str]] = {}
    if spec["format"] == "hub":
        splits, class_names = read_hub(spec, name)
    else:
        cache = out_dir.parent.parent / "downloads"  # resources/downloads
        splits = read_local_splits(name, spec, base_dir, cache)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"name": name, "source": spec, "splits": {}, "columns": {}, "class_names": class_names}
    for split, rows in splits.items():
        if not rows:
            raise DataError(f"{split_key(name, spec, split)}: split {split!r} is empty{source_files(spec, split)}")
        atomic_write_text(out_dir / f"{split}.jsonl",
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        meta["splits"][split] = len(rows)
        meta["columns"][split] = sorted({k for r in rows for k in r})
    write_json(out_dir / META_FILE, meta)
    return meta
