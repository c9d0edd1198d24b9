"""One cell's training: an explicit loop (AdamW, linear warmup + decay, gradient clipping,
validation loss every n steps, fixed seeds) that writes the cell's model, loss curve, cost
figures and provenance record.

Checkpoint policy: `checkpoint: last` (default) keeps the weights after the final step;
`checkpoint: best` keeps the trainable weights from the logged step with the lowest validation
loss (needs a validation eval set; do not select on the set you report on).

Failures that are results of the study (a method that cannot run on this device, a NaN loss,
out of memory) are recorded: the cell's run.json and train_stats.tsv say `failed` with a
one-line reason and the job still succeeds, so the summary lists the cell. Bad input (a wrong
column, an unseen label) raises `DataError` instead and stops the job.
"""
from __future__ import annotations

import math
import random
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from . import methods
from .data import staged_meta
from .measure import PhaseMeter, autocast, pick_device, resolve_dtype
from .records import device_description, git_commit, package_versions, write_json, write_tsv
from .generation import GENERATION_TYPES, CoverageError, check_coverage, prepare_tokenizer
from .checkpoint import Checkpointer, Preempted, python_rng_from_tensor, python_rng_to_tensor
from .tasks import check_labels, collate, encode, label_list, load_task_rows, truncated_count

LOG_COLUMNS = ["step", "epoch", "train_loss", "val_loss", "lr", "elapsed_s"]
STATS_COLUMNS = ["status", "error", "device", "trainable_params", "total_params", "trainable_pct",
                 "train_time_s", "time_per_epoch_s", "peak_train_mem_mb", "train_examples_per_s", "steps",
                 "epochs", "load_time_s", "n_train", "truncated_train", "final_train_loss", "final_val_loss"]


