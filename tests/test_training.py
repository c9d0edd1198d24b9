"""train_cell / evaluate_cell on a tiny BERT and real emotion rows: outputs, recorded failures,
checkpoint policy, the data check before training, length-grouped batches."""
import json
import random

import pytest

from conftest import stage_emotion
from peftgrid.engine.batching import batch_order
from peftgrid.errors import DataError
from peftgrid.jobs.check_data import check_task_data
from peftgrid.jobs.evaluate import evaluate_cell
from peftgrid.jobs.train import LOG_COLUMNS, train_cell
from peftgrid.plan import build_run_table, validate_config
from peftgrid.plan.specs import check_data_spec, eval_spec, train_spec
from peftgrid.records import read_tsv
from peftgrid.staging.models import stage_model


@pytest.fixture(scope="module")
def staged(tmp_path_factory, tiny_bert):
    """What the staging rules leave: the emotion data in emo/ and the tiny BERT in tiny/."""
    root = tmp_path_factory.mktemp("staged")
    stage_emotion(root / "emo", "train", "validation", "test")
    stage_model("tiny", {"source": str(tiny_bert)}, root / "tiny")
    return root


def study(tiny_bert, method, task_extra=None, datasets_extra=None, **overrides):
    """A validated one-cell config (emotion, tiny BERT, `method` with `overrides`) and its cell."""
    task = {"type": "sequence_classification", "model": "tiny", "dataset": "emo",
            "columns": {"text": "text", "label": "label"}, "metrics": ["accuracy", "f1_macro"],
            "max_examples": {"train": 128, "validation": 32}, **(task_extra or {})}
    config = validate_config({
        "models": {"tiny": {"source": str(tiny_bert)}},
        "datasets": {"emo": {"format": "csv", "splits": {"train": "x", "validation": "x", "test": "x"}},
                     **(datasets_extra or {})},
        "tasks": {"emotion": task},
        "training": {"epochs": 1, "batch_size": 16, "eval_every_steps": 4, "log_every_steps": 2},
        "methods": {method: overrides},
        "experiments": [{"tasks": ["emotion"], "methods": [method]}],
    })
    (cell,) = build_run_table(config)
    return config, cell


def cell_spec(tiny_bert, method, **overrides):
    """The TrainSpec of that cell, built as the workflow builds it."""
    return train_spec(*study(tiny_bert, method, **overrides))


