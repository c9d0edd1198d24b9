"""Model pieces a method adds to a pretrained encoder: the linear-probe head."""
from __future__ import annotations

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
    """

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

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen: its dropout stays off, so features are deterministic
        return self

    def features(self, input_ids, attention_mask, **kwargs) -> torch.Tensor:
        """What the head reads: pooled sentence vectors, or every position's vector (token tasks)."""
        with torch.no_grad():
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        if self.per_token:
            return hidden
        if self.pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return hidden[:, 0]

    def pool(self, input_ids, attention_mask, **kwargs) -> torch.Tensor:
        return self.features(input_ids, attention_mask, **kwargs)

    def forward(self, input_ids, attention_mask, labels=None, **kwargs):
        logits = self.head(self.features(input_ids, attention_mask, **kwargs).float())
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                               ignore_index=-100)
        return SequenceClassifierOutput(loss=loss, logits=logits)
