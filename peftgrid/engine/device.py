"""Cost measurement: device choice, peak memory per phase, wall time.

Peak memory (`peak_train_mem_mb`, `peak_infer_mem_mb`) has one definition on every device: the most
memory the phase held for the model and its work — the weights, activations, gradients and optimizer
states — that is, everything the process holds beyond what it held before it loaded the model (the
interpreter, libraries and the CUDA context are not counted; the weights are). On CUDA that is
`torch.cuda.max_memory_allocated` after a reset at the phase's start (nothing is allocated before the
model), plus bitsandbytes' paged optimizer states, which live in CUDA unified memory outside torch's
allocator: they are counted at their full size from their first step to the end, as if resident on the
GPU (the peak adds them). On CPU it is the phase's peak RSS (VmHWM, reset through /proc/self/clear_refs)
minus the RSS just before the model was loaded (`mark_memory_baseline`, called by the job). The
column `mem_measure` names which of the two took a figure (MEM_MEASURE).
"""
from __future__ import annotations

import ctypes
import gc
import os
import resource
import time
from contextlib import contextmanager

import torch

from .gpus import DEVICE_ENV


def pick_device() -> torch.device:
    """CUDA when present, else MPS, else CPU; PEFTGRID_DEVICE overrides (e.g. 'cpu')."""
    forced = os.environ.get(DEVICE_ENV)
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak), in MB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    if field == "VmHWM":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return 0.0


def _reset_rss_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


# how a peak-memory figure was taken on each kind of device (the `mem_measure` column)
MEM_MEASURE = {"cuda": "cuda_max_allocated_with_weights", "cpu": "cpu_peak_rss_above_pre_model"}

_pre_model_rss_mb: float | None = None  # set by mark_memory_baseline, once per job


def mark_memory_baseline() -> None:
    """Record the process's RSS now, just before the job loads its model: CPU peak memory is counted
    above it, so the weights count as they do on CUDA (jobs call this; one model job per process).
    Memory the process freed but the C heap kept would be reused without RSS growth, so a phase after
    earlier work (a test process, a notebook) measured ~0: it goes back to the OS first."""
    global _pre_model_rss_mb
    _release_free_memory()
    _pre_model_rss_mb = _status_mb("VmRSS")


def _release_free_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc: free heap pages back to the OS
    except (OSError, AttributeError):
        pass  # not glibc (macOS, musl): the baseline is the RSS as it is


def paged_state_mb(optimizer) -> float:
    """The optimizer states bitsandbytes keeps in CUDA unified (paged) memory, in MB: tensors marked
    `is_paged`, which torch's allocator never sees (a paged optimizer's states of parameters over
    100k elements; the smaller ones are ordinary CUDA tensors, already counted)."""
    total = 0
    for state in getattr(optimizer, "state", {}).values():
        for t in state.values() if isinstance(state, dict) else ():
            if isinstance(t, torch.Tensor) and getattr(t, "is_paged", False):
                total += t.numel() * t.element_size()
    return total / 2**20


class PhaseMeter:
    """Times one phase and records its peak memory: `with PhaseMeter(device) as m: ...`.
    `peak_so_far()` reads the peak while the phase runs (a checkpoint keeps it for a resumed run)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0
        self.peak_mem_mb = 0.0
        self.peak_reserved_mb = None  # CUDA only
        self.measure = MEM_MEASURE["cuda" if device.type == "cuda" else "cpu"]

    def __enter__(self):
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _reset_rss_peak()
        self._t0 = time.perf_counter()
        return self

    def peak_so_far(self) -> float:
        """The phase's peak memory up to now, in MB (the module's definition)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        # before any mark (a test calling a task's predict directly): the whole process counts
        return max(_status_mb("VmHWM") - (_pre_model_rss_mb or 0.0), 0.0)

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0
        self.peak_mem_mb = self.peak_so_far()
        if self.device.type == "cuda":
            self.peak_reserved_mb = torch.cuda.max_memory_reserved(self.device) / 2**20
        return False


@contextmanager
def autocast(device: torch.device, precision: str):
    dtype = resolve_dtype(device, precision)
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


def resolve_dtype(device: torch.device, precision: str):
    """bf16 autocast on GPUs that support it ('auto'); fp32 elsewhere."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise RuntimeError("precision fp16 needs a CUDA device; use auto or bf16")
        return torch.float16
    raise ValueError(precision)


def precision_name(device: torch.device, precision: str) -> str:
    """What `precision` means on this device, for run.json: 'bf16 autocast', 'fp16 autocast', 'fp32'."""
    dtype = resolve_dtype(device, precision)
    return "fp32" if dtype is None else f"{str(dtype).removeprefix('torch.').replace('bfloat16', 'bf16').replace('float16', 'fp16')} autocast"


def attention_implementation(model) -> str | None:
    """The attention kernel transformers chose when loading (`sdpa` — torch's fused
    scaled_dot_product_attention — where the architecture has it, else `eager`); None for a
    model without a transformers config."""
    for module in model.modules():
        impl = getattr(getattr(module, "config", None), "_attn_implementation", None)
        if impl:
            return impl
    return None
