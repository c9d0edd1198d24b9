"""train_cell / evaluate_cell on a tiny BERT and real emotion rows: outputs, recorded failures,
checkpoint policy, length-grouped batches."""
import json
import random

import pytest

from conftest import stage_emotion
from peftgrid.config import build_run_table, task_params, validate_config
from peftgrid.data import DataError
from peftgrid.evaluation import evaluate_cell
from peftgrid.records import read_tsv
from peftgrid.training import LOG_COLUMNS, batch_order, train_cell


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    root = tmp_path_factory.mktemp("staged")
    stage_emotion(root / "emo", "train", "validation")
    return root


def cell_params(tiny_bert, method, **overrides):
    config = validate_config({
        "models": {"tiny": {"source": str(tiny_bert)}},
        "datasets": {"emo": {"format": "csv", "splits": {"train": "x"}}},
        "tasks": {"emotion": {"type": "sequence_classification", "model": "tiny", "dataset": "emo",
                              "columns": {"text": "text", "label": "label"},
                              "max_examples": {"train": 128, "validation": 32}}},
        "training": {"epochs": 1, "batch_size": 16, "eval_every_steps": 4, "log_every_steps": 2},
        "methods": {method: overrides},
        "experiments": [{"tasks": ["emotion"], "methods": [method]}],
    })
    (cell,) = build_run_table(config)
    return {"cell": {"task": cell.task, "method": cell.method, "variant": cell.variant, "seed": cell.seed},
            "hparams": cell.hparams, "model": {"name": "tiny", "allow_pickle": False},
            "task": task_params(config, "emotion")}


def test_lora_cell_writes_every_output(tiny_bert, staged, tmp_path):
    params = cell_params(tiny_bert, "lora", lr=5.0e-3)
    record = train_cell(params, tiny_bert, {"emo": staged / "emo"}, tmp_path)
    assert record["status"] == "ok" and record["error"] is None
    assert record["labels"] == ["anger", "fear", "joy", "love", "sadness", "surprise"]
    assert record["versions"]["peft"] and record["hparams"]["r"] == 8
    log = read_tsv(tmp_path / "train_log.tsv")
    assert list(log[0]) == LOG_COLUMNS
    assert [int(r["step"]) for r in log] == [0, 2, 4, 6, 8]  # 128 examples / 16 = 8 steps
    assert all(r["val_loss"] for r in log if int(r["step"]) % 4 == 0)
    stats = read_tsv(tmp_path / "train_stats.tsv")[0]
    assert stats["status"] == "ok" and int(stats["steps"]) == 8 and float(stats["epochs"]) == 1.0
    assert 0 < float(stats["trainable_pct"]) < 100 and float(stats["peak_train_mem_mb"]) > 0
    assert (tmp_path / "model" / "adapter_model.safetensors").is_file()
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "model.tmp").exists()
    json.loads((tmp_path / "run.json").read_text())

    eval_params = {**params, "eval": {"name": "validation", "dataset": "emo", "split": "validation"},
                   "task": {**params["task"], "metrics": ["accuracy", "f1_macro"], "max_examples": {"validation": 40}}}
    row = evaluate_cell(eval_params, tiny_bert, tmp_path / "model", staged / "emo", tmp_path / "run.json",
                        tmp_path / "m.tsv", tmp_path / "p.jsonl")
    assert row["status"] == "ok" and row["n_examples"] == 40 and 0 <= row["accuracy"] <= 1
    preds = [json.loads(l) for l in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(preds) == 40 and {"text", "label", "prediction", "confidence"} <= set(preds[0])
    assert row["accuracy"] == pytest.approx(sum(p["label"] == p["prediction"] for p in preds) / 40)


def test_qlora_on_cpu_is_recorded_as_failed(tiny_bert, staged, tmp_path):
    record = train_cell(cell_params(tiny_bert, "qlora"), tiny_bert, {"emo": staged / "emo"}, tmp_path)
    assert record["status"] == "failed" and "CUDA" in record["error"]
    assert read_tsv(tmp_path / "train_stats.tsv")[0]["status"] == "failed"
    assert (tmp_path / "model" / "FAILED.json").is_file()


def test_nan_loss_stops_the_cell_with_a_reason(tiny_bert, staged, tmp_path):
    record = train_cell(cell_params(tiny_bert, "full", lr=1.0e30, max_grad_norm=None), tiny_bert,
                        {"emo": staged / "emo"}, tmp_path)
    assert record["status"] == "failed" and "NonFiniteLoss" in record["error"] and "lower lr" in record["error"]


def test_unseen_eval_label_stops_before_training(tiny_bert, staged, tmp_path):
    params = cell_params(tiny_bert, "full")
    params["task"]["labels"] = ["anger", "fear", "joy", "love", "sadness", "surprise", "x"]
    (tmp_path / "bad").mkdir()
    rows = [{"text": "a", "label": "calm"}]
    (tmp_path / "bad" / "test.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (tmp_path / "bad" / "meta.json").write_text(json.dumps({"name": "bad", "splits": {"test": 1}}))
    with pytest.raises(DataError, match="labels 'calm' never occur in training"):
        train_cell(params, tiny_bert, {"emo": staged / "emo", "bad": tmp_path / "bad"}, tmp_path / "out",
                   eval_checks={"zero_shot": {"dataset": "bad", "split": "test"}})
    assert not (tmp_path / "out" / "run.json").exists()


def test_best_checkpoint_keeps_the_lowest_validation_loss(tiny_bert, staged, tmp_path):
    record = train_cell(cell_params(tiny_bert, "full", lr=5.0e-3, checkpoint="best"), tiny_bert,
                        {"emo": staged / "emo"}, tmp_path)
    vals = [float(r["val_loss"]) for r in read_tsv(tmp_path / "train_log.tsv") if r["val_loss"]]
    assert record["stats"]["final_val_loss"] == pytest.approx(min(vals), abs=1e-6)  # step 0 is a candidate too


def test_length_grouped_batches_cover_everything_once():
    rng = random.Random(0)
    lengths = [rng.randint(3, 120) for _ in range(1000)]
    batches = batch_order(lengths, 32, random.Random(1), True)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    plain = sum(len(b) * max(lengths[i] for i in b) for b in batch_order(lengths, 32, random.Random(1), False))
    assert padded < 0.7 * plain  # grouping removes most of the padding
    assert batch_order(lengths, 32, random.Random(1), True) == batches  # seeded


def test_out_of_memory_is_recorded_with_a_hint(tiny_bert, staged, tmp_path, monkeypatch):
    import torch

    from peftgrid import training

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(training, "_train_loop", no_memory)
    record = train_cell(cell_params(tiny_bert, "full"), tiny_bert, {"emo": staged / "emo"}, tmp_path)
    assert record["status"] == "failed" and "out of memory" in record["error"] and "smaller batch_size" in record["error"]
    assert "\n" not in record["error"] and (tmp_path / "run.json").is_file()
