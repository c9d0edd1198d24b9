"""One cell's training job: staged model + data -> the cell's model/, train_log.tsv,
train_stats.tsv and run.json (written last: its presence means the cell's files are complete).

Findings (a 4-bit method without CUDA, a NaN loss, out of memory, a tokenizer that cannot write
the target) are recorded as a failed cell and the job succeeds, so the summary lists them.
Mistakes (a bad column, an unseen label, settings peft refuses) stop the job with one line.
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from transformers import set_seed  # random, numpy, torch and every accelerator's generator

from ..columns import ROW_STATUS, TRAIN_COSTS
from ..engine.checkpoint import Checkpointer
from ..engine.device import (PhaseMeter, attention_implementation, mark_memory_baseline, pick_device, precision_name,
                              resolve_dtype)
from ..engine.gpus import GpuClaim
from ..engine.loop import train_loop
from ..errors import CellFailure, ConfigError, first_line
from ..methods import method_of
from ..plan.layout import RUN_FILE, TRAIN_LOG_FILE, TRAIN_STATS_FILE
from ..plan.specs import TrainSpec
from ..plan.tune import KEPT_CHECKPOINT, rung_stop_step  # a rung's kept checkpoint: the rules name it too
from ..records import device_description, git_commit, package_versions, write_json, write_tsv
from ..staged import staged_meta
from ..staging.models import NO_REMOTE_CODE, verify_staged
from ..tasks import task_type

LOG_COLUMNS = ["step", "epoch", "train_loss", "val_loss", "reg_loss", "lr", "elapsed_s"]
STATS_COLUMNS = [*ROW_STATUS, "device", *TRAIN_COSTS, "val_time_s", "checkpoint_time_s",
                 "peak_train_mem_reserved_mb", "mem_measure", "train_examples_per_s", "steps",
                 "epochs", "load_time_s", "n_train", "truncated_train", "final_train_loss", "final_val_loss",
                 "encoder_time_s", "cached_examples"]




@dataclass(frozen=True)
class Rung:
    """A halving rung (TrainSpec.rung): train with the whole run's schedule, stop after
    `stop_at_step`, keep that step's checkpoint in KEPT_CHECKPOINT/; `from_checkpoint`: another
    rung's KEPT_CHECKPOINT/ folder to continue from (read, never written)."""
    stop_at_step: int | None  # None: to the run's last step
    from_checkpoint: str | None = None
    # or, as the halving plan gives it (it cannot know a run's length): a share of the run's steps, at
    # least min_steps (plan/tune.py rung_stop_step)
    share: float | None = None
    min_steps: int = 1

    def stop(self, total_steps: int) -> int:
        if self.share is not None:
            return rung_stop_step(total_steps, self.share, self.min_steps)
        return self.stop_at_step or total_steps

    @classmethod
    def from_spec(cls, rung: dict | None) -> Rung | None:
        if rung is None:
            return None
        unknown = sorted(set(rung) - {"stop_at_step", "from_checkpoint", "share", "min_steps"})
        if unknown:
            raise ConfigError(f"rung.{unknown[0]}: unknown key; a rung has stop_at_step (or share and min_steps) "
                              f"and from_checkpoint")
        share, min_steps = rung.get("share"), rung.get("min_steps", 1)
        if share is not None and (not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 < share <= 1):
            raise ConfigError(f"rung.share: {share!r} is not a share of the run's steps in (0, 1]")
        if not isinstance(min_steps, int) or isinstance(min_steps, bool) or min_steps < 1:
            raise ConfigError(f"rung.min_steps: {min_steps!r} is not a whole number of steps >= 1")
        stop = rung.get("stop_at_step")
        if stop is not None and (not isinstance(stop, int) or isinstance(stop, bool) or stop < 1):
            raise ConfigError(f"rung.stop_at_step: {stop!r} is not a whole number of steps >= 1")
        source = rung.get("from_checkpoint")
        if source is not None and not isinstance(source, str):
            raise ConfigError(f"rung.from_checkpoint: {source!r} is not a folder path")
        if source is not None and not (Path(source) / "state.pt").is_file():
            raise ConfigError(f"rung.from_checkpoint: no checkpoint at {source}; run the rung that keeps it first")
        return cls(stop, source, share, min_steps)


