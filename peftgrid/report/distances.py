"""How far fine-tuning moved the weights: Euclidean (Frobenius) distance between the pretrained
and the fine-tuned parameters, per tensor and per component (embeddings, first / middle / last
layer, head).

Each method says how its trained weights merge (peftgrid.methods: adapters are merged, so a
LoRA layer's distance is exactly ||B·A·scaling||; prompt and prefix tuning leave the base
untouched and report their learned prompt's norm); this module only measures. Torch-free: the
tensors it receives may be torch tensors, compared through their own methods.

Intruder dimensions (Shuttleworth et al., "LoRA vs Full Fine-tuning: An Illusion of Equivalence",
NeurIPS 2025), counted for every weight matrix: among the fine-tuned matrix's top `INTRUDER_K` left
singular vectors, those whose largest |cosine| with any left singular vector of the pretrained
matrix is below `INTRUDER_THRESHOLD` — new directions the pretrained weight did not have. k = 10
and the threshold 0.5 are the authors' own defaults (their find_number_of_intruder_dimensions:
torch.linalg.svd of both, |U_tunedᵀ U_base| maxed over the base vectors, the first k counted).
"""
from __future__ import annotations

import re

import numpy as np

LAYER_RE = re.compile(r"\.(?:layer|layers|h|block)\.(\d+)\.")
HEAD_PREFIXES = ("classifier", "score", "head", "pre_classifier", "lm_head", "qa_outputs")
COMPONENTS = ["embeddings", "layer_first", "layer_middle", "layer_last", "pooler", "head", "prompt"]
INTRUDER_K = 10
INTRUDER_THRESHOLD = 0.5
# one row per tensor (results/distances/<task>.tsv adds the cell identity columns before these)
COLUMNS = ["name", "component", "layer", "numel", "distance", "base_norm", "relative", "intruders", "intruder_k",
           "intruder_threshold"]


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


def intruder_dimensions(base, tuned, k: int = INTRUDER_K, threshold: float = INTRUDER_THRESHOLD) -> int:
    """How many of `tuned`'s top-k left singular vectors have no left singular vector of `base` with
    |cosine| >= threshold (2-D arrays or tensors of one shape; see the module docstring)."""
    u_base = np.linalg.svd(_matrix(base), full_matrices=False)[0]
    u_tuned = np.linalg.svd(_matrix(tuned), full_matrices=False)[0]
    best = np.abs(u_tuned[:, :k].T @ u_base).max(axis=1)  # per tuned vector: its closest base direction
    return int((best < threshold).sum())


def _matrix(t) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().float().cpu().numpy()
    return np.asarray(t, dtype=np.float64)


def is_weight_matrix(name: str, t) -> bool:
    """The matrices intruder dimensions are counted for: 2-D weights of the layers (not embeddings,
    whose rows are tokens, nor a head created for the task)."""
    return len(t.shape) == 2 and name.endswith("weight") and LAYER_RE.search(name) is not None


def tensor_distances(base, tuned, intruders: bool = True) -> list[dict]:
    """One row per floating-point tensor present in both, with the same shape; `intruders`: the
    intruder dimensions of each layer weight matrix (blank for other tensors)."""
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
        counted = intruders and is_weight_matrix(name, t)
        rows.append({"name": name, "component": component(name, n), "layer": int(m.group(1)) if m else "",
                     "numel": t.numel(), "distance": dist, "base_norm": base_norm,
                     "relative": dist / base_norm if base_norm else 0.0,
                     "intruders": (0 if dist == 0.0 else intruder_dimensions(b, t)) if counted else "",
                     "intruder_k": INTRUDER_K if counted else "", "intruder_threshold": INTRUDER_THRESHOLD if counted else ""})
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
        acc[r["component"]] = acc.get(r["component"], 0.0) + float(r["distance"]) ** 2
    return {k: v ** 0.5 for k, v in acc.items()}


def cell_frames(task_table, cells: list[dict]) -> list:
    """Each of `cells`' rows of a task's weight-distance table (results/distances/<task>.tsv, the
    cell identity columns first), as DataFrames in the order of `cells`: selected by identity."""
    import pandas as pd

    from ..columns import CELL

    table = pd.read_csv(task_table, sep="\t", dtype={k: str for k in CELL})
    return [table[(table[list(CELL)] == [str(c[k]) for k in CELL]).all(axis=1)] for c in cells]
