"""One cell's training job: staged model + data -> the cell's model/, train_log.tsv,
train_stats.tsv and run.json (written last: its presence means the cell's files are complete).

Findings (a 4-bit method without CUDA, a NaN loss, out of memory, a tokenizer that cannot write
the target) are recorded as a failed cell and the job succeeds, so the summary lists them.
Mistakes (a bad column, an unseen label, settings peft refuses) stop the job with one line.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from transformers import set_seed  # random, numpy, torch and every accelerator's generator

from ..columns import FAILED, OK, ROW_STATUS, TRAIN_COSTS
from ..engine.checkpoint import CHECKPOINT_FORMAT, Checkpointer
from ..engine.device import (PhaseMeter, attention_implementation, mark_memory_baseline, pick_device, precision_name,
                              resolve_dtype)
from ..engine.gpus import GpuClaim
from ..engine.loop import LoopResult, LoopState, TrainingData, TrainingHparams, train_loop
from ..errors import CellFailure, ConfigError, first_line
from ..methods import method_of
from ..plan.layout import MODEL_DIR, RUN_FILE, TOKENIZER_DIR, TRAIN_LOG_FILE, TRAIN_STATS_FILE
from ..plan.specs import TrainSpec
from ..plan.tune import KEPT_CHECKPOINT, rung_stop_step  # a rung's kept checkpoint: the rules name it too
from ..records import device_description, git_commit, package_versions, read_json, write_json, write_tsv
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
    """A halving rung (TrainSpec.rung, as rules/halving.smk gives it): train with the whole run's
    schedule, stop after `share` of the run's steps (at least `min_steps`: plan/tune.py
    rung_stop_step; the plan cannot know a run's length), keep that step's checkpoint in
    KEPT_CHECKPOINT/; `from_checkpoint`: the previous rung's KEPT_CHECKPOINT/ folder to continue from
    (read, never written; freed or refused, the rung trains from step 0: engine.checkpoint)."""
    share: float
    min_steps: int = 1
    from_checkpoint: str | None = None

    def stop(self, total_steps: int) -> int:
        return rung_stop_step(total_steps, self.share, self.min_steps)

    @classmethod
    def from_spec(cls, rung: dict | None) -> Rung | None:
        if rung is None:
            return None
        unknown = sorted(set(rung) - {"share", "min_steps", "from_checkpoint"})
        if unknown:
            raise ConfigError(f"rung.{unknown[0]}: unknown key; a rung has share, min_steps and from_checkpoint")
        share, min_steps = rung.get("share"), rung.get("min_steps", 1)
        if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 < share <= 1:
            raise ConfigError(f"rung.share: {share!r} is not a share of the run's steps in (0, 1]")
        if not isinstance(min_steps, int) or isinstance(min_steps, bool) or min_steps < 1:
            raise ConfigError(f"rung.min_steps: {min_steps!r} is not a whole number of steps >= 1")
        source = rung.get("from_checkpoint")
        if source is not None and not isinstance(source, str):
            raise ConfigError(f"rung.from_checkpoint: {source!r} is not a folder path")
        return cls(share, min_steps, source)


RUN_IDENTITY = ("cell", "hparams", "task", "model", "rung")  # the spec's fields a run.json records: what it trained
RUN_LOCK_FILE = ".training.lock"  # in a run folder: held by the process training it


def run_record(spec: TrainSpec, device, gpu: GpuClaim | None = None) -> dict:
    return {
        **{k: getattr(spec, k) for k in RUN_IDENTITY},
        "status": "running", "error": None, "device": device_description(device) + (gpu.describe() if gpu else ""),
        "gpu": gpu.record() if gpu else None,
        "versions": package_versions(), "git_commit": git_commit(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint_format": CHECKPOINT_FORMAT,  # a checkpoint of another format is not resumed (engine.checkpoint)
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
    """Load, train, record. `gpu`: the slot scripts/train.py claimed (peftgrid.engine.gpus), recorded in run.json.
    One process at a time trains a run folder (run_folder_lock): after waiting for another, its
    record stands if it finished this very spec."""
    out_dir = Path(out_dir)
    with run_folder_lock(out_dir) as waited:
        done = finished_record(out_dir, spec) if waited else None
        if done is not None:
            print("the other process finished this cell with the same settings: its files stand", flush=True)
            return done
        return _train_cell(spec, model_dir, data_dirs, out_dir, gpu)


@contextlib.contextmanager
def run_folder_lock(out_dir: Path):
    """Hold the run folder's lock while training in it (flock: released when the process ends, however
    it ends). A Snakemake killed with `kill -9` leaves its jobs running; restarted, it starts the same
    cells again (--rerun-incomplete): the new job waits for the old one instead of writing the same
    files beside it. Yields whether it waited."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / RUN_LOCK_FILE, "a+") as fh:
        waited = False
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("another process is training this cell (a job of an earlier Snakemake, still running after "
                  "that Snakemake was killed?): waiting for it to end", flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
            waited = True
        except OSError:  # a file system without locks: nothing to guard with
            pass
        yield waited


def finished_record(out_dir: Path, spec: TrainSpec) -> dict | None:
    """The folder's run.json if its run finished (ok or failed) with every file written, trained this
    spec and ran this code and these library versions; else None (then the cell trains again)."""
    path = out_dir / RUN_FILE
    if not all((out_dir / name).exists() for name in (RUN_FILE, MODEL_DIR, TRAIN_LOG_FILE, TRAIN_STATS_FILE)):
        return None
    record = read_json(path)
    # as write_json wrote it: a JSON round trip with its encoder
    identity = json.loads(json.dumps({k: getattr(spec, k) for k in RUN_IDENTITY}, default=str))
    same_code = record.get("git_commit") == git_commit() and record.get("versions") == package_versions()
    if record.get("status") in (OK, FAILED) and same_code and {k: record.get(k) for k in RUN_IDENTITY} == identity:
        return record
    return None


def _train_cell(spec: TrainSpec, model_dir: Path, data_dirs: dict[str, Path], out_dir: Path,
                gpu: GpuClaim | None) -> dict:
    rung = Rung.from_spec(spec.rung)
    hp = TrainingHparams.of(spec.hparams)  # from here on: its typed fields, and hp.hparams (the method reads it)
    device = pick_device()
    record = run_record(spec, device, gpu)
    stats = {"status": "running", "device": record["device"]}
    state = LoopState()  # its loss log is written whatever happens
    tmp_model = out_dir / "model.tmp"
    shutil.rmtree(tmp_model, ignore_errors=True)
    verify_staged(model_dir)
    try:
        cell = load_cell(spec, hp, model_dir, data_dirs, device, record, stats)
        train(cell, hp, device, out_dir / "checkpoint", rung, state, record, stats)
        cell.method.save(cell.model, hp.hparams, tmp_model, cell.new_weights)
        cell.tokenizer.save_pretrained(tmp_model / TOKENIZER_DIR)
    except CellFailure as e:
        stats.update(status=FAILED, error=first_line(e))
    except torch.OutOfMemoryError as e:
        stats.update(status=FAILED, error=f"out of memory ({first_line(e)[:120]}); try a smaller batch_size")
    write_outputs(out_dir, tmp_model, record, stats, state.log_rows, keep_checkpoint=rung is not None)
    return record


@dataclass
class LoadedCell:
    """A cell ready to train: its method, tokenizer, encoded data and model."""
    method: object
    tokenizer: object
    data: TrainingData
    model: object
    new_weights: list[str]


def load_cell(spec: TrainSpec, hp: TrainingHparams, model_dir: Path, data_dirs: dict[str, Path], device,
              record: dict, stats: dict) -> LoadedCell:
    """The data first (cheap, checked), then always a fresh copy of the staged pretrained weights;
    what was loaded and how the steps will run go into run.json and train_stats."""
    task, ttype, method = spec.task, task_type(spec.task["type"]), method_of(hp.kind)
    method.check_device(hp.hparams, device)
    resolve_dtype(device, hp.precision)
    train_rows, val_rows, labels = load_training_data(spec, data_dirs)
    record["labels"] = labels
    method.import_libraries()
    from transformers import AutoTokenizer

    t_load = time.perf_counter()
    tokenizer = ttype.prepare_tokenizer(AutoTokenizer.from_pretrained(model_dir, **NO_REMOTE_CODE))
    record.update(ttype.check_training_data(task, tokenizer, train_rows, spec.model["name"]))
    train_ex = ttype.encode(task, train_rows, tokenizer, labels, hp.max_length)
    data = TrainingData(
        train=train_ex, val=ttype.encode(task, val_rows, tokenizer, labels, hp.max_length) if val_rows else None,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        steps_per_epoch=math.ceil(len(train_ex) / hp.batch_size),
        total_steps=schedule_length(len(train_ex), hp) if method.trains(hp.hparams) else 0)
    record["total_steps"] = data.total_steps  # the schedule's length (a rung stops before it)
    set_seed(hp.seed)
    mark_memory_baseline()  # peak memory counts the model's weights (engine.device)
    model, new_weights = method.load_base(model_dir, ttype, labels, hp.hparams, device,
                                          spec.model.get("allow_pickle", False))
    model = method.place(method.prepare(model, hp.hparams, ttype, data.total_steps, new_weights), device)
    trainable, total = method.count_parameters(model)
    # how the steps run, for run.json: the precision setting on this device, attention kernel, compile, optimizer
    record["runtime"] = {
        "precision": precision_name(device, hp.precision), "attention": attention_implementation(model),
        "compiled": hp.compile and data.total_steps > 0, "pinned_batches": device.type == "cuda", "optimizer": None}
    if record["runtime"]["compiled"]:
        model.compile()  # in place: the module, its parameter names and its saving stay as they are
    stats.update(trainable_params=trainable, total_params=total, trainable_pct=round(100.0 * trainable / total, 6),
                 load_time_s=round(time.perf_counter() - t_load, 3), n_train=len(train_ex),
                 truncated_train=ttype.truncated(train_ex, hp.max_length))
    return LoadedCell(method, tokenizer, data, model, new_weights)


def schedule_length(n_train: int, hp: TrainingHparams) -> int:
    """Optimizer steps of the whole run: its epochs' worth of batches, capped by max_steps."""
    steps = math.ceil(math.ceil(n_train / hp.batch_size) * hp.epochs)
    return steps if hp.max_steps is None else min(steps, hp.max_steps)


def train(cell: LoadedCell, hp: TrainingHparams, device, checkpoint_dir: Path, rung: Rung | None, state: LoopState,
          record: dict, stats: dict) -> None:
    """The loop, resumable (SIGTERM checkpoints and stops), measured; its costs into `stats`."""
    start_from = Path(rung.from_checkpoint) if rung and rung.from_checkpoint else None
    ckpt = Checkpointer(checkpoint_dir, hp.hparams, hp.checkpoint_every_steps, start_from=start_from)
    meter = PhaseMeter(device)
    ckpt.install_sigterm()
    try:
        with meter:
            result = train_loop(cell.model, cell.method, hp, cell.data, device, state, ckpt=ckpt, meter=meter,
                                stop_at=None if rung is None else rung.stop(cell.data.total_steps))
    finally:
        ckpt.restore_sigterm()
    record["resumed"] = state.prior_seconds > 0
    record["runtime"]["optimizer"] = result.optimizer
    stats.update(status=OK, error=None, **cost_stats(state, result, meter, cell.data, device),
                 **cell.method.extra_stats(cell.model))


def cost_stats(state: LoopState, result: LoopResult, meter: PhaseMeter, data: TrainingData, device) -> dict:
    """train_stats' cost columns, over every segment of a resumed run. Training time is the optimizer
    steps only: validation passes and checkpoints (writing, loading, keeping the best weights) have
    their own columns (engine.loop)."""
    seconds = max(state.prior_seconds + meter.seconds - state.val_seconds - state.checkpoint_seconds, 0.0)
    # paged optimizer states sit outside torch's allocator: added at their size (engine.device)
    peak = max(meter.peak_mem_mb, state.prior_peak_mb) + (result.paged_state_mb if device.type == "cuda" else 0.0)
    epochs_done = state.step / data.steps_per_epoch if data.steps_per_epoch else 0.0
    return dict(
        train_time_s=round(seconds, 3), time_per_epoch_s=round(seconds / epochs_done, 3) if epochs_done else 0.0,
        val_time_s=round(state.val_seconds, 3), checkpoint_time_s=round(state.checkpoint_seconds, 3),
        peak_train_mem_mb=round(peak, 1),
        peak_train_mem_reserved_mb=None if meter.peak_reserved_mb is None else round(meter.peak_reserved_mb, 1),
        mem_measure=meter.measure,
        train_examples_per_s=round(state.examples / seconds, 2) if state.examples and seconds else 0.0,
        steps=state.step, epochs=round(epochs_done, 4), final_train_loss=state.train_loss,
        final_val_loss=None if state.val_loss is None else round(state.val_loss, 6))


def write_outputs(out_dir: Path, tmp_model: Path, record: dict, stats: dict, log_rows: list[dict],
                  keep_checkpoint: bool) -> None:
    """model/ (or FAILED.json), the loss log, the stats, a rung's kept checkpoint, and run.json last:
    its presence means the cell's files are complete."""
    record["status"], record["error"] = stats["status"], stats.get("error")
    record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record["stats"] = stats
    if stats["status"] != OK:
        shutil.rmtree(tmp_model, ignore_errors=True)
        tmp_model.mkdir(parents=True)
        write_json(tmp_model / "FAILED.json", {"error": stats["error"]})
    write_tsv(out_dir / TRAIN_LOG_FILE, log_rows, LOG_COLUMNS)
    write_tsv(out_dir / TRAIN_STATS_FILE, [stats], STATS_COLUMNS)
    final_model = out_dir / MODEL_DIR
    shutil.rmtree(final_model, ignore_errors=True)
    tmp_model.rename(final_model)
    kept, working = out_dir / KEPT_CHECKPOINT, out_dir / "checkpoint"
    shutil.rmtree(kept, ignore_errors=True)
    if keep_checkpoint and stats["status"] == OK and working.is_dir():
        working.rename(kept)  # before run.json: a finished rung has its checkpoint
    write_json(out_dir / RUN_FILE, record)
    shutil.rmtree(working, ignore_errors=True)