def run_record(spec: TrainSpec, device, gpu: GpuClaim | None = None) -> dict:
    return {
        "cell": spec.cell, "hparams": spec.hparams, "task": spec.task, "model": spec.model,
        "status": "running", "error": None, "device": device_description(device) + (gpu.describe() if gpu else ""),
        "gpu": gpu.record() if gpu else None,
        "versions": package_versions(), "git_commit": git_commit(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rung": spec.rung,
    }


def load_training_data(spec: TrainSpec, data_dirs: dict[str, Path]):
    """(train rows, validation rows or None, label list) — cheap, before any model is loaded."""
    task, ttype = spec.task, task_type(spec.task["type"])
    train_rows = ttype.load_rows(task, data_dirs[task["dataset"]], task["train_split"], task.get("train_max_examples"),
                                 task["dataset"])
    labels = ttype.label_list(task, train_rows, staged_meta(data_dirs[task["dataset"]]))
    val_rows = None
    if task.get("validation"):
        v = task["validation"]
        val_rows = ttype.load_rows(task, data_dirs[v["dataset"]], v["split"], v.get("max_examples"), v["dataset"])
        ttype.check_labels(task, val_rows, labels, f"eval set {v['name']!r}")
    return train_rows, val_rows, labels


def train_cell(spec: TrainSpec, model_dir: Path, data_dirs: dict[str, Path], out_dir: Path,
               gpu: GpuClaim | None = None) -> dict:
    """`gpu`: the slot scripts/train.py claimed (peftgrid.engine.gpus), recorded in run.json."""
    out_dir = Path(out_dir)
    rung = Rung.from_spec(spec.rung)
    hp, task = spec.hparams, spec.task
    ttype, method = task_type(task["type"]), method_of(hp["kind"])
    device = pick_device()
    record = run_record(spec, device, gpu)
    stats = {"status": "running", "device": record["device"]}
    log_rows: list[dict] = []
    tmp_model = out_dir / "model.tmp"
    shutil.rmtree(tmp_model, ignore_errors=True)
    verify_staged(model_dir)
    try:
        method.check_device(hp, device)
        resolve_dtype(device, hp["precision"])
        train_rows, val_rows, labels = load_training_data(spec, data_dirs)
        record["labels"] = labels

        # ---- model: always a fresh copy of the staged pretrained weights
        method.import_libraries()
        from transformers import AutoTokenizer

        t_load = time.perf_counter()
        tokenizer = ttype.prepare_tokenizer(AutoTokenizer.from_pretrained(model_dir, **NO_REMOTE_CODE))
        record.update(ttype.check_training_data(task, tokenizer, train_rows, spec.model["name"]))
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        train_ex = ttype.encode(task, train_rows, tokenizer, labels, hp["max_length"])
        val_ex = ttype.encode(task, val_rows, tokenizer, labels, hp["max_length"]) if val_rows else None
        steps_per_epoch = math.ceil(len(train_ex) / hp["batch_size"])
        total_steps = math.ceil(steps_per_epoch * hp["epochs"])
        if hp["max_steps"] is not None:
            total_steps = min(total_steps, hp["max_steps"])
        if not method.trains(hp):
            total_steps = 0
        record["total_steps"] = total_steps  # the schedule's length (a rung stops before it)
        set_seed(hp["seed"])
        mark_memory_baseline()  # peak memory counts the model's weights (engine.device)
        model, new_weights = method.load_base(model_dir, ttype, labels, hp, device, spec.model.get("allow_pickle", False))
        model = method.place(method.prepare(model, hp, ttype, total_steps, new_weights), device)
        trainable, total = method.count_parameters(model)
        # how the steps run, for run.json: the precision setting on this device, attention kernel, compile, optimizer
        runtime = record["runtime"] = {
            "precision": precision_name(device, hp["precision"]), "attention": attention_implementation(model),
            "compiled": bool(hp.get("compile")) and total_steps > 0, "pinned_batches": device.type == "cuda",
            "optimizer": None}
        if runtime["compiled"]:
            model.compile()  # in place: the module, its parameter names and its saving stay as they are
        load_time = time.perf_counter() - t_load
        stats.update(trainable_params=trainable, total_params=total,
                     trainable_pct=round(100.0 * trainable / total, 6), load_time_s=round(load_time, 3),
                     n_train=len(train_ex), truncated_train=ttype.truncated(train_ex, hp["max_length"]))

        # ---- train
        ckpt = Checkpointer(out_dir / "checkpoint", hp, hp["checkpoint_every_steps"],
                            start_from=rung and rung.from_checkpoint and Path(rung.from_checkpoint))
        meter = PhaseMeter(device)
        ckpt.install_sigterm()
        try:
            with meter:
                final = train_loop(model, method, hp, train_ex, val_ex, pad_id, device, total_steps, steps_per_epoch,
                                   log_rows, ckpt, meter,
                                   stop_at=None if rung is None else rung.stop(total_steps))
        finally:
            ckpt.restore_sigterm()
        wall = final["prior_seconds"] + meter.seconds  # a resumed run adds up its segments
        # training time is the optimizer steps only: validation passes and checkpoints (writing,
        # loading, keeping the best weights) have their own columns (engine.loop)
        seconds = max(wall - final["val_seconds"] - final["checkpoint_seconds"], 0.0)
        # paged optimizer states sit outside torch's allocator: added at their size (engine.device)
        peak = max(meter.peak_mem_mb, final["prior_peak"]) + (final["paged_state_mb"] if device.type == "cuda" else 0.0)
        epochs_done = final["step"] / steps_per_epoch if steps_per_epoch else 0.0
        stats.update(
            status="ok", error=None,
            train_time_s=round(seconds, 3),
            time_per_epoch_s=round(seconds / epochs_done, 3) if epochs_done else 0.0,
            val_time_s=round(final["val_seconds"], 3), checkpoint_time_s=round(final["checkpoint_seconds"], 3),
            peak_train_mem_mb=round(peak, 1),
            peak_train_mem_reserved_mb=None if meter.peak_reserved_mb is None else round(meter.peak_reserved_mb, 1),
            mem_measure=meter.measure,
            train_examples_per_s=round(final["examples"] / seconds, 2) if final["examples"] and seconds else 0.0,
            steps=final["step"], epochs=round(epochs_done, 4),
            final_train_loss=final["train_loss"], final_val_loss=final["val_loss"], **method.extra_stats(model))
        record["resumed"] = final["prior_seconds"] > 0
        runtime["optimizer"] = final["optimizer"]
        method.save(model, hp, tmp_model, new_weights)
        tokenizer.save_pretrained(tmp_model / "tokenizer")
    except CellFailure as e:
        stats.update(status="failed", error=first_line(e))
    except torch.OutOfMemoryError as e:
        stats.update(status="failed", error=f"out of memory ({first_line(e)[:120]}); try a smaller batch_size")
    record["status"], record["error"] = stats["status"], stats.get("error")
    record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record["stats"] = stats
    if stats["status"] != "ok":
        shutil.rmtree(tmp_model, ignore_errors=True)
        tmp_model.mkdir(parents=True)
        write_json(tmp_model / "FAILED.json", {"error": stats["error"]})
    write_tsv(out_dir / TRAIN_LOG_FILE, log_rows, LOG_COLUMNS)
    write_tsv(out_dir / TRAIN_STATS_FILE, [stats], STATS_COLUMNS)
    final_model = out_dir / "model"
    shutil.rmtree(final_model, ignore_errors=True)
    tmp_model.rename(final_model)
    kept = out_dir / KEPT_CHECKPOINT
    shutil.rmtree(kept, ignore_errors=True)
    if rung and stats["status"] == "ok" and (out_dir / "checkpoint").is_dir():
        (out_dir / "checkpoint").rename(kept)  # before run.json: a finished rung has its checkpoint
    write_json(out_dir / RUN_FILE, record)  # last: a run.json means the cell's files are complete
    shutil.rmtree(out_dir / "checkpoint", ignore_errors=True)
    return record
