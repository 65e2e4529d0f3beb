"""The batch structures every layer above shares: which rows of a mixed batch belong to which task, and what one
forward pass gives the heads. Plain records: this module imports nothing of the package, and no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

IGNORE_INDEX = -100  # label padding of token targets (summaries): no loss


@dataclass
class Segment:
    """Rows ``start:end`` of a batch belong to ``task``; ``labels`` has one entry per example."""

    task: str
    start: int
    end: int
    labels: Any = None  # a tensor: class / value / answer index; span: (examples, 2) start and end token
    choice_counts: list[int] | None = None  # multiple choice: rows (choices) per example, in order


@dataclass
class States:
    """What one forward pass gives the heads, for every row of the batch (tensors)."""

    hidden: Any  # (rows, input tokens, hidden): the encoder's last states (BART: the decoder's)
    pooled: Any  # (rows, hidden): a row's sequence state: its first token (BART: its last </s>)
    decoder: Any = None  # BART: (rows, decoder tokens, hidden), every decoder state
    lm_logits: Callable | None = None  # BART: decoder states -> vocabulary logits (its own LM head)
