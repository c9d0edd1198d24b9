"""Bad input, table-driven: each case gives a one-line error naming the key or file, and no
training starts (no run.json, no model)."""
import copy

import pytest

from conftest import EMOTION, stage_emotion
from peftgrid.config import ConfigError, validate_config
from peftgrid.data import DataError, stage_dataset
from peftgrid.methods import MethodError
from peftgrid.models import ModelError, stage_model
from peftgrid.training import train_cell
from test_config import BASE
from test_training import cell_params



def config_case(edit):
    def run(ctx):
        c = copy.deepcopy(BASE)
        edit(c)
        validate_config(c)
    return run


def stage_case(spec_fn):
    def run(ctx):
        stage_dataset("d", spec_fn(ctx["tmp"]), ctx["tmp"] / "staged" / "d")
    return run


def train_case(prepare):
    """Stage a (possibly broken) dataset, then train a cell on it."""
    def run(ctx):
        params, data_dirs, checks = prepare(ctx)
        train_cell(params, ctx["model"], data_dirs, ctx["out"], checks)
    return run


def write(tmp, name, text):
    path = tmp / name
    path.write_text(text)
    return str(path)


def emotion_staged(ctx, **task_changes):
    stage_emotion(ctx["tmp"] / "emo", "train", "validation")
    params = cell_params(ctx["model"], "full")
    params["task"].update(task_changes)
    return params, {"emo": ctx["tmp"] / "emo"}


def wrong_column(ctx):
    params, dirs = emotion_staged(ctx, columns={"text": "sentence", "label": "label"})
    return params, dirs, None


def unseen_eval_label(ctx):
    params, dirs = emotion_staged(ctx)
    stage_dataset("other", {"format": "jsonl", "splits": {"test": write(ctx["tmp"], "o.jsonl", '{"text": "x", "label": "calm"}\n')}},
                  ctx["tmp"] / "other")
    return params, {**dirs, "other": ctx["tmp"] / "other"}, {"zero_shot": {"dataset": "other", "split": "test"}}


def missing_eval_split(ctx):
    params, dirs = emotion_staged(ctx)
    return params, dirs, {"test": {"dataset": "emo", "split": "test"}}


def labels_not_in_config(ctx):
    params, dirs = emotion_staged(ctx, labels=["joy", "sadness"])
    return params, dirs, None


def empty_text(ctx):
    stage_dataset("emo", {"format": "jsonl", "splits": {"train": write(ctx["tmp"], "e.jsonl", '{"text": null, "label": "joy"}\n')}},
                  ctx["tmp"] / "emo")
    return cell_params(ctx["model"], "full"), {"emo": ctx["tmp"] / "emo"}, None


def model_folder(ctx, files):
    folder = ctx["tmp"] / "m"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return {"source": str(folder)}


