"""What every fine-tuning method provides, and the default of each part.

A `Method` is one family (native: none, full, linear_probe, bitfit; peft: any PeftConfig) and
owns everything that differs between methods: its presets and their defaults, the checks of its
settings, which task types it can train, how it builds the model it trains from a freshly loaded
pretrained model, its optimizer, a per-step hook, save / load, device placement and how its
weights merge for weight distances. Nothing outside `peftgrid/methods/` compares method names.

Import cost: this module and the family modules import no torch at module level, so the
planning layer (run when Snakemake parses the workflow) can read presets and validate settings
without loading torch; torch, transformers and peft are imported inside the functions that build,
train or load models.

`hp` everywhere is a cell's resolved hyperparameters: one flat dict of training keys (lr, epochs,
...), the method's own settings, and `kind` (the preset or family name the settings resolve to).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import CellFailure, ConfigError, did_you_mean

METHOD_FILE = "method.json"  # in a trained model's folder: the method kind that saved it


def write_method_file(out_dir: Path, kind: str) -> None:
    (Path(out_dir) / METHOD_FILE).write_text(json.dumps({"kind": kind}, indent=2) + "\n")


def save_pretrained(model, out_dir: Path, kind: str) -> None:
    """A model saved in its library's own format (safetensors), with the method file beside it."""
    model.save_pretrained(out_dir, safe_serialization=True)
    write_method_file(out_dir, kind)


class Method:
    family: str = ""
    presets: dict[str, dict] = {}      # preset name -> its defaults (learning rate included)
    lr_sources: dict[str, str] = {}   # preset name -> where its default learning rate comes from
    # imported before the jobs' timers start (see import_libraries); the Auto* model classes live in
    # modeling_auto, whose import (generation utilities, scikit-learn, accelerate) is most of transformers'
    libraries: tuple[str, ...] = ("transformers", "transformers.models.auto.modeling_auto")

    # ------------------------------------------------------------------ planning (no torch)
    def allowed_keys(self, settings: dict) -> set[str]:
        """The method settings this family accepts for these settings (training keys excluded)."""
        return set()

    def validate(self, where: str, settings: dict) -> None:
        """Raise ConfigError (one line naming the key) for settings this family cannot use."""

    def refusal(self, settings: dict, task_type: str) -> str | None:
        """Why this method cannot train this task type, or None."""
        return None

    def needs_cuda(self, settings: dict) -> bool:
        return False

    def trains(self, settings: dict) -> bool:
        """False for the untrained baseline: its cells run no optimizer step."""
        return True

    def describe(self, settings: dict) -> str:
        """One phrase: what this method trains (README table, report)."""
        return ""

    # ------------------------------------------------------------------ building (torch)
    def import_libraries(self) -> None:
        """Import what building and loading this method's models needs, so that the jobs' load
        timers measure loading, not imports (peft alone takes seconds; see the job time line)."""
        import importlib

        for name in self.libraries:
            importlib.import_module(name)

    def check_device(self, settings: dict, device) -> None:
        if self.needs_cuda(settings) and device.type != "cuda":
            raise CellFailure(f"{settings['kind']} needs a CUDA GPU: bitsandbytes 4-bit layers have no working forward "
                              f"pass on {device.type} (this cell is skipped; run it on a GPU node)")

    def load_base(self, model_dir: Path, task_type, labels: list[str], hp: dict, device, allow_pickle: bool):
        """The pretrained model for the task type and the names of freshly initialised weights."""
        return task_type.load_pretrained(model_dir, labels, allow_pickle)

    def prepare(self, model, hp: dict, task_type, total_steps: int, new_weights: list[str]):
        """Set what trains; return the model the loop trains."""
        return model

    def place(self, model, device):
        return model.to(device)

    def make_optimizer(self, model, hp: dict):
        return adamw(model, hp["lr"], hp["weight_decay"], paged=self.paged_optimizer(hp))

    def paged_optimizer(self, hp: dict) -> bool:
        """Whether to train with bitsandbytes' paged AdamW (on CUDA): for a 4-bit base, as the QLoRA
        recipe (and peft's QLoRA examples) train, so optimizer-state spikes page to host memory
        instead of running out of GPU memory."""
        return self.needs_cuda(hp)

    def after_step(self, model, step: int) -> None:
        """Called after each optimizer step (AdaLoRA reallocates its ranks here)."""

    def extra_stats(self, model) -> dict:
        """Method-specific cost figures for train_stats.tsv (linear probing: time in the encoder)."""
        return {}

    def split_loss(self, model, loss):
        """(the task's loss, a regulariser the method added to it, or None). The loop backpropagates
        `loss` but logs the task loss, so curves and checkpoint selection compare methods fairly."""
        return loss, None

    def snapshot(self, model):
        """State beyond the trainable weights that a best-checkpoint restore must bring back."""
        return None

    def restore_snapshot(self, model, snap) -> None:
        """Bring back what `snapshot` captured."""

    def save(self, model, hp: dict, out_dir: Path, new_weights: list[str]) -> None:
        raise NotImplementedError

    def load(self, model_dir: Path, trained_dir: Path, task_type, labels: list[str], hp: dict, device,
             allow_pickle: bool):
        raise NotImplementedError

    def distance_models(self, model_dir: Path, trained_dir: Path, task_type, labels: list[str], hp: dict,
                        allow_pickle: bool):
        """(the model the cell started from, the trained model), on the CPU, for weight distances.
        Call after seeding as in training, so a new head's reference is its initial value."""
        import torch

        cpu = torch.device("cpu")
        reference, _ = self.load_base(model_dir, task_type, labels, hp, cpu, allow_pickle)
        return reference, self.load(model_dir, trained_dir, task_type, labels, hp, cpu, allow_pickle)

    def merged_for_inference(self, model):
        """The model one deploys when the method's weights can be folded into the base (adapters),
        or None when there is nothing to merge or it cannot be merged."""
        return None

    def merged_state(self, model) -> dict:
        """The trained weights under the base model's names, anything adapter-like folded in."""
        return dict(model.state_dict())

    def extra_distances(self, trained_dir: Path) -> list[dict]:
        """Rows for weights with no counterpart in the base (e.g. a learned prompt)."""
        return []

    def count_parameters(self, model) -> tuple[int, int]:
        """(trainable, total), counted from the model's parameters (4-bit weights unpacked)."""
        trainable = total = 0
        for p in model.parameters():
            n = real_numel(p)
            total += n
            trainable += n if p.requires_grad else 0
        return trainable, total


