"""One training loop for both stages: multi-task pre-finetuning and single-task fine-tuning.

Each optimizer update accumulates ``grad_accum`` micro-batches from :class:`MultiTaskSampler`. With
``group_by_length`` (the default) the update's examples are sorted by length before they are cut into its
micro-batches, so a micro-batch holds examples of similar length, from whichever tasks drew them; the
update, where the paper's heterogeneity lives, keeps exactly its examples and its summed loss. A
micro-batch is padded to its longest row only (dynamic padding). Batches are drawn and padded in a
background thread (``batching.py``). AdamW, linear warm-up then linear decay, gradient clipping, and
``precision``: bf16 or fp16 autocast over fp32 weights (fp16 with a gradient scaler), or fp32.
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
from .batching import Prefetcher, collate, group_by_length, task_arrays, to_device
from .heads import MultiTaskModel
from .io import atomic_path, write_json
from .sampling import MultiTaskSampler

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto``: bf16 on a GPU that has it, else fp32 (the CPU, older GPUs); other values as they are."""
    if requested != "auto":
        return requested
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def autocast(precision: str, device: torch.device):
    """The forward pass's context: autocast to bf16 / fp16 (weights stay fp32), nothing for fp32."""
    if precision in AUTOCAST:
        return torch.autocast(device.type, dtype=AUTOCAST[precision])
    return contextlib.nullcontext()


def load_encoder(model_dir: str | Path):
    """The pretrained transformer, with PyTorch's SDPA attention where its architecture has it, else its own
    default: an encoder without pooler (``AutoModel``), or an encoder-decoder with its LM head (BART:
    ``AutoModelForSeq2SeqLM``), as the model's config says."""
    from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

    if AutoConfig.from_pretrained(str(model_dir)).is_encoder_decoder:
        auto, kwargs = AutoModelForSeq2SeqLM, {}
    else:
        auto, kwargs = AutoModel, {"add_pooling_layer": False}
    try:
        return auto.from_pretrained(str(model_dir), attn_implementation="sdpa", **kwargs)
    except (ValueError, ImportError):  # transformers: this architecture does not support SDPA
        return auto.from_pretrained(str(model_dir), **kwargs)


def attention_of(model: MultiTaskModel) -> str:
    return str(getattr(model.encoder.config, "_attn_implementation", None) or "eager")


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                   device: torch.device | None = None) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and LayerNorm weights (the usual BERT/RoBERTa recipe); its fused
    implementation on CUDA, PyTorch's default on the CPU."""
    decay, no_decay = [], []
    for p in model.parameters():  # 1-d tensors are the biases and LayerNorm weights
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = {"fused": True} if device is not None and device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=lr, **fused)


