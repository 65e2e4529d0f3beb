"""The shared encoder with Muppet's heads, and its scaled multi-task loss.

``MultiTaskModel`` runs the encoder once on a mixed batch (rows of many tasks, padded together), then
sends each task's rows (a :class:`Segment`) to its head:

  classification, regression   a head per dataset on the first token (RoBERTa's sentence head)
  multiple_choice              one head for all such datasets: a score per (context, choice) row, softmax
                               over each example's own choices (their number may differ per example)
  span                         one head for all such datasets: start and end logits per token of a window

Each example's loss is multiplied by 1 / log(n), n its number of possible outputs (classes, choices, or
the window's tokens), so that a uniform prediction costs 1 on every task; regression is unscaled. The
batch loss is the mean over examples (an example is a sentence (pair), a question with its choices, or a
passage window).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .tasks import Task, log_scale

HEADS_WEIGHTS = "heads.safetensors"
HEADS_INDEX = "heads.json"


@dataclass
class Segment:
    """Rows ``start:end`` of a batch belong to ``task``; ``labels`` has one entry per example."""

    task: str
    start: int
    end: int
    labels: torch.Tensor | None = None  # class / value / answer index; span: (examples, 2) start and end token
    choice_counts: list[int] | None = None  # multiple choice: rows (choices) per example, in order


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


def make_head(task: Task, hidden_size: int, dropout: float) -> nn.Module:
    if task.type == "span":
        return SpanHead(hidden_size, dropout)
    return ClassificationHead(hidden_size, 1 if task.type == "multiple_choice" else task.num_labels, dropout)


def choice_scores(scores: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Flat per-choice scores -> (examples, most choices), -inf where an example has fewer choices."""
    out = scores.new_full((len(counts), max(counts)), float("-inf"))
    for j, chunk in enumerate(torch.split(scores, counts)):
        out[j, : len(chunk)] = chunk
    return out


def example_losses(task: Task, outputs, labels: torch.Tensor, scale: bool, mask: torch.Tensor | None = None):
    """Per-example loss of one task, scaled by 1 / log(n) when ``scale`` (Muppet).

    ``outputs``: logits (classification), values (regression), padded choice scores (multiple choice), or
    (rows, tokens, 2) start/end logits (span, with ``mask`` the rows' attention mask).
    """
    if task.type == "regression":
        return F.mse_loss(outputs.squeeze(-1), labels.float(), reduction="none")
    if task.type == "span":
        mask = mask.bool()
        logits = outputs.float().masked_fill(~mask.unsqueeze(-1), float("-inf"))
        labels = labels.long()
        loss = (F.cross_entropy(logits[..., 0], labels[:, 0], reduction="none")
                + F.cross_entropy(logits[..., 1], labels[:, 1], reduction="none")) / 2
        n = mask.sum(-1).float()
    else:  # classification and multiple choice: a softmax over the (finite) outputs
        loss = F.cross_entropy(outputs.float(), labels.long(), reduction="none")
        n = torch.isfinite(outputs).sum(-1).float()
    return loss * log_scale(n) if scale else loss


class MultiTaskModel(nn.Module):
    def __init__(self, encoder: nn.Module, tasks: list[Task], dropout: float = 0.1, loss_scaling: bool = True):
        super().__init__()
        self.encoder = encoder
        self.tasks = {t.name: t for t in tasks}
        hidden = encoder.config.hidden_size
        self.heads = nn.ModuleDict({t.head: make_head(t, hidden, dropout) for t in tasks})
        self.loss_scaling = loss_scaling

    def forward(self, input_ids, attention_mask, segments: list[Segment]):
        """Returns (mean scaled loss over the examples, or None without labels; outputs per task)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        outputs, losses = {}, []
        for seg in segments:
            task = self.tasks[seg.task]
            head = self.heads[task.head]
            rows = slice(seg.start, seg.end)
            if task.type == "span":
                out = head(hidden[rows])
            elif task.type == "multiple_choice":
                out = choice_scores(head(hidden[rows, 0]).squeeze(-1), seg.choice_counts)
            else:
                out = head(hidden[rows, 0])
            outputs[seg.task] = out
            if seg.labels is not None:
                losses.append(example_losses(task, out, seg.labels, self.loss_scaling, attention_mask[rows]))
        loss = torch.cat(losses).mean() if losses else None
        return loss, outputs

    def save_heads(self, out_dir: str | Path) -> None:
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        save_file({k: v.contiguous() for k, v in self.heads.state_dict().items()}, str(out_dir / HEADS_WEIGHTS))
        index: dict[str, dict] = {}
        for t in self.tasks.values():  # a shared head lists all of its tasks; only dataset heads have num_labels
            entry = index.setdefault(t.head, {"type": t.type, "tasks": []} if t.head == t.type else
                                     {"type": t.type, "num_labels": t.num_labels, "tasks": []})
            entry["tasks"].append(t.name)
        (out_dir / HEADS_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    def load_heads(self, model_dir: str | Path, names: list[str] | None = None) -> None:
        """Copy saved heads (all, or the heads named ``names``) into this model; shapes must match."""
        from safetensors.torch import load_file

        state = load_file(str(Path(model_dir) / HEADS_WEIGHTS))
        saved = {k.split(".", 1)[0] for k in state}
        absent = sorted(set(names or self.heads) - saved)
        if absent:
            raise ValueError(f"{model_dir}: no saved head for {absent}")
        wanted = {k: v for k, v in state.items() if names is None or k.split(".", 1)[0] in names}
        _, unexpected = self.heads.load_state_dict(wanted, strict=False)
        if unexpected:
            raise ValueError(f"{model_dir}: heads not in this model: {sorted({k.split('.')[0] for k in unexpected})}")


def saved_heads(model_dir: str | Path) -> dict:
    """The heads index of a pre-finetuned model: head name -> {type, num_labels, tasks}; {} if it has none."""
    path = Path(model_dir) / HEADS_INDEX
    return json.loads(path.read_text()) if path.is_file() else {}
