"""The shared encoder with one head per dataset, and Muppet's scaled multi-task loss.

``MultiTaskModel`` runs the encoder once on a mixed batch (rows of many tasks, padded together), then
sends each task's rows to that task's head. Each example's loss is multiplied by its task's
:attr:`Task.loss_scale` (1 / log n for an n-way task) so that a uniform prediction costs 1 on every task;
the batch loss is the mean over examples.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .tasks import Task

HEADS_WEIGHTS = "heads.safetensors"
HEADS_INDEX = "heads.json"


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


def example_losses(task: Task, logits: torch.Tensor, labels: torch.Tensor, scale: bool) -> torch.Tensor:
    """Per-example loss of one task, scaled by 1 / log(num_labels) when ``scale`` (Muppet)."""
    if task.type == "regression":
        loss = F.mse_loss(logits.squeeze(-1), labels.float(), reduction="none")
    else:
        loss = F.cross_entropy(logits, labels.long(), reduction="none")
    return loss * task.loss_scale if scale else loss


class MultiTaskModel(nn.Module):
    def __init__(self, encoder: nn.Module, tasks: list[Task], dropout: float = 0.1, loss_scaling: bool = True):
        super().__init__()
        self.encoder = encoder
        self.tasks = {t.name: t for t in tasks}
        hidden = encoder.config.hidden_size
        self.heads = nn.ModuleDict({t.name: ClassificationHead(hidden, t.num_labels, dropout) for t in tasks})
        self.loss_scaling = loss_scaling

    def forward(self, input_ids, attention_mask, segments: list[tuple[str, int, int]], labels=None):
        """``segments`` lists (task, start, end) row ranges of the batch; returns (loss or None, logits per task)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        cls = hidden[:, 0]
        logits, losses = {}, []
        for name, start, end in segments:
            logits[name] = self.heads[name](cls[start:end])
            if labels is not None:
                losses.append(example_losses(self.tasks[name], logits[name], labels[start:end], self.loss_scaling))
        loss = torch.cat(losses).mean() if losses else None
        return loss, logits

    def save_heads(self, out_dir: str | Path) -> None:
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        save_file({k: v.contiguous() for k, v in self.heads.state_dict().items()}, str(out_dir / HEADS_WEIGHTS))
        index = {name: {"type": t.type, "num_labels": t.num_labels} for name, t in self.tasks.items()}
        (out_dir / HEADS_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    def load_heads(self, model_dir: str | Path, names: list[str] | None = None) -> None:
        """Copy saved heads (all, or ``names``) into this model; shapes must match."""
        from safetensors.torch import load_file

        state = load_file(str(Path(model_dir) / HEADS_WEIGHTS))
        wanted = {k: v for k, v in state.items() if names is None or k.split(".", 1)[0] in names}
        absent = sorted(set(names or self.heads) - {k.split(".", 1)[0] for k in state})
        if absent:
            raise ValueError(f"{model_dir}: no saved head for {absent}")
        _, unexpected = self.heads.load_state_dict(wanted, strict=False)
        if unexpected:
            raise ValueError(f"{model_dir}: heads not in this model: {sorted({k.split('.')[0] for k in unexpected})}")
