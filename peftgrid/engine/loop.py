"""The training loop: AdamW (from the method; torch's fused kernel where it has one), linear
warmup + decay, gradient clipping, validation loss every `eval_every_steps`, fixed seeds, one host
sync per logging step, and exact resume from the cell's checkpoint.

Checkpoint policy: `checkpoint: last` (default) keeps the weights after the final step;
`checkpoint: best` keeps the trainable weights from the logged step with the lowest validation
loss (needs a validation eval set that is not reported).

Time: the loop reports apart what is not a training step — validation passes (`val_seconds`) and
everything checkpoints cost (`checkpoint_seconds`: writing and loading the resume checkpoint,
keeping a copy of the best weights and putting them back at the end) — so the job's training time
is the optimizer steps alone, however often it validates, checkpoints or resumes.
"""
from __future__ import annotations

import math
import random
import time

import torch

from ..errors import CellFailure, Preempted
from .batching import batch_order, collate, to_device
from .checkpoint import Checkpointer, python_rng_from_tensor, python_rng_to_tensor, trainable_state
from .device import PhaseMeter, autocast, paged_state_mb


class NonFiniteLoss(CellFailure):
    """The loss became NaN or infinite (a recorded cell failure)."""


def optimizer_name(optimizer) -> str:
    """'AdamW (fused)', 'AdamW (foreach)', 'PagedAdamW32bit (bitsandbytes)': what stepped the
    weights (a resumed run keeps the implementation its checkpoint was written with)."""
    cls = type(optimizer).__name__
    if type(optimizer).__module__.startswith("bitsandbytes"):
        return f"{cls} (bitsandbytes)"
    group = optimizer.param_groups[0] if optimizer.param_groups else {}
    impl = "fused" if group.get("fused") else "foreach" if group.get("foreach") else "for-loop"
    return f"{cls} ({impl})"


def linear_schedule(optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def progress_line(row: dict, total_steps: int, examples: int) -> str:
    """One line of the job log: step/total, epoch, losses, lr, examples/s, elapsed and ETA."""
    step, elapsed = row["step"], row["elapsed_s"]
    rate = examples / elapsed if elapsed > 0 else 0.0
    eta = elapsed / step * (total_steps - step) if step else float("nan")
    parts = [f"step {step}/{total_steps}", f"epoch {row['epoch']:.2f}"]
    if row["train_loss"] is not None:
        parts.append(f"train_loss {row['train_loss']:.4f}")
    if row["val_loss"] is not None:
        parts.append(f"val_loss {row['val_loss']:.4f}")
    parts += [f"lr {row['lr']:.2e}", f"{rate:.1f} ex/s", f"elapsed {elapsed:.0f}s",
              f"ETA {eta:.0f}s" if eta == eta else "ETA -"]
    return " | ".join(parts)


@torch.no_grad()
def mean_loss(model, examples: list[dict], batch_size: int, pad_id: int, device, precision: str,
              method=None) -> float:
    """The validation loss: the mean over every scored unit — examples for sequence classification,
    labelled tokens for token and generation tasks (a token-weighted mean, not a mean of batch
    means, so a short last batch weighs what its tokens weigh)."""
    was_training = model.training
    model.eval()
    lengths = [len(e["input_ids"]) for e in examples]
    total, count = torch.zeros((), device=device), torch.zeros((), device=device)
    for idx in batch_order(lengths, batch_size, None, True):
        batch = to_device(collate([examples[i] for i in idx], pad_id), device)
        with autocast(device, precision):
            loss = model(**batch).loss
        if method is not None:
            loss, _ = method.split_loss(model, loss)  # the task's loss, without a method's regulariser
        units = scored_units(batch["labels"], model)
        # a batch with nothing to score (every label ignored) has a NaN mean: it adds nothing
        total += torch.where(units > 0, loss.float() * units, torch.zeros_like(total))
        count += units
    model.train(was_training)
    return float(total / count.clamp(min=1))


def scored_units(labels: torch.Tensor, model) -> torch.Tensor:
    """How many units a batch's mean loss averages over: its labelled examples (an unseen label,
    kept out with unseen_labels: ignore, is -100 and not in the loss's mean), or its labelled tokens
    (a causal LM predicts token t+1 from t, so its first label is never scored)."""
    if labels.dim() == 1:
        return (labels != -100).sum().float()
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False) or not _is_causal(model):
        return (labels != -100).sum().float()
    return (labels[:, 1:] != -100).sum().float()


