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
from dataclasses import MISSING, dataclass, field, fields

import torch

from ..errors import CellFailure, ConfigError, Preempted
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


@dataclass(frozen=True)
class TrainingHparams:
    """The hyperparameters the loop and the training job read, typed: built from a cell's hparams
    with the same keys (configs and params are unchanged). The method's own settings (r, alpha, ...)
    stay in `hparams`, the dict the method reads."""
    kind: str
    seed: int
    epochs: float
    max_steps: int | None
    batch_size: int
    eval_batch_size: int
    lr: float
    weight_decay: float
    warmup_ratio: float
    max_grad_norm: float | None
    eval_every_steps: int
    log_every_steps: int
    checkpoint_every_steps: int | None
    max_length: int
    precision: str
    checkpoint: str
    group_by_length: bool
    compile: bool = False  # absent from a cell's hparams unless the config sets it
    hparams: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, hparams: dict) -> TrainingHparams:
        keys = [f.name for f in fields(cls) if f.name != "hparams"]
        missing = [f.name for f in fields(cls) if f.name not in hparams and f.default is MISSING
                   and f.default_factory is MISSING]
        if missing:
            raise ConfigError(f"hparams.{missing[0]}: missing from the cell's settings (plan.runs.resolve_hparams)")
        return cls(**{k: hparams[k] for k in keys if k in hparams}, hparams=dict(hparams))

    def __post_init__(self):
        for f in fields(self):
            value, kinds = getattr(self, f.name), _ALLOWED[f.type]
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ConfigError(f"hparams.{f.name}: {value!r} is not {f.type}")
        for name in ("batch_size", "eval_batch_size", "eval_every_steps", "log_every_steps"):
            if getattr(self, name) < 1:  # the loop divides by them
                raise ConfigError(f"hparams.{name}: {getattr(self, name)} is not a whole number >= 1")
        if self.checkpoint not in ("last", "best"):
            raise ConfigError(f"hparams.checkpoint: {self.checkpoint!r} is not last or best")


# what each annotation above admits (a whole number is a float too; a bool is no number)
_ALLOWED = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,),
            "int | None": (int, type(None)), "float | None": (int, float, type(None))}


@dataclass(frozen=True)
class TrainingData:
    """What the loop trains and validates on, and the schedule's length."""
    train: list[dict]
    val: list[dict] | None
    pad_id: int
    steps_per_epoch: int
    total_steps: int  # warmup and decay span these steps, also in a run that stops earlier (a rung)


@dataclass
class LoopState:
    """Everything the loop changes as it runs, in one place: a checkpoint saves it whole and a
    resumed run continues from it, so a run killed and resumed ends as one that never stopped."""
    step: int = 0
    examples: int = 0
    log_rows: list[dict] = field(default_factory=list)
    train_loss: float | None = None  # the last logged mean training loss
    val_loss: float | None = None    # the last logging step's validation loss (after `checkpoint: best`, the best)
    # the logging window: sums since the last log row, kept on the device (no host sync per step)
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    reg_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))  # a method's regulariser (AdaLoRA)
    window_steps: int = 0
    has_reg: bool = False
    # checkpoint: best — the lowest validation loss so far and what to put back at the end
    best_val_loss: float = math.inf
    best_weights: dict | None = None
    best_snapshot: object = None
    # the batch order: its generator's state at the start of the epoch in progress (None: seeded,
    # not yet drawn), and the next batch of that epoch
    epoch_rng: dict | None = None
    batch_pos: int = 0
    # what earlier segments of this run cost (a resumed run adds them up)
    prior_seconds: float = 0.0
    prior_peak_mb: float = 0.0
    val_seconds: float = 0.0         # validation passes: not training time
    checkpoint_seconds: float = 0.0  # writing/loading checkpoints, keeping and restoring the best weights

    def to_checkpoint(self, segment_seconds: float, segment_peak_mb: float) -> dict:
        """Plain values and CPU tensors (checkpoints load with weights_only=True); the costs
        include this segment's so far."""
        saved = {f.name: getattr(self, f.name) for f in fields(self)}
        saved.update(log_rows=list(self.log_rows), loss_sum=self.loss_sum.detach().cpu(),
                     reg_sum=self.reg_sum.detach().cpu(), prior_seconds=self.prior_seconds + segment_seconds,
                     prior_peak_mb=max(self.prior_peak_mb, segment_peak_mb))
        return saved

    def restore(self, saved: dict, device) -> None:
        """In place: whoever holds this state (the job, for its loss log) sees the restored one."""
        for f in fields(self):
            setattr(self, f.name, saved[f.name])
        self.loss_sum, self.reg_sum = self.loss_sum.to(device), self.reg_sum.to(device)


@dataclass(frozen=True)
class LoopResult:
    """What the run stepped with, beyond its state (run.json's runtime, the peak-memory sum)."""
    optimizer: str | None
    paged_state_mb: float


