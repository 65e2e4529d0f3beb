"""The torch side of the families' model parts: the heads and the per-example losses.

RoBERTa's sentence head serves two families: classification (a head per dataset) and multiple choice (one head
for all, scoring each (context, choice) row). The family modules import this module when a model is built, so
that their data and scoring parts, all that download and tokenize jobs use, never load torch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ClassificationHead(nn.Module):
    """RoBERTa's sentence head: dense + tanh on the first token, dropout, projection to the labels."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.dense(self.dropout(cls)))
        return self.out_proj(self.dropout(x))


class SpanHead(nn.Module):
    """BERT's SQuAD head: one linear layer giving a start and an end logit per token."""

    def __init__(self, hidden_size: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.qa_outputs = nn.Linear(hidden_size, 2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.qa_outputs(self.dropout(hidden))  # (rows, tokens, 2)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, **options) -> torch.Tensor:
    """Per-example (or per-token) cross-entropy in fp32; ``options`` as ``F.cross_entropy``'s."""
    return F.cross_entropy(logits.float(), labels.long(), reduction="none", **options)


def squared_error(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example squared error (regression)."""
    return F.mse_loss(outputs, labels.float(), reduction="none")
