"""Bad input, table-driven: each case gives a one-line error naming the key or file, and no
training starts (no run.json, no model). Eval sets are checked by the data-check job, which
every training job waits for: through the workflow a bad eval set fails that job and no cell trains."""
import copy

import pytest

from conftest import EMOTION, REPO, run_snakemake, shared, stage_emotion, write_config
from peftgrid.errors import CellFailure, ConfigError, DataError, ModelError
from peftgrid.jobs.check_data import check_task_data
from peftgrid.jobs.train import train_cell
from peftgrid.methods import method_of
from peftgrid.plan import build_run_table, validate_config
from peftgrid.plan.specs import check_data_spec, train_spec
from peftgrid.staging.datasets import stage_dataset
from peftgrid.staging.models import stage_model
from test_config import BASE


@pytest.fixture(scope="module")
def staged_model(tiny_bert, tmp_path_factory):
    """The tiny BERT as the stage_model rule leaves it (train_cell reads only staged models)."""
    out = tmp_path_factory.mktemp("staged_model") / "tiny"
    stage_model("tiny", {"source": str(tiny_bert)}, out)
    return out


def study(method="full", task_extra=None, eval_sets=None, **overrides):
    """A validated one-cell config (emotion on dataset emo, the tiny model) and its cell."""
    task = {"type": "sequence_classification", "model": "tiny", "dataset": "emo",
            "columns": {"text": "text", "label": "label"},
            "eval": eval_sets or {"validation": {"split": "validation"}},
            "max_examples": {"train": 256}, **(task_extra or {})}
    config = validate_config({
        "models": {"tiny": {"source": "/unused/tiny"}},
        "datasets": {"emo": {"format": "csv", "splits": {"train": "x", "validation": "v", "test": "t"}},
                     "other": {"format": "jsonl", "splits": {"test": "y"}}},
        "tasks": {"emotion": task},
        "training": {"epochs": 1, "batch_size": 16, "eval_every_steps": 4},
        "methods": {method: overrides},
        "experiments": [{"tasks": ["emotion"], "methods": [method], "seeds": [1]}],
    })
    (cell,) = build_run_table(config)
    return config, cell


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
        (config, cell), data_dirs = prepare(ctx)
        train_cell(train_spec(config, cell), ctx["model"], data_dirs, ctx["out"])
    return run


def check_case(prepare):
    """Stage the data, then run the task's data check (the job every training job waits for)."""
    def run(ctx):
        (config, cell), data_dirs = prepare(ctx)
        check_task_data(check_data_spec(config, cell.task), data_dirs, ctx["tmp"] / "checks" / "emotion.json")
    return run


def write(tmp, name, text):
    path = tmp / name
    path.write_text(text)
    return str(path)


def emotion_dirs(ctx):
    stage_emotion(ctx["tmp"] / "emo", "train", "validation")
    return {"emo": ctx["tmp"] / "emo"}


def wrong_column(ctx):
    return study(task_extra={"columns": {"text": "sentence", "label": "label"}}), emotion_dirs(ctx)


def unseen_eval_label(ctx):
    dirs = emotion_dirs(ctx)
    stage_dataset("other", {"format": "jsonl", "splits": {"test": write(ctx["tmp"], "o.jsonl", '{"text": "x", "label": "calm"}\n')}},
                  ctx["tmp"] / "other")
    evals = {"validation": {"split": "validation"}, "zero_shot": {"dataset": "other", "split": "test"}}
    return study(eval_sets=evals), {**dirs, "other": ctx["tmp"] / "other"}


def missing_eval_split(ctx):
    evals = {"validation": {"split": "validation"}, "test": {"split": "test"}}
    return study(eval_sets=evals), emotion_dirs(ctx)


def labels_not_in_config(ctx):
    return study(task_extra={"labels": ["joy", "sadness"]}), emotion_dirs(ctx)


def empty_text(ctx):
    stage_dataset("emo", {"format": "jsonl", "splits": {"train": write(ctx["tmp"], "e.jsonl", '{"text": null, "label": "joy"}\n')}},
                  ctx["tmp"] / "emo")
    return study(task_extra={"validation": None}), {"emo": ctx["tmp"] / "emo"}


