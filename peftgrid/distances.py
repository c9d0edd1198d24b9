"""How far fine-tuning moved the weights: Euclidean (Frobenius) distance between the pretrained
and the fine-tuned parameters, per tensor and per component (embeddings, first / middle / last
layer, head).

Adapters (LoRA, AdaLoRA, IA3) are merged into the base first, so a LoRA layer's distance is
exactly ||B·A·scaling||. Prompt and prefix tuning leave the base weights untouched (distance 0);
their learned prompt's norm is reported instead. A head that did not exist before fine-tuning is
compared with its initial (seeded) weights.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

LAYER_RE = re.compile(r"\.(?:layer|layers|h|block)\.(\d+)\.")
HEAD_PREFIXES = ("classifier", "score", "head", "pre_classifier", "lm_head", "qa_outputs")
COMPONENTS = ["embeddings", "layer_first", "layer_middle", "layer_last", "pooler", "head", "prompt"]


def _state(obj) -> dict[str, torch.Tensor]:
    return obj.state_dict() if hasattr(obj, "state_dict") else obj


def component(name: str, num_layers: int) -> str:
    """Which part of the model a parameter belongs to."""
    if "embed" in name or "wte" in name or "wpe" in name or "shared" in name:
        return "embeddings"
    m = LAYER_RE.search(name)
    if m:
        i = int(m.group(1))
        if i == 0:
            return "layer_first"
        if i == num_layers - 1:
            return "layer_last"
        if i == num_layers // 2:
            return "layer_middle"
        return f"layer_{i}"
    if "pooler" in name:
        return "pooler"
    if name.split(".")[0] in HEAD_PREFIXES or "classifier" in name:
        return "head"
    return "other"


def num_layers(names) -> int:
    found = [int(m.group(1)) for n in names if (m := LAYER_RE.search(n))]
    return max(found) + 1 if found else 0


def tensor_distances(base, tuned) -> list[dict]:
    """One row per floating-point tensor present in both, with the same shape."""
    base, tuned = _state(base), _state(tuned)
    n = num_layers(tuned)
    rows = []
    for name, t in tuned.items():
        b = base.get(name)
        if b is None or not torch.is_floating_point(t) or b.shape != t.shape:
            continue
        diff = (t.detach().float().cpu() - b.detach().float().cpu())
        base_norm = float(b.detach().float().norm())
        dist = float(diff.norm())
        m = LAYER_RE.search(name)
        rows.append({"name": name, "component": component(name, n), "layer": int(m.group(1)) if m else "",
                     "numel": t.numel(), "distance": dist, "base_norm": base_norm,
                     "relative": dist / base_norm if base_norm else 0.0})
    return rows


def weight_distance(base, tuned, layers=None):
    """The study brief's function: with `layers=None`, the mean distance over all matching
    parameter tensors; with a list of names (exact tensor names or components such as
    'embeddings', 'layer_first', 'layer_middle', 'layer_last', 'head'), a dict name -> distance
    (for a component, the distance over all its tensors together: sqrt of the summed squares)."""
    rows = tensor_distances(base, tuned)
    if layers is None:
        return sum(r["distance"] for r in rows) / len(rows) if rows else 0.0
    out = {}
    for layer in layers:
        matched = [r for r in rows if r["name"] == layer or r["component"] == layer]
        if not matched:
            raise KeyError(f"no parameter or component named {layer!r}")
        out[layer] = sum(r["distance"] ** 2 for r in matched) ** 0.5
    return out


def component_distances(rows: list[dict]) -> dict[str, float]:
    """Per component: sqrt of the summed squared tensor distances."""
    acc: dict[str, float] = {}
    for r in rows:
        acc[r["component"]] = acc.get(r["component"], 0.0) + r["distance"] ** 2
    return {k: v ** 0.5 for k, v in acc.items()}


def merged_state(model) -> dict[str, torch.Tensor]:
    """A trained model's weights under the base model's names, any adapter folded in (peft's
    merge_and_unload). Prompt learning has nothing to merge: its base model is taken as it is,
    with the trained copy of each `modules_to_save` module (the head) in place of the original."""
    config = getattr(model, "peft_config", {}).get("default")
    if config is not None and config.is_prompt_learning:
        state = {}
        for name, tensor in model.base_model.state_dict().items():
            if ".original_module." in name:
                continue
            state[name.replace(".modules_to_save.default.", ".")] = tensor
        return state
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return dict(model.state_dict())


def prompt_norm(trained_dir: str | Path) -> float | None:
    """Norm of a prompt/prefix tuning cell's learned virtual tokens, from its adapter file."""
    path = Path(trained_dir) / "adapter_model.safetensors"
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    tensors = [v for k, v in load_file(path).items() if "prompt" in k]
    return float(torch.sqrt(sum((t.float() ** 2).sum() for t in tensors))) if tensors else None


def cell_distances(params: dict, model_dir: Path, trained_dir: Path, run: dict) -> list[dict]:
    """Per-tensor distances of one finished cell, on the CPU.

    The reference is the model the cell started from: the pretrained weights and, for a head
    created for the task, its initial weights (the same seeded initialisation as in training).
    QLoRA adapters are merged into the full-precision base (the dequantized weights)."""
    from . import methods
    from .training import set_seed

    hp, task = params["hparams"], params["task"]
    cpu = torch.device("cpu")
    allow_pickle = params["model"].get("allow_pickle", False)
    ref_hp = {**hp, "kind": "linear_probe" if hp["kind"] == "linear_probe" else "none"}
    set_seed(hp["seed"])
    reference, _ = methods.load_base(model_dir, task["type"], run["labels"], ref_hp, cpu, allow_pickle)
    load_hp = {**hp, "kind": "lora"} if hp["kind"] == "qlora" else hp
    tuned = methods.load_trained(model_dir, trained_dir, task["type"], run["labels"], load_hp, cpu, allow_pickle)
    rows = tensor_distances(reference, merged_state(tuned))
    norm = prompt_norm(trained_dir) if hp["kind"] in ("prompt_tuning", "prefix_tuning") else None
    if norm is not None:
        rows.append({"name": "prompt_encoder (learned virtual tokens)", "component": "prompt", "layer": "",
                     "numel": "", "distance": norm, "base_norm": 0.0, "relative": ""})
    return rows
