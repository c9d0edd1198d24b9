"""One GPU per job on a multi-GPU machine: a lock per device slot, claimed before CUDA starts.

Snakemake counts `--resources gpu=N` but does not say *which* GPU a local job should use
(snakemake/snakemake#281): without help every job runs on cuda:0. So each GPU job (train,
evaluate, generate) claims a free slot itself, first thing in its script:

- The pool: the ids in CUDA_VISIBLE_DEVICES when it is set (SLURM sets it; the job then picks
  among those), else the GPUs `nvidia-smi -L` lists (CUDA is not initialised to count them);
  PEFTGRID_GPU_IDS="0,1,2,3" replaces the discovery (tests, simulation). With `slots_per_device`
  S, device d has slots 0..S-1: devices x S jobs run at once, S to a device.
- The claim: an exclusive `fcntl.flock` on `<lock dir>/<host>/gpu<id>.slot<k>.lock`, held by an
  open descriptor for the life of the process. The kernel drops a flock when its process dies, so
  a job killed by SIGKILL, OOM or a crashed node leaves no stale claim behind. Slots are tried
  slot-major (slot 0 of every device before any slot 1), so jobs spread over the devices first.
  The host name keeps two nodes sharing one filesystem from contending for each other's GPU 0.
- Then CUDA_VISIBLE_DEVICES is set to the claimed id, so the job sees exactly one GPU, as cuda:0.
  That must happen before anything initialises CUDA: the scripts claim before importing torch.
- No free slot: the job waits (a line in its log when it starts waiting and every minute after),
  never shares; PEFTGRID_GPU_WAIT_S bounds the wait (then the job stops with one line).
- One device in the pool (one GPU, or SLURM gave the job exactly one): used as it is, no lock.
  No device (no nvidia-smi, CUDA_VISIBLE_DEVICES="", PEFTGRID_DEVICE=cpu): nothing is claimed.

Lock folder: PEFTGRID_GPU_LOCK_DIR, else `.peftgrid/gpu_locks/` in the working directory (the
workflow's folder), so every Snakemake run started there shares the same locks.

Imports no torch: importing it here would be too late to be harmless.
"""
from __future__ import annotations

import fcntl
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import UserError

DEVICE_ENV = "PEFTGRID_DEVICE"  # forces a job's device (cpu, cuda:1, mps); engine/device.py reads it too
IDS_ENV = "PEFTGRID_GPU_IDS"
LOCK_DIR_ENV = "PEFTGRID_GPU_LOCK_DIR"
WAIT_ENV = "PEFTGRID_GPU_WAIT_S"
DEFAULT_LOCK_DIR = Path(".peftgrid") / "gpu_locks"

_held: list = []  # open lock files: the claim lasts as long as the process


class GpuClaimTimeout(UserError):
    """No GPU slot became free within PEFTGRID_GPU_WAIT_S seconds."""


@dataclass(frozen=True)
class GpuClaim:
    """What this job runs on: `physical_id` is the id CUDA_VISIBLE_DEVICES holds for the job (an
    index or a UUID as the pool gave it); `slot` the claimed slot of that device (None: not
    claimed, because the pool had one device or none)."""
    physical_id: str | None
    slot: int | None
    slots_per_device: int
    pool: tuple[str, ...]
    how: str  # claimed | only-device | no-gpu | PEFTGRID_DEVICE
    lock: str | None = None
    waited_s: float = 0.0

    def record(self) -> dict:
        out = asdict(self)
        out["pool"] = list(self.pool)
        return out

    def describe(self) -> str:
        """' [GPU 2, slot 1 of 2]' for the device column; '' when nothing was claimed."""
        if self.physical_id is None:
            return ""
        if self.slot is None:
            return f" [GPU {self.physical_id}]"
        return f" [GPU {self.physical_id}, slot {self.slot} of {self.slots_per_device}]"


