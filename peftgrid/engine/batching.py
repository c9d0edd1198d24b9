"""Batches: length-grouped order, dynamic padding to the batch's longest example, device moves."""
from __future__ import annotations

import random

import torch

IGNORE = -100  # label id the loss and the metrics skip


def batch_order(lengths: list[int], batch_size: int, rng: random.Random | None, group_by_length: bool) -> list[list[int]]:
    """Batches of indices. Training (rng given): shuffled; with group_by_length, examples of
    similar length share a batch (sorted within shuffled windows of 50 batches, like HF's
    LengthGroupedSampler) so dynamic padding wastes little. Evaluation (no rng): sorted by length."""
    idx = list(range(len(lengths)))
    if rng is None:
        idx.sort(key=lambda i: -lengths[i])
        return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    rng.shuffle(idx)
    if group_by_length:
        window = batch_size * 50
        idx = [i for s in range(0, len(idx), window)
               for i in sorted(idx[s:s + window], key=lambda i: -lengths[i])]
    batches = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def collate(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e["input_ids"]) for e in examples)
    batch = {}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
        if key in examples[0]:
            batch[key] = torch.tensor([e[key] + [fill] * (width - len(e[key])) for e in examples])
    if isinstance(examples[0]["labels"], list):
        lab_width = max(len(e["labels"]) for e in examples)
        batch["labels"] = torch.tensor([e["labels"] + [IGNORE] * (lab_width - len(e["labels"])) for e in examples])
    else:
        batch["labels"] = torch.tensor([e["labels"] for e in examples])
    return batch


def to_device(batch: dict, device: torch.device) -> dict:
    """On CUDA through pinned (page-locked) host memory, so the copy is asynchronous and the host
    goes on while the GPU receives the batch; elsewhere the tensors as they are."""
    if device.type == "cuda":
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return {k: v.to(device) for k, v in batch.items()}