def blank_label(ctx):
    """A hub dataset is not read at parse time: its blank label is found by the data check."""
    rows = '{"text": "yay", "label": "joy"}\n{"text": "meh", "label": " "}\n'
    stage_dataset("emo", {"format": "jsonl", "splits": {"train": write(ctx["tmp"], "b.jsonl", rows)}}, ctx["tmp"] / "emo")
    return study(task_extra={"validation": None}), {"emo": ctx["tmp"] / "emo"}


def model_folder(ctx, files):
    folder = ctx["tmp"] / "m"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return {"source": str(folder)}


CASES = [
    # ---- config (parse time)
    ("config: unknown top-level key", config_case(lambda c: c.update(trainig={})), ConfigError,
     "trainig: unknown key — did you mean 'training'?"),
    ("config: wrong type", config_case(lambda c: c["training"].update(batch_size="32")), ConfigError, "training.batch_size"),
    ("config: exponent without a dot", config_case(lambda c: c["methods"]["lora"].update(lr="5e-4")), ConfigError,
     "methods.lora.lr: '5e-4' is a string"),
    ("config: name with a slash", config_case(lambda c: c["methods"].update({"lo/ra": {}})), ConfigError, "'lo/ra' is not allowed"),
    ("config: unknown method in experiment", config_case(lambda c: c["experiments"][0]["methods"].append("lorra")), ConfigError,
     "experiments[0].methods: unknown method 'lorra' — did you mean 'lora'?"),
    ("config: empty sweep", config_case(lambda c: c["experiments"][0]["sweep"].update(lora={"r": []})), ConfigError, "sweep.lora.r"),
    ("config: duplicate seed", config_case(lambda c: c["experiments"][0].update(seeds=[1, 1])), ConfigError, "seed is listed twice"),
    ("config: duplicate sweep value", config_case(lambda c: c["experiments"][0]["sweep"].update(lora={"r": [4, 4]})), ConfigError, "listed twice"),
    ("config: unknown metric", config_case(lambda c: c["tasks"]["emotion"].update(metrics=["bleu"])), ConfigError, "unknown metric 'bleu'"),
    ("config: unknown model", config_case(lambda c: c["tasks"]["emotion"].update(model="gpt9")), ConfigError, "unknown model 'gpt9'"),
    ("config: method key of another kind", config_case(lambda c: c["methods"]["lora"].update(num_virtual_tokens=4)), ConfigError,
     "methods.lora.num_virtual_tokens: LoraConfig has no field 'num_virtual_tokens'"),
    ("config: method not supported for the task", config_case(lambda c: (
        c["tasks"]["emotion"].update(type="token_classification", columns={"tokens": "t", "tags": "g"}),
        c["experiments"][0]["methods"].append("prompt_tuning"))),  # a built-in preset: no methods: entry needed
        ConfigError, "method 'prompt_tuning' cannot train task 'emotion'"),
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
    ("data: wrong column, data check", check_case(wrong_column), DataError, "no column 'sentence' (columns.text)"),
    ("data: unseen eval label", check_case(unseen_eval_label), DataError, "labels 'calm' never occur in training"),
    ("data: unseen eval label names the eval set", check_case(unseen_eval_label), DataError, "tasks.emotion.eval.zero_shot"),
    ("data: eval split missing", check_case(missing_eval_split), DataError, "has no split 'test'"),
    ("data: labels missing from tasks.labels", train_case(labels_not_in_config), DataError, "not in tasks.labels: anger"),
    ("data: labels missing from tasks.labels, data check", check_case(labels_not_in_config), DataError, "not in tasks.labels: anger"),
    ("data: empty text field", train_case(empty_text), DataError, "column 'text' (columns.text) is empty"),
    ("data: blank label, data check", check_case(blank_label), DataError,
     "dataset 'emo' split 'train' row 2: column 'label' (columns.label) is blank"),
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
def test_bad_input_gives_one_line_and_trains_nothing(staged_model, tmp_path, name, run, error, fragment):
    ctx = {"tmp": tmp_path, "model": staged_model, "out": tmp_path / "cell"}
    with pytest.raises(error) as err:
        run(ctx)
    message = str(err.value)
    assert fragment in message, message
    assert "\n" not in message
    assert not (ctx["out"] / "run.json").exists() and not (ctx["out"] / "model").exists()
    assert not (tmp_path / "checks" / "emotion.json").exists()  # a failed check marks nothing good


def test_good_data_passes_the_check(tmp_path):
    """The control for the check cases above: the same task on good data passes and counts the rows."""
    ctx = {"tmp": tmp_path}
    (config, cell), dirs = study(task_extra={"max_examples": {"train": 256, "validation": 10}}), emotion_dirs(ctx)
    summary = check_task_data(check_data_spec(config, cell.task), dirs, tmp_path / "checks" / "emotion.json")
    assert summary["examples"] == {"train": 256, "validation": 10}
    assert summary["labels"] == ["anger", "fear", "joy", "love", "sadness", "surprise"]
    assert (tmp_path / "checks" / "emotion.json").is_file()


def test_method_that_cannot_run_here_is_recorded_before_training(staged_model, tmp_path):
    import torch

    stage_emotion(tmp_path / "emo", "train")
    config, cell = study("qlora", task_extra={"validation": None})
    record = train_cell(train_spec(config, cell), staged_model, {"emo": tmp_path / "emo"}, tmp_path / "cell")
    assert record["status"] == "failed" and "needs a CUDA GPU" in record["error"]
    assert "\n" not in record["error"] and "trainable_params" not in record["stats"]  # no model was even loaded
    with pytest.raises(CellFailure, match="needs a CUDA GPU"):
        method_of("qlora").check_device(cell.hparams, torch.device("cpu"))
    method_of("lora").check_device({**cell.hparams, "kind": "lora"}, torch.device("cpu"))  # lora runs anywhere


def test_no_secret_reaches_the_records(staged_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    stage_emotion(tmp_path / "emo", "train", "validation")
    config, cell = study("lora", lr=5.0e-3)
    record = train_cell(train_spec(config, cell), staged_model, {"emo": tmp_path / "emo"}, tmp_path / "cell")
    assert record["status"] == "ok", record["error"]
    written = [p for p in (tmp_path / "cell").rglob("*") if p.is_file() and p.suffix in (".json", ".tsv", ".md")]
    assert any(p.name == "run.json" for p in written)
    for path in written:
        assert "hf_secret_value_123" not in path.read_text(errors="ignore"), path


def test_no_remote_code_anywhere():
    paths = list((REPO / "peftgrid").rglob("*.py")) + list((REPO / "scripts").glob("*.py"))
    assert len(paths) > 40  # every subpackage is searched
    for path in paths:
        text = path.read_text()
        assert "trust_remote_code=True" not in text, path
        assert "weights_only=False" not in text, path


@pytest.mark.slow
def test_bad_eval_set_fails_before_any_training(tiny_bert, tmp_path):
    """Through the workflow: an eval set whose labels training never sees stops the study with one
    line and no training job runs. Local files are read when the workflow is parsed, so it stops
    there, before staging (the data check job catches the same for hub datasets)."""
    other = write(tmp_path, "other.jsonl", '{"text": "x", "label": "calm"}\n')
    config = {
        "models": {"tiny": {"source": str(tiny_bert)}},
        "datasets": {"emo": {**EMOTION, "splits": {"train": str(shared("emotion", "train.txt")),
                                                   "validation": str(shared("emotion", "val.txt"))}},
                     "other": {"format": "jsonl", "splits": {"test": other}}},
        "tasks": {"emotion": {"type": "sequence_classification", "model": "tiny", "dataset": "emo",
                              "columns": {"text": "text", "label": "label"},
                              "eval": {"validation": {"split": "validation"},
                                       "zero_shot": {"dataset": "other", "split": "test"}},
                              "max_examples": {"train": 32, "validation": 16}}},
        "training": {"epochs": 1, "batch_size": 16},
        "experiments": [{"tasks": ["emotion"], "methods": ["none", "full"]}],
    }
    write_config(tmp_path / "config.yaml", config)
    proc = run_snakemake(tmp_path, "--keep-going", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config error: " in out and "labels 'calm' never occur in training" in out, out[-3000:]
    assert not (tmp_path / "results" / "checks" / "emotion.json").exists()
    assert not list((tmp_path / "results").rglob("run.json"))
    assert not list((tmp_path / "logs").glob("train*/**/*.log"))