def real_numel(p) -> int:
    """Parameters a tensor stands for: bitsandbytes packs two 4-bit values per byte of its storage
    (uint8 by default; a wider quant_storage, e.g. bf16 for FSDP, holds 2 x its itemsize)."""
    if p.__class__.__name__ == "Params4bit":
        storage = getattr(p, "quant_storage", None)
        return p.numel() * 2 * (storage.itemsize if storage is not None else 1)
    return p.numel()


def adamw(model, lr: float, weight_decay: float, paged: bool = False):
    """AdamW over the trainable parameters; no weight decay on biases and norm weights (the BERT recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return make_adamw([g for g in groups if g["params"]], lr, paged)


def make_adamw(groups: list[dict], lr: float, paged: bool = False):
    """The fastest AdamW for these parameter groups (each group sets its own weight_decay, and may
    set its own lr): bitsandbytes' PagedAdamW32bit when `paged` and every parameter is on CUDA;
    else torch's fused kernel (CPU and CUDA, every float dtype: one kernel per step instead of a
    loop over tensors — 141 ms -> 19 ms per step for MiniLM's 22.7M parameters on 2 CPU threads),
    falling back to the multi-tensor (foreach) one where fused is not available for a parameter's
    device. The same update rule in each case; run.json records which one ran."""
    import torch

    params = [p for g in groups for p in g["params"]]
    if paged and params and all(p.device.type == "cuda" for p in params):
        try:
            import bitsandbytes as bnb
        except ImportError:
            bnb = None
        if bnb is not None:
            return bnb.optim.PagedAdamW32bit(groups, lr=lr)
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    if all(p.device.type in _get_fused_kernels_supported_devices() for p in params):
        try:
            return torch.optim.AdamW(groups, lr=lr, fused=True)
        except (RuntimeError, ValueError):  # a dtype without the fused kernel
            pass
    return torch.optim.AdamW(groups, lr=lr, foreach=True)


def check_keys(where: str, settings: dict, allowed: set[str], family: str) -> None:
    """Unknown keys are one line naming the key and suggesting the closest allowed one."""
    for key in settings:
        if key not in allowed:
            why = (f"{family} takes no settings of its own, only training keys (lr, epochs, batch_size, ...; see "
                   f"training: in peftgrid/plan/config.schema.yaml)" if not allowed
                   else f"unknown setting for {family}{did_you_mean(key, allowed)}")
            raise ConfigError(f"{where}.{key}: {why}")
