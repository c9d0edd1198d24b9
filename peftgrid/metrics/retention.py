"""Retention measurements (issue 20): how well a model still models general text, and how far its
hidden representations moved. Imports torch only; the job (peftgrid/jobs/retention.py) loads the
models and tokenizes, and hands this module token ids and a forward function.

- Loss per token: each document is a row of `input_ids` with `labels` aligned to the positions
  whose logits predict them (IGNORE elsewhere): a causal LM scores every token from the one before
  it, a seq2seq model its decoder targets, a masked LM the masked positions. `score` sums each
  document's token losses in float64, so a model scored twice the same way gives the same sums to
  the bit (the `none` cell's delta against the base reference is exactly 0).
- Masked-LM masks (`mlm_example`): MASK_RATE of a document's non-special tokens, at least one,
  replaced by the mask token (no 80/10/10 random/keep split: the loss measures prediction of a
  hidden token, not robustness to noise), drawn by random.Random(seed) with the document's index
  as its seed — the same masks for the base and every fine-tuned model.
- Representation drift: linear CKA (Kornblith et al. 2019) between the base and the fine-tuned
  hidden states of the same tokens, per layer (0 = the embedding output); 1 = unchanged up to a
  rotation and scale. Computed on at most CKA_TOKENS token positions spread evenly over the
  documents (`cka_positions`), the same positions for both models, so the base's sample can be
  stored once. A model with virtual tokens (prompt tuning) has them sliced off: its outputs are
  aligned to the last positions, where the document's tokens are.
"""
from __future__ import annotations

import random

import torch

IGNORE = -100
MASK_RATE = 0.15
CKA_TOKENS = 2048  # token positions per layer kept for CKA: a stable estimate (the base's sample is stored)


def causal_example(ids: list[int]) -> dict:
    """Every token after the first is predicted from the ones before it."""
    return {"input_ids": ids, "labels": ids[1:] + [IGNORE]}


def seq2seq_example(source: list[int], target: list[int]) -> dict:
    """`target` is scored as the decoder's output for `source` (the labels are the target itself)."""
    return {"input_ids": source, "labels": target}


def mlm_example(ids: list[int], special: list[int], mask_id: int, seed: int, rate: float = MASK_RATE) -> dict:
    """`ids` with MASK_RATE of its non-special positions masked (at least one); labels there only."""
    candidates = [i for i, s in enumerate(special) if not s]
    chosen = set(random.Random(seed).sample(candidates, max(1, round(rate * len(candidates))))) if candidates else set()
    return {"input_ids": [mask_id if i in chosen else t for i, t in enumerate(ids)],
            "labels": [t if i in chosen else IGNORE for i, t in enumerate(ids)]}


def plain_example(ids: list[int]) -> dict:
    """Hidden states only (CKA): nothing scored."""
    return {"input_ids": ids, "labels": [IGNORE] * len(ids)}


def pad_batch(examples: list[dict], pad_id: int) -> dict:
    """Right-padded tensors; labels may be longer or shorter than the inputs (seq2seq)."""
    def pad(rows, value):
        width = max(len(r) for r in rows)
        return torch.tensor([r + [value] * (width - len(r)) for r in rows])

    ids = [e["input_ids"] for e in examples]
    return {"input_ids": pad(ids, pad_id), "attention_mask": pad([[1] * len(r) for r in ids], 0),
            "labels": pad([e["labels"] for e in examples], IGNORE)}


def cka_positions(lengths: list[int], limit: int = CKA_TOKENS) -> list[tuple[int, int]]:
    """(document, position) pairs, at most `limit`, spread evenly over all documents' tokens."""
    flat = [(d, p) for d, n in enumerate(lengths) for p in range(n)]
    n = min(limit, len(flat))
    return [flat[i * len(flat) // n] for i in range(n)]


def score(forward, examples: list[dict], batch_size: int, pad_id: int, device, losses: bool = True,
          positions: list[tuple[int, int]] | None = None) -> dict:
    """Run `forward(input_ids, attention_mask, labels) -> (logits | None, hidden states | None)`
    over the examples in order, `batch_size` at a time. Returns per document the summed token loss
    (`sums`, float64) and the scored token count (`counts`) when `losses`; and, for `positions`, each
    layer's hidden state at those positions (`hidden`: one [n, d] float32 tensor per layer)."""
    sums, counts = [0.0] * len(examples), [0] * len(examples)
    wanted: dict[int, list[tuple[int, int]]] = {}
    for k, (d, p) in enumerate(positions or []):
        wanted.setdefault(d, []).append((k, p))
    layers: list[torch.Tensor] | None = None
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = pad_batch(examples[start:start + batch_size], pad_id)
            labels = batch["labels"].to(device)
            logits, hidden = forward(batch["input_ids"].to(device), batch["attention_mask"].to(device), labels)
            width = labels.shape[1]  # the document's positions are the last `width` (virtual tokens come first)
            if losses:
                flat = logits[:, -width:].float().reshape(-1, logits.shape[-1])
                nll = torch.nn.functional.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE, reduction="none")
                nll = nll.view(labels.shape).double()
                for i, (s, c) in enumerate(zip(nll.sum(1).tolist(), (labels != IGNORE).sum(1).tolist())):
                    sums[start + i], counts[start + i] = s, c
            picks = [(k, i, p) for i in range(labels.shape[0]) for k, p in wanted.get(start + i, [])]
            if picks:
                if layers is None:
                    layers = [torch.empty(len(positions), h.shape[-1]) for h in hidden]
                ks, rows, cols = (torch.tensor(v) for v in zip(*picks))
                for layer, h in zip(layers, hidden):
                    layer[ks] = h[rows.to(h.device), (cols + h.shape[1] - width).to(h.device)].float().cpu()
    out = {"sums": sums, "counts": counts}
    if positions:
        out["hidden"] = layers
    return out


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Linear CKA of two [n, d] representations of the same n items: ||XcᵀYc||² / (||XcᵀXc|| ||YcᵀYc||)
    with column-centred X, Y (float64). None when either is constant (CKA undefined)."""
    x, y = x.double(), y.double()
    x, y = x - x.mean(0, keepdim=True), y - y.mean(0, keepdim=True)
    xx, yy = torch.linalg.matrix_norm(x.T @ x), torch.linalg.matrix_norm(y.T @ y)
    if xx == 0 or yy == 0:
        return None
    return float(torch.linalg.matrix_norm(y.T @ x) ** 2 / (xx * yy))


def layer_ckas(base: list[torch.Tensor], tuned: list[torch.Tensor]) -> list[float | None]:
    if len(base) != len(tuned):
        raise ValueError(f"the fine-tuned model has {len(tuned)} hidden-state layers, the base reference {len(base)}")
    return [linear_cka(b, t) for b, t in zip(base, tuned)]


def overall_cka(per_layer: list[float | None]) -> float | None:
    """The mean over the blocks' outputs (layers 1..L; the embedding output, layer 0, is left out:
    most adapters never change it, and it would pull every method towards 1)."""
    blocks = [c for c in per_layer[1:] if c is not None]
    return sum(blocks) / len(blocks) if blocks else None