def test_lora_cell_writes_every_output(tiny_bert, staged, tmp_path):
    config, cell = study(tiny_bert, "lora", lr=5.0e-3)
    record = train_cell(train_spec(config, cell), staged / "tiny", {"emo": staged / "emo"}, tmp_path)
    assert record["status"] == "ok" and record["error"] is None
    assert record["labels"] == ["anger", "fear", "joy", "love", "sadness", "surprise"]
    assert record["versions"]["peft"] and record["hparams"]["r"] == 8 and record["hparams"]["lr"] == 5.0e-3
    log = read_tsv(tmp_path / "train_log.tsv")
    assert list(log[0]) == LOG_COLUMNS
    assert [int(r["step"]) for r in log] == [0, 2, 4, 6, 8]  # 128 examples / 16 = 8 steps
    assert all(r["val_loss"] for r in log if int(r["step"]) % 4 == 0)
    stats = read_tsv(tmp_path / "train_stats.tsv")[0]
    assert stats["status"] == "ok" and int(stats["steps"]) == 8 and float(stats["epochs"]) == 1.0
    assert int(stats["n_train"]) == 128
    # CPU: peak RSS above the RSS before the model was loaded, so the weights count (engine.device)
    weights_mb = int(stats["total_params"]) * 4 / 2**20
    assert 0 < float(stats["trainable_pct"]) < 100 and float(stats["peak_train_mem_mb"]) >= weights_mb
    assert stats["mem_measure"] == "cpu_peak_rss_above_pre_model"
    assert (tmp_path / "model" / "adapter_model.safetensors").is_file()
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "model.tmp").exists()
    json.loads((tmp_path / "run.json").read_text())

    spec = eval_spec(config, cell, "validation")
    assert spec.eval["max_examples"] == 32 and spec.task["metrics"] == ["accuracy", "f1_macro"]
    row = evaluate_cell(spec, staged / "tiny", tmp_path / "model", staged / "emo", tmp_path / "run.json",
                        tmp_path / "m.tsv", tmp_path / "p.jsonl")
    assert row["status"] == "ok" and row["n_examples"] == 32 and 0 <= row["accuracy"] <= 1
    assert {"accuracy", "f1_macro"} <= set(row) and "precision_macro" not in row
    preds = [json.loads(l) for l in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(preds) == 32 and {"text", "label", "prediction", "confidence"} <= set(preds[0])
    assert row["accuracy"] == pytest.approx(sum(p["label"] == p["prediction"] for p in preds) / 32)


def test_a_selection_set_evaluation_scores_without_the_cost_protocol(tiny_bert, staged, tmp_path):
    """A run's evaluation in select/ scores a choice (a grid point, a halving rung) and nothing
    reports its cost: it runs the quality pass only, and says so with empty cost columns; the same
    model in eval/<set>/ is costed as ever (timed repeats, merged). Defect caught: the timing passes
    — three quarters of a selection evaluation's time — run for figures no table reads, or a
    reported evaluation loses its costs."""
    config, cell = study(tiny_bert, "lora", lr=5.0e-3)
    train_cell(train_spec(config, cell), staged / "tiny", {"emo": staged / "emo"}, tmp_path)
    spec = eval_spec(config, cell, "validation")
    rows = {}
    for evaluation in ("select", "eval/validation"):
        out = tmp_path / evaluation
        rows[evaluation] = evaluate_cell(spec, staged / "tiny", tmp_path / "model", staged / "emo", tmp_path / "run.json",
                                         out / "metrics.tsv", out / "predictions.jsonl")
    chosen, reported = rows["select"], rows["eval/validation"]
    assert chosen["accuracy"] == reported["accuracy"] and chosen["n_examples"] == reported["n_examples"] == 32
    assert 0 < chosen["infer_time_s"] < reported["infer_time_s"]
    assert {k: chosen.get(k) for k in ("infer_throughput", "peak_infer_mem_mb", "inference_merged",
                                       "infer_throughput_unmerged", "mem_measure")} == {
        "infer_throughput": None, "peak_infer_mem_mb": None, "inference_merged": None,
        "infer_throughput_unmerged": None, "mem_measure": ""}
    assert reported["infer_throughput"] > 0 and reported["peak_infer_mem_mb"] > 0 and reported["inference_merged"]
    assert reported["infer_throughput_unmerged"] > 0
    assert read_tsv(tmp_path / "select" / "metrics.tsv")[0]["infer_throughput"] == ""


def test_qlora_on_cpu_is_recorded_as_failed(tiny_bert, staged, tmp_path):
    record = train_cell(cell_spec(tiny_bert, "qlora"), staged / "tiny", {"emo": staged / "emo"}, tmp_path)
    assert record["status"] == "failed" and "CUDA" in record["error"]
    assert record["error"].startswith("CellFailure:")  # a recorded finding, not a mistake that stops the job
    assert read_tsv(tmp_path / "train_stats.tsv")[0]["status"] == "failed"
    assert (tmp_path / "model" / "FAILED.json").is_file()


def test_nan_loss_stops_the_cell_with_a_reason(tiny_bert, staged, tmp_path):
    record = train_cell(cell_spec(tiny_bert, "full", lr=1.0e30, max_grad_norm=None), staged / "tiny",
                        {"emo": staged / "emo"}, tmp_path)
    assert record["status"] == "failed" and "NonFiniteLoss" in record["error"] and "lower lr" in record["error"]


def test_unseen_eval_label_stops_before_training(tiny_bert, staged, tmp_path):
    """Eval sets are checked by the data-check job, before any cell trains (not by train_cell), and
    adding an eval set does not change what training reads."""
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "test.jsonl").write_text(json.dumps({"text": "a", "label": "calm"}) + "\n")
    (tmp_path / "bad" / "meta.json").write_text(json.dumps({"name": "bad", "splits": {"test": 1}}))
    labels = ["anger", "fear", "joy", "love", "sadness", "surprise", "x"]
    config, cell = study(tiny_bert, "full", task_extra={
        "labels": labels, "eval": {"validation": {"split": "validation"},
                                   "zero_shot": {"dataset": "bad", "split": "test"}}},
        datasets_extra={"bad": {"format": "jsonl", "splits": {"test": "x"}}})
    data_dirs = {"emo": staged / "emo", "bad": tmp_path / "bad"}
    with pytest.raises(DataError, match="zero_shot: labels 'calm' never occur in training"):
        check_task_data(check_data_spec(config, "emotion"), data_dirs, tmp_path / "checked.json")
    assert not (tmp_path / "checked.json").exists()

    plain_config, plain_cell = study(tiny_bert, "full", task_extra={"labels": labels})
    assert train_spec(config, cell).to_params() == train_spec(plain_config, plain_cell).to_params()
    assert "zero_shot" not in json.dumps(train_spec(config, cell).to_params())
    # without the bad eval set the check passes and records what it read
    summary = check_task_data(check_data_spec(plain_config, "emotion"), data_dirs, tmp_path / "ok.json")
    assert summary["examples"] == {"train": 128, "validation": 32} and summary["labels"] == labels
    assert json.loads((tmp_path / "ok.json").read_text()) == summary