def discover_gpu_ids() -> list[str]:
    """The machine's GPU indices without initialising CUDA: PEFTGRID_GPU_IDS, else `nvidia-smi -L`."""
    given = os.environ.get(IDS_ENV)
    if given is not None:
        return [x.strip() for x in given.split(",") if x.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return re.findall(r"^GPU (\d+):", out, flags=re.MULTILINE)


def visible_pool() -> tuple[list[str], bool]:
    """(the devices this job may use, whether CUDA_VISIBLE_DEVICES set them). CUDA reads the list up
    to its first invalid entry; a negative index (or an empty value) hides every GPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return discover_gpu_ids(), False
    pool = []
    for entry in (x.strip() for x in visible.split(",")):
        if not entry or entry.startswith("-"):
            break
        pool.append(entry)
    return pool, True


def uses_no_gpu() -> bool:
    """This job will not touch a CUDA GPU: PEFTGRID_DEVICE=cpu, or it is unset and none is visible
    (claim_gpu then claims nothing). A job forced onto any other device may initialise one."""
    forced = os.environ.get(DEVICE_ENV, "")
    return forced == "cpu" if forced else not visible_pool()[0]


def lock_dir(base: str | os.PathLike | None = None) -> Path:
    root = Path(os.environ.get(LOCK_DIR_ENV) or base or DEFAULT_LOCK_DIR)
    return root / re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname() or "localhost")


def _try_lock(path: Path):
    fh = open(path, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} since {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n")
    fh.flush()
    return fh


def _cuda_started() -> bool:
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and torch.cuda.is_initialized())
    except Exception:  # noqa: BLE001 - a half-imported torch: nothing was initialised through it
        return False


def claim_gpu(slots_per_device: int = 1, base_dir: str | os.PathLike | None = None, poll_s: float = 2.0,
              wait_s: float | None = None, log=None) -> GpuClaim:
    """Claim a free GPU slot for this process and point CUDA_VISIBLE_DEVICES at its device.
    Call before anything touches torch.cuda. `wait_s` (default PEFTGRID_GPU_WAIT_S, else no limit)
    bounds the wait for a free slot; `log` gets the waiting lines (default: stderr)."""
    slots = int(slots_per_device)
    if slots < 1:
        raise ValueError(f"gpu_slots_per_device must be >= 1, not {slots_per_device!r}")
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    forced = os.environ.get(DEVICE_ENV, "")
    if forced and not forced.startswith("cuda"):
        return GpuClaim(None, None, slots, (), "no-gpu")
    if forced.startswith("cuda:"):  # the user picked the device; nothing to share out
        return GpuClaim(None, None, slots, (), DEVICE_ENV)
    pool, from_env = visible_pool()
    if not pool:
        return GpuClaim(None, None, slots, (), "no-gpu")
    if _cuda_started():
        raise RuntimeError("claim_gpu() ran after CUDA was initialised: CUDA_VISIBLE_DEVICES would have no effect")
    if len(pool) == 1:  # one GPU, or SLURM gave this job exactly one: it is ours
        os.environ["CUDA_VISIBLE_DEVICES"] = pool[0]
        return GpuClaim(pool[0], None, slots, tuple(pool), "only-device")
    folder = lock_dir(base_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if wait_s is None and os.environ.get(WAIT_ENV):
        wait_s = float(os.environ[WAIT_ENV])
    order = [(dev, k) for k in range(slots) for dev in pool]  # slot-major: spread over devices first
    t0 = time.monotonic()
    next_note = 0.0
    while True:
        for dev, k in order:
            path = folder / f"gpu{re.sub(r'[^A-Za-z0-9_.-]', '_', dev)}.slot{k}.lock"
            fh = _try_lock(path)
            if fh is not None:
                _held.append(fh)
                os.environ["CUDA_VISIBLE_DEVICES"] = dev
                waited = time.monotonic() - t0
                if waited >= poll_s:
                    log(f"GPU {dev} slot {k} free after {waited:.0f} s of waiting")
                return GpuClaim(dev, k, slots, tuple(pool), "claimed", str(path), round(waited, 3))
        waited = time.monotonic() - t0
        if wait_s is not None and waited >= wait_s:
            raise GpuClaimTimeout(f"no free GPU slot after {waited:.0f} s (all {len(order)} of {len(pool)} devices x "
                                  f"{slots} slots held by other jobs; locks in {folder}; {WAIT_ENV} sets the wait)")
        if waited >= next_note:
            state = "waiting" if next_note == 0.0 else f"still waiting after {waited:.0f} s"
            log(f"all {len(order)} GPU slots ({len(pool)} devices {','.join(pool)} x {slots}) are held by other jobs; "
                f"{state} for one to free up (locks in {folder})")
            next_note += 60.0
        time.sleep(poll_s)


def release_all() -> None:
    """Drop this process's claims (tests; a job's claim ends with its process)."""
    while _held:
        _held.pop().close()
