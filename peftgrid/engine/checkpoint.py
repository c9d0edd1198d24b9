"""Resumable training: a cell's checkpoint/ folder holds everything the loop needs to go on
exactly where it stopped — trainable weights, optimizer, scheduler, every RNG state, the batch
position, the loss curve so far. It is written atomically every `checkpoint_every_steps` and on
SIGTERM (SLURM preemption), loaded by the next run of the same cell, and removed when the cell
finishes (a halving rung keeps it: jobs.train). A checkpoint of other hyperparameters (the config
was edited) or of another CHECKPOINT_FORMAT (written by other code) is not resumed: the run starts
from step 0 and its log says why.

Files are loaded with `torch.load(weights_only=True)`: tensors and plain values only, no pickle.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
from pathlib import Path

import numpy as np
import torch

from ..errors import Preempted  # noqa: F401  (raised by the loop when SIGTERM arrives)

# The layout of state.pt and of the loop's state in it (engine.loop.LoopState); recorded in the
# checkpoint and in run.json. Bump it whenever either changes, or seeding does: a checkpoint of
# another format is never resumed. 1: the layout before it was recorded (no "format" key).
CHECKPOINT_FORMAT = 2

# Fault injection for tests: "kill:7" sends SIGKILL, "term:7" SIGTERM, to this process right after step 7.
FAULT_ENV = "PEFTGRID_FAULT"


def fingerprint(hparams: dict) -> str:
    return hashlib.sha256(json.dumps(hparams, sort_keys=True).encode()).hexdigest()[:16]


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def python_rng_to_tensor(rng: random.Random) -> dict:
    version, internal, gauss = rng.getstate()
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def python_rng_from_tensor(state: dict) -> tuple:
    return (state["version"], tuple(int(x) for x in state["internal"].tolist()), state["gauss"])


def trainable_state(model) -> dict[str, torch.Tensor]:
    """Trainable parameters, plus the buffers AdaLoRA's rank allocation changes."""
    state = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    state.update({n: b.detach().cpu() for n, b in model.named_buffers() if "ranknum" in n})
    return state


class Checkpointer:
    def __init__(self, folder: Path, hparams: dict, every: int | None, start_from: Path | None = None):
        """`start_from`: another run's kept checkpoint (a halving rung's), read when `folder` holds
        none of this run's own; never written."""
        self.folder = Path(folder)
        self.start_from = None if start_from is None else Path(start_from)
        self.every = every
        self.tag = fingerprint(hparams)
        self.stop_requested = False
        fault = os.environ.get(FAULT_ENV, "")
        self.fault = (fault.split(":")[0], int(fault.split(":")[1])) if ":" in fault else None

    # -- signals
    def install_sigterm(self):
        def handler(signum, frame):
            self.stop_requested = True  # acted on at the next step boundary

        try:
            self._previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread
            self._previous = None

    def restore_sigterm(self):
        if getattr(self, "_previous", None) is not None:
            signal.signal(signal.SIGTERM, self._previous)

    # -- state
    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def save(self, model, optimizer, scheduler, loop: dict) -> None:
        state = {"format": CHECKPOINT_FORMAT, "tag": self.tag, "model": trainable_state(model),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                 "loop": loop}
        adalora = _rankallocator(model)
        if adalora is not None:
            state["rankallocator"] = {k: dict(getattr(adalora, k)) for k in ("ipt", "exp_avg_ipt", "exp_avg_unc")}
        tmp = self.folder.with_name(self.folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(state, tmp / "state.pt")
        shutil.rmtree(self.folder, ignore_errors=True)
        os.replace(tmp, self.folder)

    def load(self) -> dict | None:
        """This run's own checkpoint, else the one it starts from, else None (from step 0)."""
        own = self.folder / "state.pt"
        if own.is_file():
            state, refused = self._read(own)
            if refused is None:
                return state
            print(f"checkpoint {own}: {refused}: not resumed, training starts from step 0", flush=True)
        if self.start_from is None:
            return None
        # a halving rung's start: a kept checkpoint that is gone (its stage freed it) or cannot be continued
        # is trained again from step 0, to the same weights (every rung is the full run's exact prefix)
        kept = self.start_from / "state.pt"
        if not kept.is_file():
            print(f"no kept checkpoint at {self.start_from} (freed once its stage had decided): training from step 0 "
                  f"to this rung's stop, the same steps", flush=True)
            return None
        state, refused = self._read(kept)
        if refused is not None:
            print(f"kept checkpoint {self.start_from}: {refused}: not continued, training from step 0 to this "
                  f"rung's stop", flush=True)
            return None
        return state

    def _read(self, path: Path) -> tuple[dict, str | None]:
        """A checkpoint's state, and why it cannot be resumed into this run (None: it can)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        written = state.get("format", 1)
        if written != CHECKPOINT_FORMAT:
            return state, f"checkpoint format {written}, this code resumes format {CHECKPOINT_FORMAT}"
        if state.get("tag") != self.tag:
            return state, "written for other hyperparameters"
        return state, None

    def restore(self, state: dict, model, optimizer, scheduler) -> None:
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        with torch.no_grad():
            for name, tensor in state["model"].items():
                target = params.get(name, buffers.get(name))
                target.copy_(tensor.to(target.device))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        adalora = _rankallocator(model)
        if adalora is not None and "rankallocator" in state:
            for key, values in state["rankallocator"].items():
                getattr(adalora, key).update({k: v.to(next(model.parameters()).device) for k, v in values.items()})

    def after_step(self, step: int) -> None:
        if self.fault and step == self.fault[1]:
            os.kill(os.getpid(), signal.SIGKILL if self.fault[0] == "kill" else signal.SIGTERM)


def _rankallocator(model):
    base = getattr(model, "base_model", None)
    return getattr(base, "rankallocator", None)
