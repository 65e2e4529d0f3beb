"""The shared transformer with Muppet's heads, and its scaled multi-task loss.

``MultiTaskModel`` runs the transformer once on a mixed batch (rows of many tasks, padded together), then
sends each task's rows (a :class:`Segment`) to its head. An encoder (RoBERTa) gives the heads its last states;
an encoder-decoder (BART) its decoder's, the decoder reading each row's input shifted right, or for
summarization the summary (teacher forcing), all in the same pass:

  classification, regression   a head per dataset on the first token (RoBERTa's sentence head; BART: the last </s>)
  multiple_choice              one head for all such datasets: a score per (context, choice) row, softmax
                               over each example's own choices (their number may differ per example)
  span                         one head for all such datasets: start and end logits per token of a window
  summarization                no head: BART's own LM head on the decoder states

Each family's model part (``prefinetune.families``) makes its head, applies it to its rows and computes its loss.

Each example's loss is multiplied by 1 / log(n), n its number of possible outputs (classes, choices, the
window's tokens, or the vocabulary), so that a uniform prediction costs 1 on every task; a regression loss is
divided by the variance of the training labels, so that predicting their mean costs 1 too. The batch loss is the mean over examples (an example is a sentence (pair), a question with its
choices, a passage window, or a document with its summary).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .batch import IGNORE_INDEX, Segment, States
from .families import family, head_name
from .tasks import Task

HEADS_WEIGHTS = "heads.safetensors"
HEADS_INDEX = "heads.json"


def example_losses(task: Task, outputs, labels: torch.Tensor, scale: bool, mask: torch.Tensor | None = None,
                   smoothing: float = 0.0, label_cost: float | None = None):
    """Per-example loss of one task (its family's), divided by the cost of an uninformed prediction when ``scale``
    (Muppet's 1 / log(n); regression: 1 / ``label_cost``, the variance of the training labels), so that such a
    prediction costs 1 on every task.

    ``outputs``: logits (classification), values (regression), padded choice scores (multiple choice),
    (rows, tokens, 2) start/end logits (span, with ``mask`` the rows' attention mask), or (rows, tokens,
    vocabulary) logits (summarization, label-smoothed by ``smoothing``).
    """
    loss, cost = family(task).model.losses(task, outputs, labels, mask, smoothing, label_cost)
    return loss / cost if scale and cost is not None else loss


class MultiTaskModel(nn.Module):
    """``encoder``: the pretrained transformer, an encoder (RoBERTa: ``AutoModel``) or an encoder-decoder with
    its LM head (BART: ``AutoModelForSeq2SeqLM``); ``label_smoothing`` applies to generation tasks."""

    def __init__(self, encoder: nn.Module, tasks: list[Task], dropout: float = 0.1, loss_scaling: bool = True,
                 label_smoothing: float = 0.0):
        super().__init__()
        self.encoder = encoder
        self.seq2seq = bool(encoder.config.is_encoder_decoder)
        self.tasks = {t.name: t for t in tasks}
        for t in tasks:
            if family(t).model.needs_seq2seq and not self.seq2seq:
                raise ValueError(f"task {t.name}: {t.type} needs an encoder-decoder model (BART), not "
                                 f"{type(encoder).__name__}")
        hidden = encoder.config.hidden_size
        heads = {head_name(t): family(t).model.make_head(t, hidden, dropout) for t in tasks}
        self.heads = nn.ModuleDict({name: head for name, head in heads.items() if head is not None})
        self.loss_scaling = loss_scaling
        self.label_smoothing = label_smoothing
        self.label_costs: dict[str, float] = {}  # regression: the training labels' variance (set by training)
        self.pass_losses: tuple | None = None

    def forward(self, input_ids, attention_mask, segments: list[Segment]):
        """Returns (mean scaled loss over the examples, or None without labels; outputs per task). Also keeps
        ``pass_losses``, for the live log: every example's scaled loss in this pass (detached, on the device: no
        kernel of its own) and the (task, examples) of its segments in that order; None without labels."""
        states = self.states(input_ids, attention_mask, segments)
        outputs, losses, counts = {}, [], []
        for seg in segments:
            task = self.tasks[seg.task]
            head = self.heads[head_name(task)] if head_name(task) in self.heads else None
            out = family(task).model.outputs(task, head, states, seg)
            outputs[seg.task] = out
            if seg.labels is not None:
                mask = attention_mask[seg.start:seg.end]
                losses.append(example_losses(task, out, seg.labels, self.loss_scaling, mask, self.label_smoothing,
                                             self.label_costs.get(seg.task)))
                counts.append((seg.task, len(losses[-1])))
        every = torch.cat(losses) if losses else None
        self.pass_losses = (every.detach(), counts) if losses else None
        return (every.mean() if losses else None), outputs

    def states(self, input_ids, attention_mask, segments: list[Segment]) -> States:
        """One pass of the transformer over the whole mixed batch."""
        if not self.seq2seq:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return States(hidden, hidden[:, 0])
        decoder = self.encoder.model(input_ids=input_ids, attention_mask=attention_mask,
                                     decoder_input_ids=self.decoder_inputs(input_ids, segments)).last_hidden_state
        hidden = decoder[:, : input_ids.shape[1]]
        eos = input_ids == self.encoder.config.eos_token_id  # the last </s> of each row's input
        last = torch.where(eos, torch.arange(input_ids.shape[1], device=input_ids.device), -1).max(-1).values
        pooled = hidden[torch.arange(len(hidden), device=hidden.device), last.clamp(min=0)]
        return States(hidden, pooled, decoder, lambda h: self.encoder.lm_head(h) + self.encoder.final_logits_bias)

    def decoder_inputs(self, input_ids, segments: list[Segment]):
        """Each row's decoder input, shifted right behind the decoder start token: the summary for the rows of a
        teacher-forced family (labels; -100 is padding), else the row's own input (as BART's classification and
        question-answering models do). Padded at the end, which a causal decoder never reads before."""
        config = self.encoder.config
        forced = [s for s in segments if s.labels is not None and family(self.tasks[s.task]).model.teacher_forced]
        width = max([input_ids.shape[1], *(s.labels.shape[1] for s in forced)])
        out = input_ids.new_full((len(input_ids), width), config.pad_token_id)
        out[:, 0] = config.decoder_start_token_id
        out[:, 1: input_ids.shape[1]] = input_ids[:, :-1]
        for s in forced:
            summary = s.labels.masked_fill(s.labels == IGNORE_INDEX, config.pad_token_id)
            out[s.start:s.end, 1:] = config.pad_token_id
            out[s.start:s.end, 1: summary.shape[1]] = summary[:, :-1]
        return out

    def save_heads(self, out_dir: str | Path) -> None:
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        save_file({k: v.contiguous() for k, v in self.heads.state_dict().items()}, str(out_dir / HEADS_WEIGHTS))
        index: dict[str, dict] = {}
        for t in (t for t in self.tasks.values() if head_name(t) in self.heads):  # a shared head lists all its tasks;
            # only dataset heads have num_labels; summarization has none (BART's own LM head is the model's)
            head = head_name(t)
            entry = index.setdefault(head, {"type": t.type, "tasks": []} if head == t.type else
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