def backward_update(model: MultiTaskModel, shards: list[dict], examples: int, device: torch.device,
                    precision: str = "fp32", scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """Forward and backward passes over this rank's collated micro-batches of one update, which has
    ``examples`` examples in all (all micro-batches, all ranks); returns this rank's share of the update's mean
    loss. Each micro-batch's loss, the mean over its examples, is weighted by its share of the update's
    examples: the summed gradient is then that of the update's mean loss, however its examples are grouped
    into micro-batches and shards."""
    update_loss = torch.zeros((), device=device)
    for shard in shards:
        inputs = to_device(shard, device)
        with autocast(precision, device):
            loss, _ = model(**inputs)
        weight = sum(s.labels.shape[0] for s in inputs["segments"]) / examples
        (loss * weight if scaler is None else scaler.scale(loss * weight)).backward()
        update_loss += loss.detach().float() * weight  # summed on the device: one host sync per update
    return update_loss


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
    precision = resolve_precision(settings["precision"], device)
    if device.type == "cuda":  # fp32 matmuls (all of them under fp32, the few left under autocast)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = settings["tf32"]
    model.to(device).train()
    distributed.broadcast_model(model)
    distributed.seed_rank(settings["seed"])
    if settings["compile"]:
        model.encoder.compile(dynamic=True)  # in place: state_dict keys and save_pretrained are unchanged
    arrays = task_arrays(data, model.tasks)
    sampler = MultiTaskSampler(
        {t: len(ds) for t, ds in arrays.items()}, settings["batch_size"], settings["seed"],
        temperature=settings["temperature"], cap=settings["cap"], homogeneous=settings["batches"] == "homogeneous",
    )
    optimizer = make_optimizer(model, settings["lr"], settings["weight_decay"], device)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(settings["warmup_ratio"] * steps), steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")  # fp16 only: bf16 has fp32's range
    accum = settings["grad_accum"]
    # homogeneous batches stay one task each; otherwise the update's examples are grouped by length
    regroup = settings["group_by_length"] and settings["batches"] != "homogeneous"
    log_rows = ["step\tloss\tlr\ttasks_in_update\tseconds"]
    running, done, elapsed = [], 0, 0.0
    if checkpoint_dir is not None:
        stamp = checkpoint.fingerprint({**settings, "precision": precision}, steps, sampler.sizes, world)
        saved = checkpoint.load(checkpoint_dir, stamp)
        if saved is not None:
            checkpoint.restore(saved, rank, model=model, optimizer=optimizer, scheduler=scheduler, sampler=sampler,
                               scaler=scaler)
            done, elapsed, log_rows, running = saved["step"], saved["seconds"], saved["log_rows"], saved["running"]
            if distributed.is_main():
                print(f"resuming from {checkpoint_dir} after update {done} of {steps}", file=sys.stderr)

    def prepare(step: int):
        """The update's micro-batches as drawn, and this rank's collated shard of each (grouped by length)."""
        batches = [sampler.batch((step - 1) * accum + micro) for micro in range(accum)]
        micros = group_by_length(batches, arrays) if regroup else batches
        return batches, [collate(arrays, distributed.shard(m, rank, world), pad_id) for m in micros]

    def save_checkpoint(step: int, sampler_state: dict) -> None:
        rngs = distributed.gather(checkpoint.rng_state())  # every rank takes part, rank 0 writes
        if distributed.is_main():
            checkpoint.save(checkpoint_dir, stamp, rngs, step=step, seconds=time.time() - start, log_rows=log_rows,
                            running=running, model=model, optimizer=optimizer, scheduler=scheduler,
                            sampler=sampler_state, scaler=scaler)

    start = time.time() - elapsed
    bar = tqdm(range(done + 1, steps + 1), initial=done, total=steps, desc=desc, file=sys.stderr, mininterval=5,
               disable=rank > 0)
    prefetch = Prefetcher(prepare, sampler, done + 1, steps, pin_memory=device.type == "cuda")
    with checkpoint.StopSignals() if checkpoint_dir is not None else contextlib.nullcontext() as stop, prefetch:
        for step in bar:
            _, batches, shards, sampler_state = prefetch.get()
            tasks_seen = {t for batch in batches for t, _ in batch}
            examples = sum(map(len, batches))  # of the whole update, over all ranks
            update_loss = backward_update(model, shards, examples, device, precision, scaler)
            distributed.sum_gradients(model.parameters())
            stop_asked = float(stop is not None and stop.received is not None)
            update_loss, stop_votes = distributed.sum_values([update_loss.item(), stop_asked], device)
            running.append(update_loss)
            scaler.unscale_(optimizer)  # no-op unless fp16
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings["max_grad_norm"])
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if step % settings["log_every"] == 0 or step == steps:
                mean_loss = float(np.mean(running))
                running = []
                log_rows.append(f"{step}\t{mean_loss:.6f}\t{scheduler.get_last_lr()[0]:.3e}\t{len(tasks_seen)}\t{time.time() - start:.1f}")
                bar.set_postfix(loss=f"{mean_loss:.4f}")
            if checkpoint_dir is not None and step < steps and (stop_votes or step % settings["checkpoint_every"] == 0):
                save_checkpoint(step, sampler_state)
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
            "processes": world, "hosts": sorted(set(distributed.gather(socket.gethostname()))), "resumed_after": done,
            "device": device.type, "precision": precision, "attention": attention_of(model),
            "compiled": settings["compile"]}


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