def _is_causal(model) -> bool:
    names = getattr(getattr(model, "config", None), "architectures", None) or [type(model).__name__]
    return any("CausalLM" in n or "LMHead" in n for n in names) or "CausalLM" in type(model).__name__


def train_loop(model, method, hp, train_ex, val_ex, pad_id, device, total_steps, steps_per_epoch, log_rows,
               ckpt: Checkpointer | None = None, meter: PhaseMeter | None = None, stop_at: int | None = None) -> dict:
    """Train `model` for `total_steps`; append the loss curve to `log_rows`; return the final state.
    `stop_at`: stop after that step (a halving rung) with the schedule of `total_steps`, and save
    the checkpoint of that step (a later run continues from it exactly).
    `meter`: the PhaseMeter running around this call; a checkpoint keeps its peak so far, so a
    resumed run's peak memory covers every segment."""
    precision = hp["precision"]
    lengths = [len(e["input_ids"]) for e in train_ex]
    rng = random.Random(hp["seed"])  # batch order
    step, examples, prior_seconds, prior_peak = 0, 0, 0.0, 0.0
    # wall time spent on validation passes and checkpoint writes: reported apart, not as training
    side = {"val_seconds": 0.0, "checkpoint_seconds": 0.0}
    best = {"val_loss": math.inf, "state": None, "snapshot": None}
    last_train_loss, val = None, None
    scheduler = None

    def log(train_loss, with_val: bool, reg_loss=None):
        t_val = time.perf_counter()
        v = mean_loss(model, val_ex, hp["eval_batch_size"], pad_id, device, precision, method) if (with_val and val_ex) else None
        side["val_seconds"] += time.perf_counter() - t_val
        log_rows.append({"step": step, "epoch": round(step / steps_per_epoch, 4) if steps_per_epoch else 0,
                         "train_loss": None if train_loss is None else round(train_loss, 6),
                         "val_loss": None if v is None else round(v, 6),
                         "reg_loss": None if reg_loss is None else round(reg_loss, 6),
                         "lr": scheduler.get_last_lr()[0] if scheduler else 0.0,
                         "elapsed_s": round(prior_seconds + time.perf_counter() - t0, 3)})
        print(progress_line(log_rows[-1], total_steps, examples), flush=True)
        if v is not None and hp["checkpoint"] == "best" and v < best["val_loss"]:
            t_keep = time.perf_counter()
            best["val_loss"] = v
            # the trainable weights, AdaLoRA's rank buffers and what else the method needs (its rank pattern)
            best["state"] = {n: t.clone() for n, t in trainable_state(model).items()}
            best["snapshot"] = method.snapshot(model)
            side["checkpoint_seconds"] += time.perf_counter() - t_keep
        return v

    t0 = time.perf_counter()
    if total_steps == 0:
        val = log(None, True)
        return {"step": 0, "examples": 0, "train_loss": None, "val_loss": val, "prior_seconds": 0.0, "prior_peak": 0.0,
                "optimizer": None, "paged_state_mb": 0.0, **side}

    optimizer = method.make_optimizer(model, hp)
    scheduler = linear_schedule(optimizer, int(hp["warmup_ratio"] * total_steps), total_steps)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    trainable = [p for p in model.parameters() if p.requires_grad]
    loss_sum, loss_count = torch.zeros((), device=device), 0
    reg_sum, has_reg = torch.zeros((), device=device), False  # a method's regulariser (AdaLoRA), logged apart
    resume_batch = 0
    t_resume = time.perf_counter()
    state = ckpt.load() if ckpt else None
    if state:  # go on exactly where the last run stopped
        ckpt.restore(state, model, optimizer, scheduler)
        loop = state["loop"]
        step, examples, loss_count = loop["step"], loop["examples"], loop["loss_count"]
        loss_sum += loop["loss_sum"]
        log_rows[:] = loop["log_rows"]
        last_train_loss, val = loop["last_train_loss"], loop["val"]
        prior_seconds, prior_peak = loop["seconds"], loop["peak_mem_mb"]
        side.update({k: loop.get(k, 0.0) for k in side})
        best["val_loss"] = loop["best_val_loss"]
        best["state"] = state.get("best_state") or None
        best["snapshot"] = loop.get("best_snapshot")
        reg_sum += loop.get("reg_sum", 0.0)
        rng.setstate(python_rng_from_tensor(loop["epoch_rng"]))
        resume_batch = loop["batch_pos"]
        del state  # the loaded copies are in place now: let them go before the first step
        side["checkpoint_seconds"] += time.perf_counter() - t_resume  # the loaded total plus this load
    else:
        val = log(None, True)  # the starting point of the learning curve
    model.train()

    def loop_state(epoch_rng, batch_pos) -> dict:
        return {"step": step, "examples": examples, "loss_sum": loss_sum.detach().cpu(), "loss_count": loss_count,
                "reg_sum": reg_sum.detach().cpu(), "best_snapshot": best["snapshot"],
                "log_rows": list(log_rows), "last_train_loss": last_train_loss, "val": val,
                "seconds": prior_seconds + time.perf_counter() - t0, **side,
                "peak_mem_mb": max(prior_peak, meter.peak_so_far() if meter else 0.0),
                "best_val_loss": best["val_loss"], "epoch_rng": epoch_rng, "batch_pos": batch_pos}

    end = total_steps if stop_at is None else min(stop_at, total_steps)
    while step < end:
        epoch_rng = python_rng_to_tensor(rng)
        batches = batch_order(lengths, hp["batch_size"], rng, hp["group_by_length"])
        start, resume_batch = resume_batch, 0
        for pos in range(start, len(batches)):
            idx = batches[pos]
            batch = to_device(collate([train_ex[i] for i in idx], pad_id), device)
            with autocast(device, precision):
                loss = model(**batch).loss
            task_loss, reg = method.split_loss(model, loss)
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
            method.after_step(model, step)
            optimizer.zero_grad(set_to_none=True)
            loss_sum += task_loss.detach().float()  # stays on the device: no host sync per step
            loss_count += 1
            if reg is not None:
                reg_sum += reg.float()
                has_reg = True
            at_eval = step % hp["eval_every_steps"] == 0 or step == total_steps
            if step % hp["log_every_steps"] == 0 or at_eval:
                mean = float(loss_sum) / loss_count  # the only host sync, at logging steps
                if not math.isfinite(mean):
                    raise NonFiniteLoss(f"loss became {mean} by step {step} (lr {hp['lr']:g}); "
                                        f"lower lr or use precision fp32")
                last_train_loss = round(mean, 6)
                val = log(mean, at_eval, float(reg_sum) / loss_count if has_reg else None)
                loss_sum.zero_()
                reg_sum.zero_()
                loss_count = 0
            stopping = step >= end
            if ckpt and ((step < total_steps and (ckpt.due(step) or ckpt.stop_requested))
                         or (stopping and stop_at is not None)):
                extra = {"best_state": best["state"]} if best["state"] is not None else {}
                t_ckpt = time.perf_counter()
                ckpt.save(model, optimizer, scheduler, {**loop_state(epoch_rng, pos + 1)}, **extra)
                side["checkpoint_seconds"] += time.perf_counter() - t_ckpt
                if ckpt.stop_requested and not stopping:
                    raise Preempted(f"SIGTERM at step {step}: checkpoint saved, the next run resumes from it")
            if ckpt:
                ckpt.after_step(step)
            if stopping:
                break
    if best["state"] is not None:
        t_restore = time.perf_counter()
        tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        with torch.no_grad():
            for n, t in best["state"].items():
                tensors[n].copy_(t.to(tensors[n].device))
        method.restore_snapshot(model, best["snapshot"])
        val = best["val_loss"]
        side["checkpoint_seconds"] += time.perf_counter() - t_restore
    return {"step": step, "examples": examples, "train_loss": last_train_loss,
            "val_loss": None if val is None else round(val, 6), "prior_seconds": prior_seconds, **side,
            "prior_peak": prior_peak, "optimizer": optimizer_name(optimizer), "paged_state_mb": paged_state_mb(optimizer)}