CASES = [
    # ---- config (parse time)
    ("config: unknown top-level key", config_case(lambda c: c.update(trainig={})), ConfigError, "unknown key 'trainig'"),
    ("config: wrong type", config_case(lambda c: c["training"].update(batch_size="32")), ConfigError, "training.batch_size"),
    ("config: exponent without a dot", config_case(lambda c: c["methods"]["lora"].update(lr="5e-4")), ConfigError, "methods.lora.lr"),
    ("config: name with a slash", config_case(lambda c: c["methods"].update({"lo/ra": {}})), ConfigError, "'lo/ra' is not allowed"),
    ("config: unknown method in experiment", config_case(lambda c: c["experiments"][0]["methods"].append("dora")), ConfigError, "unknown method 'dora'"),
    ("config: empty sweep", config_case(lambda c: c["experiments"][0]["sweep"].update(lora={"r": []})), ConfigError, "sweep.lora.r"),
    ("config: duplicate seed", config_case(lambda c: c["experiments"][0].update(seeds=[1, 1])), ConfigError, "seed is listed twice"),
    ("config: duplicate sweep value", config_case(lambda c: c["experiments"][0]["sweep"].update(lora={"r": [4, 4]})), ConfigError, "listed twice"),
    ("config: unknown metric", config_case(lambda c: c["tasks"]["emotion"].update(metrics=["bleu"])), ConfigError, "unknown metric 'bleu'"),
    ("config: unknown model", config_case(lambda c: c["tasks"]["emotion"].update(model="gpt9")), ConfigError, "unknown model 'gpt9'"),
    ("config: method key of another kind", config_case(lambda c: c["methods"]["lora"].update(num_virtual_tokens=4)), ConfigError, "methods.lora.num_virtual_tokens"),
    ("config: method not supported for the task", config_case(lambda c: (
        c["tasks"]["emotion"].update(type="token_classification", columns={"tokens": "t", "tags": "g"}),
        c["methods"].update(prompt_tuning={}), c["experiments"][0]["methods"].append("prompt_tuning"))),
        ConfigError, "cannot train task 'emotion'"),
    # ---- data
    ("data: missing file", stage_case(lambda t: {**EMOTION, "splits": {"train": str(t / "nope.txt")}}), DataError, "nope.txt: file not found"),
    ("data: unreadable row", stage_case(lambda t: {**EMOTION, "splits": {"train": write(t, "x.txt", "ok;joy\nno separator\n")}}),
     DataError, "x.txt line 2: expected 2 fields"),
    ("data: empty split", stage_case(lambda t: {**EMOTION, "splits": {"train": write(t, "e.txt", "")}}), DataError, "split 'train' is empty"),
    ("data: bad JSON line", stage_case(lambda t: {"format": "jsonl", "splits": {"train": write(t, "x.jsonl", '{"a": 1}\n{bad\n')}}),
     DataError, "x.jsonl line 2: not valid JSON"),
    ("data: bad CoNLL-U", stage_case(lambda t: {"format": "conllu", "splits": {"train": write(t, "x.conllu", "1\tonly\tthree\n\n")}}),
     DataError, "x.conllu: not valid CoNLL-U"),
    ("data: header/column_names mismatch", stage_case(lambda t: {"format": "csv", "column_names": ["a"], "splits": {"train": write(t, "h.csv", "x,y\n1,2\n")}}),
     DataError, "column_names has 1 names but the header has 2 columns"),
    ("data: wrong column", train_case(wrong_column), DataError, "no column 'sentence' (columns.text)"),
    ("data: unseen eval label", train_case(unseen_eval_label), DataError, "labels 'calm' never occur in training"),
    ("data: eval split missing", train_case(missing_eval_split), DataError, "has no split 'test'"),
    ("data: labels missing from tasks.labels", train_case(labels_not_in_config), DataError, "not in tasks.labels: anger"),
    ("data: empty text field", train_case(empty_text), DataError, "column 'text' (columns.text) is empty"),
    # ---- models
    ("model: missing path", lambda ctx: stage_model("m", {"source": str(ctx["tmp"] / "no_model")}, ctx["tmp"] / "out"),
     ModelError, "no_model: no such file or directory"),
    ("model: not a model folder", lambda ctx: stage_model("m", model_folder(ctx, {"notes.txt": "hi"}), ctx["tmp"] / "out"),
     ModelError, "not a model folder (no config.json)"),
    ("model: pickle weights only", lambda ctx: stage_model("m", model_folder(ctx, {"config.json": "{}", "pytorch_model.bin": "x"}), ctx["tmp"] / "out"),
     ModelError, "allow_pickle"),
    ("model: package not installed", lambda ctx: stage_model("m", {"source": "package:no_such_pkg/model"}, ctx["tmp"] / "out"),
     ModelError, "package 'no_such_pkg' is not installed"),
]


@pytest.mark.parametrize("name, run, error, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_trains_nothing(tiny_bert, tmp_path, name, run, error, fragment):
    ctx = {"tmp": tmp_path, "model": tiny_bert, "out": tmp_path / "cell"}
    with pytest.raises(error) as err:
        run(ctx)
    message = str(err.value)
    assert fragment in message, message
    assert "\n" not in message
    assert not (ctx["out"] / "run.json").exists() and not (ctx["out"] / "model").exists()


def test_method_that_cannot_run_here_is_recorded_before_training(tiny_bert, tmp_path):
    stage_emotion(tmp_path / "emo", "train")
    params = cell_params(tiny_bert, "qlora")
    params["task"].pop("validation", None)
    record = train_cell(params, tiny_bert, {"emo": tmp_path / "emo"}, tmp_path / "cell")
    assert record["status"] == "failed" and "needs a CUDA GPU" in record["error"]
    assert "\n" not in record["error"] and "trainable_params" not in record["stats"]  # no model was even loaded
    with pytest.raises(MethodError):
        from peftgrid.methods import check_device
        import torch
        check_device("qlora", torch.device("cpu"))


def test_no_secret_reaches_the_records(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    stage_emotion(tmp_path / "emo", "train", "validation")
    train_cell(cell_params(tiny_bert, "lora", lr=5.0e-3), tiny_bert, {"emo": tmp_path / "emo"}, tmp_path / "cell")
    for path in (tmp_path / "cell").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".tsv", ".md"):
            assert "hf_secret_value_123" not in path.read_text(errors="ignore"), path


def test_no_remote_code_anywhere():
    from conftest import REPO

    for path in list((REPO / "peftgrid").glob("*.py")) + list((REPO / "scripts").glob("*.py")):
        text = path.read_text()
        assert "trust_remote_code=True" not in text, path
        assert "weights_only=False" not in text, path