class NonFiniteLoss(RuntimeError):
    pass


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def batch_order(lengths: list[int], batch_size: int, rng: random.Random | None, group_by_length: bool) -> list[list[int]]:
    """Batches of indices. Training (rng given): shuffled; with group_by_length, examples of
    similar length share a batch (sorted within shuffled windows of 50 batches, like HF's
    LengthGroupedSampler) so dynamic padding wastes little. Evaluation (no rng): sorted by length."""
    idx = list(range(len(lengths)))
    if rng is None:
        idx.sort(key=lambda i: -lengths[i])
        return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    rng.shuffle(idx)
    if group_by_length:
        window = batch_size * 50
        idx = [i for s in range(0, len(idx), window)
               for i in sorted(idx[s:s + window], key=lambda i: -lengths[i])]
    batches = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def linear_schedule(optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model, lr: float, weight_decay: float):
    """AdamW; no weight decay on biases and norm weights (the usual BERT recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


@torch.no_grad()
def mean_loss(model, examples: list[dict], batch_size: int, pad_id: int, device, precision: str) -> float:
    was_training = model.training
    model.eval()
    lengths = [len(e["input_ids"]) for e in examples]
    total, count = torch.zeros((), device=device), 0
    for idx in batch_order(lengths, batch_size, None, True):
        batch = to_device(collate([examples[i] for i in idx], pad_id), device)
        with autocast(device, precision):
            loss = model(**batch).loss
        total += loss.float() * len(idx)
        count += len(idx)
    model.train(was_training)
    return float(total) / max(count, 1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def run_record(params: dict, device) -> dict:
    return {
        "cell": params["cell"], "hparams": params["hparams"], "task": params["task"], "model": params["model"],
        "status": "running", "error": None, "device": device_description(device),
        "versions": package_versions(), "git_commit": git_commit(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def train_cell(params: dict, model_dir: Path, data_dirs: dict[str, Path], out_dir: Path,
               eval_checks: dict | None = None) -> dict:
    """Train one cell; write out_dir/{model/, train_log.tsv, train_stats.tsv, run.json}.

    `params` is the rule's params dict: cell identity, resolved hparams, the task's training
    view and the model entry. `eval_checks` (eval name -> {dataset, split}) are only checked
    (columns, labels), before training, so a bad eval set fails now rather than after hours.
    """
    out_dir = Path(out_dir)
    hp, task = params["hparams"], params["task"]
    device = pick_device()
    record = run_record(params, device)
    stats = {"status": "running", "device": record["device"]}
    log_rows: list[dict] = []
    tmp_model = out_dir / "model.tmp"
    shutil.rmtree(tmp_model, ignore_errors=True)
    try:
        methods.check_device(hp["kind"], device)
        resolve_dtype(device, hp["precision"])
        # ---- data (cheap, before any model is loaded)
        train_rows = load_task_rows(task, data_dirs[task["dataset"]], task["train_split"], task["train_split"],
                                    task["dataset"])
        labels = label_list(task, train_rows, staged_meta(data_dirs[task["dataset"]]))
        val_rows = None
        if task.get("validation"):
            v = task["validation"]
            val_rows = load_task_rows(task, data_dirs[v["dataset"]], v["split"], v["name"], v["dataset"])
            check_labels(task, val_rows, labels, f"eval set {v['name']!r}")
        for name, ev in (eval_checks or {}).items():
            if ev["dataset"] in data_dirs:
                rows = load_task_rows(task, data_dirs[ev["dataset"]], ev["split"], name, ev["dataset"])
                check_labels(task, rows, labels, f"eval set {name!r}")
        record["labels"] = labels

        # ---- model: always a fresh copy of the staged pretrained weights
        from transformers import AutoTokenizer

        t_load = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if task["type"] in GENERATION_TYPES:
            prepare_tokenizer(tokenizer)
            record["target_coverage_loss"] = check_coverage(tokenizer, train_rows, task, params["model"]["name"])
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        train_ex = encode(task, train_rows, tokenizer, labels, hp["max_length"])
        val_ex = encode(task, val_rows, tokenizer, labels, hp["max_length"]) if val_rows else None
        steps_per_epoch = math.ceil(len(train_ex) / hp["batch_size"])
        total_steps = math.ceil(steps_per_epoch * hp["epochs"])
        if hp["max_steps"] is not None:
            total_steps = min(total_steps, hp["max_steps"])
        if hp["kind"] == "none":
            total_steps = 0
        set_seed(hp["seed"])
        model, new_weights = methods.load_base(model_dir, task["type"], labels, hp, device,
                                               params["model"].get("allow_pickle", False))
        model = methods.prepare(model, hp, task["type"], total_steps)
        if hp["kind"] != "qlora":
            model.to(device)
        trainable, total = methods.count_parameters(model)
        load_time = time.perf_counter() - t_load
        stats.update(trainable_params=trainable, total_params=total,
                     trainable_pct=round(100.0 * trainable / total, 6), load_time_s=round(load_time, 3),
                     n_train=len(train_ex), truncated_train=truncated_count(train_ex, hp["max_length"]))

        # ---- train
        ckpt = Checkpointer(out_dir / "checkpoint", hp, hp["checkpoint_every_steps"])
        meter = PhaseMeter(device)
        ckpt.install_sigterm()
        try:
            with meter:
                final = _train_loop(model, hp, train_ex, val_ex, pad_id, device, total_steps, steps_per_epoch,
                                    log_rows, ckpt)
        finally:
            ckpt.restore_sigterm()
        seconds = final["prior_seconds"] + meter.seconds  # a resumed run adds up its segments
        epochs_done = final["step"] / steps_per_epoch if steps_per_epoch else 0.0
        stats.update(
            status="ok", error=None,
            train_time_s=round(seconds, 3),
            time_per_epoch_s=round(seconds / epochs_done, 3) if epochs_done else 0.0,
            peak_train_mem_mb=round(max(meter.peak_mem_mb, final["prior_peak"]), 1),
            train_examples_per_s=round(final["examples"] / seconds, 2) if final["examples"] else 0.0,
            steps=final["step"], epochs=round(epochs_done, 4),
            final_train_loss=final["train_loss"], final_val_loss=final["val_loss"])
        record["resumed"] = final["prior_seconds"] > 0
        methods.save_trained(model, hp, tmp_model, new_weights)
        tokenizer.save_pretrained(tmp_model / "tokenizer")
    except (methods.MethodError, NonFiniteLoss, CoverageError) as e:
        stats.update(status="failed", error=_first_line(e))
    except torch.OutOfMemoryError as e:
        stats.update(status="failed", error=f"out of memory ({_first_line(e)[:120]}); try a smaller batch_size")
    record["status"], record["error"] = stats["status"], stats.get("error")
    record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record["stats"] = stats
    if stats["status"] != "ok":
        shutil.rmtree(tmp_model, ignore_errors=True)
        tmp_model.mkdir(parents=True)
        write_json(tmp_model / "FAILED.json", {"error": stats["error"]})
    write_tsv(out_dir / "train_log.tsv", log_rows, LOG_COLUMNS)
    write_tsv(out_dir / "train_stats.tsv", [stats], STATS_COLUMNS)
    final_model = out_dir / "model"
    shutil.rmtree(final_model, ignore_errors=True)
    tmp_model.rename(final_model)
    write_json(out_dir / "run.json", record)  # last: a run.json means the cell's files are complete
    shutil.rmtree(out_dir / "checkpoint", ignore_errors=True)
    return record


def _train_loop(model, hp, train_ex, val_ex, pad_id, device, total_steps, steps_per_epoch, log_rows,
                ckpt: Checkpointer | None = None) -> dict:
    precision = hp["precision"]
    lengths = [len(e["input_ids"]) for e in train_ex]
    rng = random.Random(hp["seed"])  # batch order
    step, examples, prior_seconds, prior_peak = 0, 0, 0.0, 0.0
    best = {"val_loss": math.inf, "state": None}
    last_train_loss, val = None, None
    scheduler = None

    def log(train_loss, with_val: bool):
        v = mean_loss(model, val_ex, hp["eval_batch_size"], pad_id, device, precision) if (with_val and val_ex) else None
        log_rows.append({"step": step, "epoch": round(step / steps_per_epoch, 4) if steps_per_epoch else 0,
                         "train_loss": None if train_loss is None else round(train_loss, 6),
                         "val_loss": None if v is None else round(v, 6),
                         "lr": scheduler.get_last_lr()[0] if scheduler else 0.0,
                         "elapsed_s": round(prior_seconds + time.perf_counter() - t0, 3)})
        if v is not None and hp["checkpoint"] == "best" and v < best["val_loss"]:
            best["val_loss"] = v
            best["state"] = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
        return v

    t0 = time.perf_counter()
    if total_steps == 0:
        val = log(None, True)
        return {"step": 0, "examples": 0, "train_loss": None, "val_loss": val, "prior_seconds": 0.0, "prior_peak": 0.0}

    optimizer = make_optimizer(model, hp["lr"], hp["weight_decay"])
    scheduler = linear_schedule(optimizer, int(hp["warmup_ratio"] * total_steps), total_steps)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    trainable = [p for p in model.parameters() if p.requires_grad]
    adalora = hp["kind"] == "adalora"
    loss_sum, loss_count = torch.zeros((), device=device), 0
    resume_batch = 0
    state = ckpt.load() if ckpt else None
    if state:  # go on exactly where the last run stopped
        ckpt.restore(state, model, optimizer, scheduler)
        loop = state["loop"]
        step, examples, loss_count = loop["step"], loop["examples"], loop["loss_count"]
        loss_sum += loop["loss_sum"]
        log_rows[:] = loop["log_rows"]
        last_train_loss, val = loop["last_train_loss"], loop["val"]
        prior_seconds, prior_peak = loop["seconds"], loop["peak_mem_mb"]
        best["val_loss"] = loop["best_val_loss"]
        best["state"] = state.get("best_state") or None
        rng.setstate(python_rng_from_tensor(loop["epoch_rng"]))
        resume_batch = loop["batch_pos"]
    else:
        val = log(None, True)  # the starting point of the learning curve
    model.train()

    def loop_state(epoch_rng, batch_pos) -> dict:
        return {"step": step, "examples": examples, "loss_sum": loss_sum.detach().cpu(), "loss_count": loss_count,
                "log_rows": list(log_rows), "last_train_loss": last_train_loss, "val": val,
                "seconds": prior_seconds + time.perf_counter() - t0, "peak_mem_mb": prior_peak,
                "best_val_loss": best["val_loss"], "epoch_rng": epoch_rng, "batch_pos": batch_pos}

    while step < total_steps:
        epoch_rng = python_rng_to_tensor(rng)
        batches = batch_order(lengths, hp["batch_size"], rng, hp["group_by_length"])
        start, resume_batch = resume_batch, 0
        for pos in range(start, len(batches)):
            idx = batches[pos]
            batch = to_device(collate([train_ex[i] for i in idx], pad_id), device)
            with autocast(device, precision):
                loss = model(**batch).loss
            if scaler:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if hp["max_grad_norm"]:
                torch.nn.utils.clip_grad_norm_(trainable, hp["max_grad_norm"])
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            step += 1
            examples += len(idx)
            if adalora:
                model.base_model.update_and_allocate(step)  # rank reallocation (needs total_step set)
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach().float()  # stays on the device: no host sync per step
            loss_count += 1
            at_eval = step % hp["eval_every_steps"] == 0 or step == total_steps
            if step % hp["log_every_steps"] == 0 or at_eval:
                mean = float(loss_sum) / loss_count  # the only host sync, at logging steps
                if not math.isfinite(mean):
                    raise NonFiniteLoss(f"loss became {mean} by step {step} (lr {hp['lr']:g}); "
                                        f"lower lr or use precision fp32")
                last_train_loss = round(mean, 6)
                val = log(mean, at_eval)
                loss_sum.zero_()
                loss_count = 0
            if ckpt and step < total_steps and (ckpt.due(step) or ckpt.stop_requested):
                extra = {"best_state": best["state"]} if best["state"] is not None else {}
                ckpt.save(model, optimizer, scheduler, {**loop_state(epoch_rng, pos + 1)}, **extra)
                if ckpt.stop_requested:
                    raise Preempted(f"SIGTERM at step {step}: checkpoint saved, the next run resumes from it")
            if ckpt:
                ckpt.after_step(step)
            if step >= total_steps:
                break
    if best["state"] is not None:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in best["state"]:
                    p.copy_(best["state"][n])
        val = best["val_loss"]
    return {"step": step, "examples": examples, "train_loss": last_train_loss,
            "val_loss": None if val is None else round(val, 6), "prior_seconds": prior_seconds,
            "prior_peak": prior_peak}
