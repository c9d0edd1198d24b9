"""Model pieces a method adds to a pretrained encoder: the linear-probe head."""
from __future__ import annotations

import time

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput


class LinearProbe(nn.Module):
    """A frozen encoder and a small trainable head.

    Default head: dropout -> Linear(hidden, 256) -> GELU -> dropout -> Linear(256, labels) on the
    [CLS] vector. One hidden layer because a frozen encoder's features are not linearly tuned to
    the task (a single Linear under-fits: 0.46 accuracy in the seed solution), 256 units because
    that is enough for 6 classes while staying ~100k parameters, and dropout because the head
    otherwise memorises small training sets. `pooling: mean` averages the unpadded tokens instead,
    which suits encoders trained with mean pooling (sentence-transformers such as MiniLM).

    The encoder is frozen and runs in eval mode, so an example's features never change: they are
    computed once per example (keyed by its unpadded token ids) and reused by every later epoch and
    validation pass — the same numbers as running the encoder again, without its cost.
    `encoder_seconds` is the time spent in the encoder.
    """

    CACHE_LIMIT_MB = 2048  # per-token features of a large treebank would not fit: beyond this, recompute

    def __init__(self, encoder: nn.Module, num_labels: int, hidden=(256,), dropout=0.1, pooling="cls",
                 activation="gelu", per_token: bool = False):
        super().__init__()
        self.per_token = per_token  # token classification: the head labels every position
        self.encoder = encoder
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.pooling = pooling
        act = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        layers, width = [], encoder.config.hidden_size
        for h in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(width, h), act()]
            width = h
        layers += [nn.Dropout(dropout), nn.Linear(width, num_labels)]
        self.head = nn.Sequential(*layers)
        self.config = encoder.config
        self.cache: dict[bytes, torch.Tensor] = {}
        self.cache_bytes = 0
        self.encoder_seconds = 0.0

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen: its dropout stays off, so features are deterministic
        return self

    def encode(self, input_ids, attention_mask, **kwargs) -> torch.Tensor:
        """What the head reads, computed by the encoder: pooled vectors, or every position's vector."""
        start = time.perf_counter()
        with torch.no_grad():
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        if self.per_token:
            out = hidden
        elif self.pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            out = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        else:
            out = hidden[:, 0]
        self.encoder_seconds += time.perf_counter() - start
        return out

    def features(self, input_ids, attention_mask, **kwargs) -> torch.Tensor:
        """The encoder's output for each example, from the cache where it was computed before."""
        lengths = attention_mask.sum(1).tolist()
        keys = [input_ids[i, :n].cpu().numpy().tobytes() + attention_mask[i, :n].cpu().numpy().tobytes()
                for i, n in enumerate(lengths)]
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        batch_only = {}  # features that do not fit in the cache serve this batch only
        if missing:
            extra = {k: v[missing] for k, v in kwargs.items() if torch.is_tensor(v)}
            fresh = self.encode(input_ids[missing], attention_mask[missing], **extra)
            for j, i in enumerate(missing):
                value = (fresh[j, :lengths[i]] if self.per_token else fresh[j]).detach()
                size = value.numel() * value.element_size()
                if self.cache_bytes + size <= self.CACHE_LIMIT_MB * 2**20:
                    self.cache[keys[i]] = value
                    self.cache_bytes += size
                else:
                    batch_only[keys[i]] = value
        rows = [self.cache[k] if k in self.cache else batch_only[k] for k in keys]
        if not self.per_token:
            return torch.stack(rows)
        width = input_ids.shape[1]
        out = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
        for i, r in enumerate(rows):
            out[i, :r.shape[0]] = r
        return out

    def pool(self, input_ids, attention_mask, **kwargs) -> torch.Tensor:
        return self.features(input_ids, attention_mask, **kwargs)

    def forward(self, input_ids, attention_mask, labels=None, **kwargs):
        logits = self.head(self.features(input_ids, attention_mask, **kwargs).float())
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                               ignore_index=-100)
        return SequenceClassifierOutput(loss=loss, logits=logits)