def train_loop(model, method, hp: TrainingHparams, data: TrainingData, device, state: LoopState, *,
               ckpt: Checkpointer | None = None, meter: PhaseMeter | None = None,
               stop_at: int | None = None) -> LoopResult:
    """Train `model` from `state` (or from what `ckpt` holds) to the schedule's last step; `state`
    holds the loss curve and costs when this returns or raises. `stop_at`: stop after that step (a
    halving rung) and checkpoint it, so a later run continues exactly. `meter`: the PhaseMeter
    running around this call; a checkpoint keeps its peak so far, so a resumed run's peak memory
    covers every segment."""
    return TrainingLoop(model, method, hp, data, device, state, ckpt, meter).run(stop_at)


class TrainingLoop:
    """One segment of a run, read top to bottom: start or resume; epochs of steps, each followed
    by its logging and checkpointing; the best weights put back."""

    def __init__(self, model, method, hp: TrainingHparams, data: TrainingData, device, state: LoopState,
                 ckpt: Checkpointer | None, meter: PhaseMeter | None):
        self.model, self.method, self.hp, self.data, self.device = model, method, hp, data, device
        self.state, self.ckpt, self.meter = state, ckpt, meter
        self.lengths = [len(e["input_ids"]) for e in data.train]
        self.optimizer = self.scheduler = self.scaler = None
        self.started = time.perf_counter()  # this segment's clock

    def run(self, stop_at: int | None) -> LoopResult:
        if self.data.total_steps == 0:  # a method that trains nothing: its validation loss only
            self.log(None, with_val=True)
            return LoopResult(None, 0.0)
        self.make_optimizer()
        if not self.resume():
            self.log(None, with_val=True)  # the starting point of the learning curve
        end = self.data.total_steps if stop_at is None else min(stop_at, self.data.total_steps)
        if self.state.step > end:
            raise ConfigError(f"rung.share: its stop at step {stop_at} is before step {self.state.step}, where the "
                              f"checkpoint it continues from stopped")
        self.model.train()
        while self.state.step < end:
            self.train_epoch(end)
        if stop_at is not None and self.ckpt:
            self.save_checkpoint()  # a rung's last step: the next rung continues from it
        if stop_at is not None:
            self.validate_stop()
        self.put_back_best()
        return LoopResult(optimizer_name(self.optimizer), paged_state_mb(self.optimizer))

    # -- start
    def make_optimizer(self) -> None:
        self.optimizer = self.method.make_optimizer(self.model, self.hp.hparams)
        total = self.data.total_steps
        self.scheduler = linear_schedule(self.optimizer, int(self.hp.warmup_ratio * total), total)
        self.scaler = torch.amp.GradScaler("cuda") if self.hp.precision == "fp16" else None
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.state.loss_sum = self.state.loss_sum.to(self.device)
        self.state.reg_sum = self.state.reg_sum.to(self.device)

    def resume(self) -> bool:
        """Go on exactly where the last run stopped, if a checkpoint of this run is there."""
        t_load = time.perf_counter()
        saved = self.ckpt.load() if self.ckpt else None
        if saved is None:
            return False
        self.ckpt.restore(saved, self.model, self.optimizer, self.scheduler)
        self.state.restore(saved["loop"], self.device)
        del saved  # the loaded copies are in place now: let them go before the first step
        self.state.checkpoint_seconds += time.perf_counter() - t_load  # the loaded total plus this load
        print(f"resumed at step {self.state.step} of {self.data.total_steps} from a checkpoint", flush=True)
        return True

    # -- the steps
    def train_epoch(self, end: int) -> None:
        """The epoch in progress, from its next batch, until its end or step `end`."""
        state = self.state
        rng = random.Random(self.hp.seed)
        if state.epoch_rng is not None:
            rng.setstate(python_rng_from_tensor(state.epoch_rng))
        else:
            state.epoch_rng = python_rng_to_tensor(rng)
        batches = batch_order(self.lengths, self.hp.batch_size, rng, self.hp.group_by_length)
        for pos in range(state.batch_pos, len(batches)):
            self.train_step(batches[pos])
            state.batch_pos = pos + 1
            self.after_step(end)
            if state.step >= end:
                return
        state.epoch_rng, state.batch_pos = python_rng_to_tensor(rng), 0

    def train_step(self, idx: list[int]) -> None:
        batch = to_device(collate([self.data.train[i] for i in idx], self.data.pad_id), self.device)
        with autocast(self.device, self.hp.precision):
            loss = self.model(**batch).loss
        task_loss, reg = self.method.split_loss(self.model, loss)
        self.optimizer_step(loss)
        state = self.state
        state.step += 1
        state.examples += len(idx)
        self.method.after_step(self.model, state.step)
        self.optimizer.zero_grad(set_to_none=True)
        state.loss_sum += task_loss.detach().float()  # stays on the device: no host sync per step
        state.window_steps += 1
        if reg is not None:
            state.reg_sum += reg.detach().float()
            state.has_reg = True

    def optimizer_step(self, loss) -> None:
        if self.scaler:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.hp.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.hp.max_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()

    def after_step(self, end: int) -> None:
        """Log at logging steps (validate at eval steps and the last); checkpoint when due or on SIGTERM."""
        step, hp = self.state.step, self.hp
        at_eval = step % hp.eval_every_steps == 0 or step == self.data.total_steps
        if step % hp.log_every_steps == 0 or at_eval:
            self.log_window(at_eval)
        if self.ckpt is None:
            return
        if step < end and (self.ckpt.due(step) or self.ckpt.stop_requested):
            self.save_checkpoint()
            if self.ckpt.stop_requested:
                raise Preempted(f"SIGTERM at step {step}: checkpoint saved, the next run resumes from it")
        self.ckpt.after_step(step)

    # -- logging
    def log_window(self, with_val: bool) -> None:
        """The mean training loss of the steps since the last row (the only host sync), and a row."""
        state = self.state
        mean = float(state.loss_sum) / state.window_steps
        if not math.isfinite(mean):
            raise NonFiniteLoss(f"loss became {mean} by step {state.step} (lr {self.hp.lr:g}); "
                                f"lower lr or use precision fp32")
        state.train_loss = round(mean, 6)
        self.log(mean, with_val, float(state.reg_sum) / state.window_steps if state.has_reg else None)
        state.loss_sum.zero_()
        state.reg_sum.zero_()
        state.window_steps = 0

    def log(self, train_loss: float | None, with_val: bool, reg_loss: float | None = None) -> None:
        state = self.state
        val = self.validate() if with_val and self.data.val else None
        state.val_loss = val
        spe = self.data.steps_per_epoch
        state.log_rows.append({
            "step": state.step, "epoch": round(state.step / spe, 4) if spe else 0,
            "train_loss": None if train_loss is None else round(train_loss, 6),
            "val_loss": None if val is None else round(val, 6),
            "reg_loss": None if reg_loss is None else round(reg_loss, 6),
            "lr": self.scheduler.get_last_lr()[0] if self.scheduler else 0.0,
            "elapsed_s": round(state.prior_seconds + self.segment_seconds(), 3)})
        print(progress_line(state.log_rows[-1], self.data.total_steps, state.examples), flush=True)
        if val is not None and self.hp.checkpoint == "best" and val < state.best_val_loss:
            self.keep_best(val)

    def validate_stop(self) -> None:
        """A rung stopped between validation steps: its score (final_val_loss) is the validation loss
        at the step it stopped, not the last logged one. Not a loss-log row — the log stays the full
        run's exact prefix — and after the checkpoint is saved; validation draws no random numbers."""
        state = self.state
        if not self.data.val or (state.log_rows and state.log_rows[-1]["step"] == state.step
                                 and state.log_rows[-1]["val_loss"] is not None):
            return
        state.val_loss = self.validate()
        print(f"step {state.step}: the rung stops here | val_loss {state.val_loss:.4f} (its score; "
              f"not a loss-log row)", flush=True)

    def validate(self) -> float:
        t_val = time.perf_counter()
        val = mean_loss(self.model, self.data.val, self.hp.eval_batch_size, self.data.pad_id, self.device,
                        self.hp.precision, self.method)
        self.state.val_seconds += time.perf_counter() - t_val
        return val

    # -- checkpoints
    def keep_best(self, val: float) -> None:
        """The trainable weights, AdaLoRA's rank buffers and what else the method needs (its rank pattern)."""
        t_keep = time.perf_counter()
        state = self.state
        state.best_val_loss = val
        state.best_weights = {n: t.clone() for n, t in trainable_state(self.model).items()}
        state.best_snapshot = self.method.snapshot(self.model)
        state.checkpoint_seconds += time.perf_counter() - t_keep

    def put_back_best(self) -> None:
        state = self.state
        if state.best_weights is None:
            return
        t_restore = time.perf_counter()
        tensors = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
        with torch.no_grad():
            for n, t in state.best_weights.items():
                tensors[n].copy_(t.to(tensors[n].device))
        self.method.restore_snapshot(self.model, state.best_snapshot)
        state.val_loss = state.best_val_loss
        state.checkpoint_seconds += time.perf_counter() - t_restore

    def save_checkpoint(self) -> None:
        t_save = time.perf_counter()
        peak = self.meter.peak_so_far() if self.meter else 0.0
        loop = self.state.to_checkpoint(self.segment_seconds(), peak)
        self.ckpt.save(self.model, self.optimizer, self.scheduler, loop)
        self.state.checkpoint_seconds += time.perf_counter() - t_save

    def segment_seconds(self) -> float:
        return time.perf_counter() - self.started
