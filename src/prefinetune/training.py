"""One training loop for both stages: multi-task pre-finetuning and single-task fine-tuning.

Each optimizer update accumulates ``grad_accum`` micro-batches from :class:`MultiTaskSampler`; a
micro-batch is padded to its longest row only (dynamic padding) and holds rows of several tasks unless
the homogeneous ablation is on. AdamW, linear warm-up then linear decay, gradient clipping.
Under torchrun each process trains on a shard of every micro-batch (``distributed.py``); pre-finetuning
saves resumable checkpoints and stops cleanly on SIGTERM/SIGUSR1 (``checkpoint.py``), in both stages.
"""

from __future__ import annotations

import contextlib
import math
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint, distributed
from .heads import MultiTaskModel, Segment
from .io import atomic_path, write_json
from .sampling import MultiTaskSampler
from .tasks import Task


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_encoder(model_dir: str | Path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(model_dir), add_pooling_layer=False)


def collate(data: dict, batch: list[tuple[str, int]], pad_id: int, device: torch.device):
    """Rows of a (task, index) batch, grouped by task into :class:`Segment`s, padded to the longest row.

    A multiple-choice example gives one row per choice; a span example is one passage window.
    """
    rows, segments = [], []
    for task in dict.fromkeys(t for t, _ in batch):
        picked = data[task][[i for t, i in batch if t == task]]
        start, counts = len(rows), None
        if "start_positions" in picked:  # span windows
            labels = torch.tensor([picked["start_positions"], picked["end_positions"]]).T
            rows.extend(picked["input_ids"])
        elif picked["input_ids"] and isinstance(picked["input_ids"][0][0], list):  # multiple choice
            counts = [len(choices) for choices in picked["input_ids"]]
            labels = torch.tensor(picked["label"])
            rows.extend(r for choices in picked["input_ids"] for r in choices)
        else:
            labels = torch.tensor(picked["label"], dtype=torch.float32)
            rows.extend(picked["input_ids"])
        segments.append(Segment(task, start, len(rows), labels.to(device), counts))
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        input_ids[j, : len(r)] = torch.tensor(r)
        attention_mask[j, : len(r)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device), "segments": segments}


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and LayerNorm weights (the usual BERT/RoBERTa recipe)."""
    decay, no_decay = [], []
    for p in model.parameters():  # 1-d tensors are the biases and LayerNorm weights
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def train(model: MultiTaskModel, data: dict, settings: dict, steps: int, pad_id: int, log_path: str | Path,
          desc: str = "train", checkpoint_dir: str | Path | None = None) -> dict:
    """Run ``steps`` optimizer updates; writes a TSV loss log atomically and returns a summary.

    Under torchrun, each process trains on its shard of every micro-batch and gradients are summed once per
    update (see :mod:`prefinetune.distributed`); rank 0 alone writes. With ``checkpoint_dir``, the run resumes
    from a checkpoint an earlier attempt left there, saves one every ``checkpoint_every`` updates, and on
    SIGTERM or SIGUSR1 saves one at the end of the current update and exits with code 143.
    """
    from transformers import get_linear_schedule_with_warmup

    device = pick_device()
    rank, world = distributed.rank(), distributed.world_size()
    if settings["batch_size"] < world:
        raise ValueError(f"batch_size {settings['batch_size']} is smaller than the {world} processes sharing each batch")
    model.to(device).train()
    distributed.broadcast_model(model)
    distributed.seed_rank(settings["seed"])
    sampler = MultiTaskSampler(
        {t: len(ds) for t, ds in data.items()}, settings["batch_size"], settings["seed"],
        temperature=settings["temperature"], cap=settings["cap"], homogeneous=settings["batches"] == "homogeneous",
    )
    optimizer = make_optimizer(model, settings["lr"], settings["weight_decay"])
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(settings["warmup_ratio"] * steps), steps)
    accum = settings["grad_accum"]
    log_rows = ["step\tloss\tlr\ttasks_in_update\tseconds"]
    running, done, elapsed = [], 0, 0.0
    if checkpoint_dir is not None:
        stamp = checkpoint.fingerprint(settings, steps, sampler.sizes, world)
        saved = checkpoint.load(checkpoint_dir, stamp)
        if saved is not None:
            checkpoint.restore(saved, rank, model=model, optimizer=optimizer, scheduler=scheduler, sampler=sampler)
            done, elapsed, log_rows, running = saved["step"], saved["seconds"], saved["log_rows"], saved["running"]
            if distributed.is_main():
                print(f"resuming from {checkpoint_dir} after update {done} of {steps}", file=sys.stderr)

    def save_checkpoint(step: int) -> None:
        rngs = distributed.gather(checkpoint.rng_state())  # every rank takes part, rank 0 writes
        if distributed.is_main():
            checkpoint.save(checkpoint_dir, stamp, rngs, step=step, seconds=time.time() - start, log_rows=log_rows,
                            running=running, model=model, optimizer=optimizer, scheduler=scheduler, sampler=sampler)

    start = time.time() - elapsed
    bar = tqdm(range(done + 1, steps + 1), initial=done, total=steps, desc=desc, file=sys.stderr, mininterval=5,
               disable=rank > 0)
    with checkpoint.StopSignals() if checkpoint_dir is not None else contextlib.nullcontext() as stop:
        for step in bar:
            tasks_seen: set[str] = set()
            losses = []
            for micro in range(accum):
                batch = sampler.batch((step - 1) * accum + micro)
                tasks_seen.update(t for t, _ in batch)
                mine = distributed.shard(batch, rank, world)
                inputs = collate(data, mine, pad_id, device)
                loss, _ = model(**inputs)
                # the loss is the mean over this shard's items; weighted by the shard's share of the batch, its
                # sum over ranks is the mean over the whole micro-batch (weight 1 with one process)
                weight = len(mine) / len(batch)
                (loss * weight / accum).backward()
                losses.append(loss.item() * weight)
            distributed.sum_gradients(model.parameters())
            stop_asked = float(stop is not None and stop.received is not None)
            *losses, stop_votes = distributed.sum_values([*losses, stop_asked], device)
            running.extend(losses)
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings["max_grad_norm"])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if step % settings["log_every"] == 0 or step == steps:
                mean_loss = float(np.mean(running))
                running = []
                log_rows.append(f"{step}\t{mean_loss:.6f}\t{scheduler.get_last_lr()[0]:.3e}\t{len(tasks_seen)}\t{time.time() - start:.1f}")
                bar.set_postfix(loss=f"{mean_loss:.4f}")
            if checkpoint_dir is not None and step < steps and (stop_votes or step % settings["checkpoint_every"] == 0):
                save_checkpoint(step)
                if stop_votes:
                    if distributed.is_main():
                        print(f"\nstop signal ({stop.received or 'on another rank'}): saved a checkpoint after update "
                              f"{step} of {steps} to {checkpoint_dir}; rerun to resume", file=sys.stderr)
                    raise SystemExit(checkpoint.EXIT_INTERRUPTED)
    if distributed.is_main():
        with atomic_path(log_path) as tmp:
            tmp.write_text("\n".join(log_rows) + "\n")
    # the last step is always logged, so mean_loss is the final logged loss
    return {"steps": steps, "final_loss": round(mean_loss, 6), "seconds": round(time.time() - start, 1),
            "processes": world, "hosts": sorted(set(distributed.gather(socket.gethostname()))), "resumed_after": done}


@torch.no_grad()
def predict(model: MultiTaskModel, ds, task: Task, pad_id: int, batch_size: int):
    """Model outputs and labels for a whole split, as numpy arrays.

    classification / regression: (logits or values, labels); multiple choice: (choice scores, padded with
    -inf to the most choices, answer indices); span: (per-window start and end logits, trimmed to the
    window's tokens, as a pair of lists; None). Dropout is off.
    """
    device = pick_device()
    model.to(device).eval()
    outputs, labels = [], []
    for lo in range(0, len(ds), batch_size):
        inputs = collate({task.name: ds}, [(task.name, i) for i in range(lo, min(lo + batch_size, len(ds)))],
                         pad_id, device)
        _, out = model(**inputs)
        out = out[task.name].float().cpu().numpy()
        if task.type == "span":
            lengths = inputs["attention_mask"].sum(-1).tolist()
            outputs.extend((o[:n, 0], o[:n, 1]) for o, n in zip(out, lengths))
        else:
            outputs.append(out)
            labels.append(inputs["segments"][0].labels.cpu().numpy())
    if task.type == "span":
        return [s for s, _ in outputs], [e for _, e in outputs]
    if task.type == "multiple_choice":  # batches may differ in their most choices: pad to the widest
        width = max(o.shape[1] for o in outputs)
        outputs = [np.pad(o, ((0, 0), (0, width - o.shape[1])), constant_values=-np.inf) for o in outputs]
    return np.concatenate(outputs), np.concatenate(labels)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def save_model(model: MultiTaskModel, tokenizer, out_dir: str | Path, summary: dict) -> None:
    """Encoder (safetensors, loadable with ``AutoModel.from_pretrained``), tokenizer, heads and a summary."""
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.encoder.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        model.save_heads(tmp)
        write_json(tmp / "prefinetune.json", summary)
