"""How far fine-tuning moved the weights: Euclidean (Frobenius) distance between the pretrained
and the fine-tuned parameters, per tensor and per component (embeddings, first / middle / last
layer, head).

Each method says how its trained weights merge (peftgrid.methods: adapters are merged, so a
LoRA layer's distance is exactly ||B·A·scaling||; prompt and prefix tuning leave the base
untouched and report their learned prompt's norm); this module only measures. Torch-free: the
tensors it receives may be torch tensors, compared through their own methods.
"""
from __future__ import annotations

import re

LAYER_RE = re.compile(r"\.(?:layer|layers|h|block)\.(\d+)\.")
HEAD_PREFIXES = ("classifier", "score", "head", "pre_classifier", "lm_head", "qa_outputs")
COMPONENTS = ["embeddings", "layer_first", "layer_middle", "layer_last", "pooler", "head", "prompt"]


def _state(obj) -> dict:
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
        if b is None or not t.is_floating_point() or b.shape != t.shape:
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