def test_best_checkpoint_keeps_the_lowest_validation_loss(tiny_bert, staged, tmp_path):
    """The saved model is the one with the lowest validation loss: reloaded from the run folder as
    evaluate loads it, its loss on the selection split is the lowest logged one — not the last
    one (a small training set, many epochs: the validation loss rises again by the end)."""
    import torch

    from peftgrid.engine.loop import mean_loss
    from peftgrid.jobs.evaluate import load_eval_model
    from peftgrid.jobs.train import load_training_data
    from peftgrid.tasks import task_type

    # checkpoint: best selects on an unreported split; the reported eval set is another one
    # 48 training examples, 15 epochs at lr 1e-2: it overfits, and the validation loss, lowest
    # near step 18, ends far above it (measured: about 1.6 at step 0, 1.45-1.5 near step 18, 2.2 at step 45)
    config, cell = study(tiny_bert, "full", lr=1.0e-2, checkpoint="best", epochs=15, eval_every_steps=6,
                         task_extra={"validation": {"split": "validation", "max_examples": 32},
                                     "eval": {"test": {"split": "test"}}, "max_examples": {"train": 48},
                                     "unseen_labels": "ignore"})
    spec = train_spec(config, cell)
    assert spec.task["validation"]["split"] == "validation" and spec.task["validation"]["max_examples"] == 32
    record = train_cell(spec, staged / "tiny", {"emo": staged / "emo"}, tmp_path)
    assert record["status"] == "ok"
    vals = [float(r["val_loss"]) for r in read_tsv(tmp_path / "train_log.tsv") if r["val_loss"]]
    assert record["stats"]["final_val_loss"] == pytest.approx(min(vals), abs=1e-6)  # step 0 is a candidate too
    assert vals.index(min(vals)) not in (0, len(vals) - 1) and vals[-1] > min(vals) + 0.2  # it rose by the end

    # the weights on disk, loaded as evaluate loads them, scored on the selection split
    torch.manual_seed(0)
    model, tokenizer = load_eval_model(eval_spec(config, cell, "test"), staged / "tiny", tmp_path / "model",
                                       record["labels"], torch.device("cpu"))
    _, val_rows, labels = load_training_data(spec, {"emo": staged / "emo"})
    ttype = task_type(spec.task["type"])
    examples = ttype.encode(spec.task, val_rows, tokenizer, labels, spec.hparams["max_length"])
    saved = mean_loss(model, examples, 8, tokenizer.pad_token_id, torch.device("cpu"), spec.hparams["precision"])
    assert saved == pytest.approx(min(vals), abs=1e-4)
    assert abs(saved - vals[-1]) > 0.2  # the final weights were not what was saved


