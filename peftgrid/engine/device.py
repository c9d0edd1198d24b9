"""Cost measurement: device choice, peak memory per phase, wall time.

Peak memory means what the phase itself needed, on every device: on CUDA
`torch.cuda.max_memory_allocated` after a reset at the start of the phase (reserved memory in its
own figure); on CPU the peak RSS (VmHWM, reset through /proc/self/clear_refs) minus the RSS just
before the phase started — the interpreter, libraries and the loaded model are not the phase's.
`PhaseMeter.measure` names which one a figure is.
"""
from __future__ import annotations

import os
import resource
import time
from contextlib import contextmanager

import torch


def pick_device() -> torch.device:
    """CUDA when present, else MPS, else CPU; PEFTGRID_DEVICE overrides (e.g. 'cpu')."""
    forced = os.environ.get("PEFTGRID_DEVICE")
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


class PhaseMeter:
    """Times one phase and records its peak memory: `with PhaseMeter(device) as m: ...`."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0
        self.peak_mem_mb = 0.0
        self.peak_reserved_mb = None  # CUDA only
        self.measure = "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss_above_phase_start"

    def __enter__(self):
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = 0.0  # max_memory_allocated counts what is allocated, the model included
        else:
            _reset_rss_peak()
            self._base = _status_mb("VmRSS")
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0
        if self.device.type == "cuda":
            self.peak_mem_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            self.peak_reserved_mb = torch.cuda.max_memory_reserved(self.device) / 2**20
        else:
            self.peak_mem_mb = max(_status_mb("VmHWM") - self._base, 0.0)
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