def test_validation_loss_leaves_out_ignored_labels_whatever_the_batch_size(tiny_bert, staged):
    """An unseen label (unseen_labels: ignore) is -100: the loss's mean leaves it out, so the
    validation loss weighs each batch by its labelled examples — the same at any batch size,
    and the mean cross-entropy over the labelled examples alone."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from peftgrid.engine.loop import mean_loss
    from peftgrid.tasks import task_type

    tok = AutoTokenizer.from_pretrained(staged / "tiny")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(staged / "tiny", num_labels=3).eval()
    texts = ["i feel happy today", "this is awful", "i am so scared of the dark night", "ok",
             "what a lovely surprise", "i feel nothing at all", "the cat sat on the mat", "never again"]
    gold = ["a", "unseen", "c", "unseen", "unseen", "b", "a", "c"]
    task = {"columns": {"text": "text", "label": "label"}}
    examples = task_type("sequence_classification").encode(
        task, [{"text": t, "label": g} for t, g in zip(texts, gold)], tok, ["a", "b", "c"], 64)
    labels = [e["labels"] for e in examples]
    assert labels == [0, -100, 2, -100, -100, 1, 0, 2]
    cpu = torch.device("cpu")
    with torch.no_grad():
        logits = torch.cat([model(**{k: torch.tensor([e[k]]) for k in ("input_ids", "attention_mask")}).logits
                            for e in examples])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor(labels)).item()  # -100 ignored
    for batch_size in (1, 2, 3, 8):
        assert mean_loss(model, examples, batch_size, tok.pad_token_id, cpu, "fp32") == pytest.approx(expected, abs=1e-5)


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

    from peftgrid.jobs import train

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train, "train_loop", no_memory)
    record = train_cell(cell_spec(tiny_bert, "full"), staged / "tiny", {"emo": staged / "emo"}, tmp_path)
    assert record["status"] == "failed" and "out of memory" in record["error"] and "smaller batch_size" in record["error"]
    assert "\n" not in record["error"] and (tmp_path / "run.json").is_file()


# --------------------------------------------------------------------------- what the cost columns count

SLOW = 1000.0  # virtual seconds a patched step takes: far beyond any real training step, however busy the machine


@pytest.fixture
def clock(monkeypatch):
    """time.perf_counter, which every timer of ours reads, with a virtual offset: `clock.sleep(s)`
    makes s seconds pass at once (so a patched step can take 1,000 s without the test waiting)."""
    import time

    class VirtualClock:
        def __init__(self):
            self.real, self.offset = time.perf_counter, 0.0

        def __call__(self):
            return self.real() + self.offset

        def sleep(self, seconds):
            self.offset += seconds

    virtual = VirtualClock()
    monkeypatch.setattr(time, "perf_counter", virtual)
    return virtual


def test_validation_passes_are_not_training_time(tiny_bert, staged, tmp_path, monkeypatch, clock):
    """Each validation pass made SLOW seconds slower: val_time_s grows by that, train_time_s does
    not (passes at steps 0, 4 and 8)."""
    from peftgrid.engine import loop

    real, calls = loop.mean_loss, []

    def slow_mean_loss(*args, **kwargs):
        calls.append(1)
        clock.sleep(SLOW)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "mean_loss", slow_mean_loss)
    record = train_cell(cell_spec(tiny_bert, "lora", lr=5.0e-3), staged / "tiny", {"emo": staged / "emo"}, tmp_path)
    stats = record["stats"]
    assert record["status"] == "ok" and len(calls) >= 3
    assert stats["val_time_s"] >= SLOW * len(calls)
    assert stats["train_time_s"] < SLOW, stats


def test_keeping_the_best_weights_is_not_training_time(tiny_bert, staged, tmp_path, monkeypatch, clock):
    """checkpoint: best copies the weights at each new lowest validation loss and puts the best back
    at the end: that copying is checkpoint_time_s, never train_time_s."""
    from peftgrid.engine import loop

    real, calls = loop.trainable_state, []

    def slow_copy(model):
        calls.append(1)
        clock.sleep(SLOW)
        return real(model)

    monkeypatch.setattr(loop, "trainable_state", slow_copy)
    config, cell = study(tiny_bert, "lora", lr=5.0e-3, checkpoint="best",
                         task_extra={"validation": {"split": "validation", "max_examples": 32},
                                     "eval": {"test": {"split": "test"}}, "unseen_labels": "ignore"})
    record = train_cell(train_spec(config, cell), staged / "tiny", {"emo": staged / "emo"}, tmp_path)
    stats = record["stats"]
    assert record["status"] == "ok" and len(calls) >= 1
    assert stats["checkpoint_time_s"] >= SLOW * len(calls)
    assert stats["train_time_s"] < SLOW, stats


def test_inference_cost_is_timed_warm_for_every_method(tiny_bert, staged, tmp_path, clock):
    """A model's first forward pass is slow (a cold start, simulated: SLOW s on each model object's
    first call). The reported throughput comes from timed repeats after a warm-up, for a method that
    merges (lora: merged and unmerged figures) and for one that does not (full) alike — timing the
    non-merging method on its cold first pass would report at most 32 examples / SLOW s."""
    import torch

    seen = set()

    def cold_start(module, args):
        if hasattr(module, "config") and id(module) not in seen:
            seen.add(id(module))
            clock.sleep(SLOW)

    for method in ("full", "lora"):
        config, cell = study(tiny_bert, method, lr=5.0e-3)
        out = tmp_path / method
        train_cell(train_spec(config, cell), staged / "tiny", {"emo": staged / "emo"}, out)
        seen.clear()
        handle = torch.nn.modules.module.register_module_forward_pre_hook(cold_start)
        try:
            row = evaluate_cell(eval_spec(config, cell, "validation"), staged / "tiny", out / "model", staged / "emo",
                                out / "run.json", out / "m.tsv", out / "p.jsonl")
        finally:
            handle.remove()
        assert seen, "the simulated cold start never ran"
        assert row["n_examples"] == 32 and row["inference_merged"] is (method == "lora")
        # a cold pass takes SLOW per model object with a config: under 32 / SLOW = 0.03 examples/s
        assert row["infer_throughput"] > 1, (method, row)
        if method == "lora":
            assert row["infer_throughput_unmerged"] > 1, row
        assert row["infer_time_s"] >= SLOW  # the cold warm-up is work the job did, counted as inference time


def test_staging_a_local_model_copies_its_files(tiny_bert, tmp_path):
    """The staged folder never shares storage with the user's files: each of the user's files keeps
    a single link, and writing a staged file in place leaves the user's file as it was."""
    import os
    import shutil

    user = tmp_path / "user_model"
    shutil.copytree(tiny_bert, user)
    stage_model("mine", {"source": str(user)}, tmp_path / "staged")
    for original in user.iterdir():
        copy = tmp_path / "staged" / original.name
        assert copy.is_file() and not os.path.samefile(original, copy), original.name
        assert os.stat(original).st_nlink == 1, original.name
    before = (user / "config.json").read_bytes()
    with open(tmp_path / "staged" / "config.json", "r+b") as fh:
        fh.write(b"X")  # in place, as a tool editing the staged copy would
    assert (user / "config.json").read_bytes() == before
