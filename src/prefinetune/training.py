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
from .device import auto_precision
from .families import family
from .faults import Fault
from .heads import MultiTaskModel
from .io import atomic_path, write_json
from .monitor import DEFAULT_REPORT_TO, Monitor
from .sampling import MultiTaskSampler

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto``: bf16 on a GPU of compute capability 8.0 and above, fp16 with a loss scaler below it, fp32 on the
    CPU (``device.auto_precision``); other values as they are."""
    if requested != "auto":
        return requested
    return auto_precision(torch.cuda.get_device_capability(device) if device.type == "cuda" else None)


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


class TaskLosses:
    """Each task's summed (scaled) loss and its examples over one logging window, for the live log. A forward
    pass hands over its examples' losses as they lie on the device (``MultiTaskModel.pass_losses``): no kernel
    and no host sync per micro-batch; they are summed per task once per window, when it is read."""

    def __init__(self, names: list[str]):
        self.names = sorted(names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.clear()

    def add(self, pass_losses: tuple | None) -> None:
        """A forward pass's ``MultiTaskModel.pass_losses``: (every example's loss, [(task, examples), ...])."""
        if pass_losses is not None:
            losses, counts = pass_losses
            self.losses.append(losses)
            self.counts += [(self.index[name], n) for name, n in counts]

    def clear(self) -> None:
        """Start the window again, without reading it (an update redone after running out of memory)."""
        self.losses: list[torch.Tensor] = []
        self.counts: list[tuple[int, int]] = []

    def take(self) -> tuple[list[float], list[float]]:
        """The window's sums and counts, in ``names`` order (one host sync); the window starts again."""
        sums = counts = np.zeros(len(self.names))
        if self.losses:
            values = torch.cat([t.float() for t in self.losses]).cpu().numpy().astype(np.float64)
            rows, sizes = np.array(self.counts).T
            task = np.repeat(rows, sizes)  # each example's task, in the order of the losses
            sums = np.bincount(task, weights=values, minlength=len(self.names))
            counts = np.bincount(task, minlength=len(self.names)).astype(float)
        self.clear()
        return sums.tolist(), counts.tolist()


def backward_update(model: MultiTaskModel, shards: list[dict], examples: int, device: torch.device,
                    precision: str = "fp32", scaler: torch.amp.GradScaler | None = None,
                    task_losses: TaskLosses | None = None) -> torch.Tensor:
    """Forward and backward passes over this rank's collated micro-batches of one update, which has
    ``examples`` examples in all (all micro-batches, all ranks); returns this rank's share of the update's mean
    loss. Each micro-batch's loss, the mean over its examples, is weighted by its share of the update's
    examples: the summed gradient is then that of the update's mean loss, however its examples are grouped
    into micro-batches and shards. ``task_losses`` gathers each task's loss for the live log."""
    update_loss = torch.zeros((), device=device)
    for shard in shards:
        inputs = to_device(shard, device)
        with autocast(precision, device):
            loss, _ = model(**inputs)
        weight = sum(s.labels.shape[0] for s in inputs["segments"]) / examples
        (loss * weight if scaler is None else scaler.scale(loss * weight)).backward()
        update_loss += loss.detach().float() * weight  # summed on the device: one host sync per update
        if task_losses is not None:
            task_losses.add(model.pass_losses)
    return update_loss


@torch.no_grad()
def validation_loss(model: MultiTaskModel, arrays: dict, pad_id: int, batch_size: int, device: torch.device,
                    precision: str) -> float:
    """The mean scaled loss over every example of the held-out slices (all tasks: the multi-task validation loss
    of the convergence budget), in eval mode; the model is put back into training mode."""
    model.eval()
    total, count = 0.0, 0
    for name, a in arrays.items():
        for lo in range(0, len(a), batch_size):
            batch = [(name, i) for i in range(lo, min(lo + batch_size, len(a)))]
            with autocast(precision, device):
                loss, _ = model(**to_device(collate(arrays, batch, pad_id), device))
            total += float(loss) * len(batch)
            count += len(batch)
    model.train()
    return total / count


def log_columns(validates: bool) -> list[str]:
    """train_log.tsv's columns: the validation loss where the budget computes one; seconds always last."""
    return ["step", "loss", "lr", "tasks_in_update", *(["val_loss"] if validates else []), "seconds"]


def train(model: MultiTaskModel, data: dict, settings: dict, steps: int, pad_id: int, log_path: str | Path,
          desc: str = "train", checkpoint_dir: str | Path | None = None, live_dir: str | Path | None = None,
          inputs: dict | None = None, validation: dict | None = None, finish=None):
    """Run ``steps`` optimizer updates (fewer when the convergence budget stops early); writes the TSV loss log
    atomically to ``log_path`` and returns a summary.

    Under torchrun, each process trains on its shard of every micro-batch and gradients are summed once per
    update (see :mod:`prefinetune.distributed`); rank 0 alone writes. With ``checkpoint_dir``, the run resumes
    from a checkpoint an earlier attempt of the same run left there (``inputs``, the identity of what the job
    read, is part of its fingerprint), saves one every ``checkpoint_every`` updates, and on SIGTERM or SIGUSR1
    saves one at the end of the current update and exits with code 143. ``live_dir``: where the live record goes
    as training runs (``monitor.py``); without one (or with ``report_to`` empty), the per-task losses, token
    counts and live scalars are not computed at all. ``validation`` (task -> tokenized validation slice): with
    ``budget: convergence`` the multi-task validation loss is computed every ``eval_every`` updates, training
    stops after ``patience`` evaluations without a new best, and the best weights are kept.

    ``finish(summary)``: what the job then does with the model (evaluate it, save it); train returns what it
    returns. It runs while a stop signal still saves a checkpoint, then one marked finished, after the last
    update, from which a retry goes straight to ``finish``. Faults (docs/reliability.md): a non-finite loss, or
    gradient norm (but under fp16, whose gradient scaler skips such a step), stops the run with one line (a
    :class:`Fault`), which its retries repeat at once; running out of memory redoes the update with each
    micro-batch cut in half (``micro_batch_halvings`` in the summary); a checkpoint that cannot be written is
    skipped with a warning.
    """
    from transformers import get_linear_schedule_with_warmup

    # setup: device, precision, data, sampler, optimizer and schedule
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
    costs = {t: family(model.tasks[t]).model.label_cost(model.tasks[t], a.labels) for t, a in arrays.items()}
    model.label_costs = {t: c for t, c in costs.items() if c is not None}  # regression: the labels' variance
    sampler = MultiTaskSampler(
        {t: len(a) for t, a in arrays.items()}, settings["batch_size"], settings["seed"],
        temperature=settings["temperature"], cap=settings["cap"], homogeneous=settings["batches"] == "homogeneous",
    )
    optimizer = make_optimizer(model, settings["lr"], settings["weight_decay"], device)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(settings["warmup_ratio"] * steps), steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")  # fp16 only: bf16 has fp32's range
    accum = settings["grad_accum"]
    # homogeneous updates stay one task each; otherwise the update's examples are grouped by length
    regroup = settings["group_by_length"] and settings["batches"] != "homogeneous"
    converge = settings.get("budget") == "convergence"
    held_out = task_arrays(validation, model.tasks) if converge else None

    # resume: the checkpoint of this very run (same settings and inputs), if an earlier attempt left one
    done, elapsed, rows, running = 0, 0.0, None, []
    early = {"best": math.inf, "best_step": 0, "waited": 0, "weights": None}
    cut = {"halvings": 0}  # after running out of memory: each micro-batch is cut in half this many times
    stamp = checkpoint.fingerprint({**settings, "precision": precision}, steps, sampler.sizes, world, inputs)
    saved = checkpoint.resume(checkpoint_dir, stamp, model) if checkpoint_dir is not None else None
    finished = saved.get("finished") if saved is not None else None  # saved after the last update
    if finished is not None:
        model.load_state_dict(saved["model"])
        done, rows = saved["step"], saved["log_rows"]
        if distributed.is_main():
            print(f"resuming from {checkpoint_dir} after the last update ({done} of {steps})", file=sys.stderr)
    elif saved is not None:
        checkpoint.restore(saved, rank, model=model, optimizer=optimizer, scheduler=scheduler, sampler=sampler,
                           scaler=scaler)
        done, elapsed, rows, running, early = (saved["step"], saved["seconds"], saved["log_rows"], saved["running"],
                                               saved["early"])
        cut["halvings"] = saved.get("micro_batch_halvings", 0)
        if distributed.is_main():
            print(f"resuming from {checkpoint_dir} after update {done} of {steps}", file=sys.stderr)
    monitor = Monitor(live_dir if distributed.is_main() else None, log_columns(converge), rows, done + 1,
                      tuple(settings.get("report_to", DEFAULT_REPORT_TO)), name=desc)

    def prepare(step: int):
        """The update's micro-batches as drawn, and this rank's collated shard of each (grouped by length)."""
        batches = sampler.update(step, accum)
        return batches, shards_of(batches)

    def shards_of(batches: list) -> list[dict]:
        """This rank's collated shard of each micro-batch of an update, each cut in half ``cut`` times."""
        micros = group_by_length(batches, arrays) if regroup else batches
        for _ in range(cut["halvings"]):
            micros = [half for m in micros for half in (m[:len(m) // 2], m[len(m) // 2:])]
        return [collate(arrays, distributed.shard(m, rank, world), pad_id) for m in micros]

    def halve(step: int, batches: list) -> list[dict]:
        """Out of memory on some rank: the update's gradients are dropped, and its shards cut once more."""
        optimizer.zero_grad(set_to_none=True)
        if task_losses is not None:
            task_losses.clear()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        size = min(map(len, batches)) >> (cut["halvings"] + 1)
        if size < world:
            raise Fault(f"{desc}: out of memory at update {step} of {steps} with micro-batches of "
                        f"{size * 2} example(s), which cannot be cut further: give the job more GPU memory")
        cut["halvings"] += 1
        if distributed.is_main():
            print(f"\nout of memory at update {step} of {steps}: micro-batches cut in half, to {size} examples; "
                  f"{accum << cut['halvings']} per update, the same examples (micro_batch_halvings "
                  f"{cut['halvings']})", file=sys.stderr)
        return shards_of(batches)

    def save_checkpoint(step: int, sampler_state: dict) -> bool:
        """Every rank takes part, rank 0 writes; False where writing failed (a full disk, a file-size limit):
        the previous checkpoint stays, and training goes on."""
        rngs = distributed.gather(checkpoint.rng_state())
        if not distributed.is_main():
            return True
        try:
            checkpoint.save(checkpoint_dir, stamp, rngs, step=step, seconds=time.time() - start, log_rows=monitor.rows,
                            running=running, early=early, model=model, optimizer=optimizer, scheduler=scheduler,
                            sampler=sampler_state, scaler=scaler, micro_batch_halvings=cut["halvings"])
            return True
        except OSError as error:
            print(f"\nwarning: no checkpoint after update {step}: writing {checkpoint_dir}/{checkpoint.STATE} failed "
                  f"({error}); the previous one is kept, training goes on", file=sys.stderr)
            return False

    def stop_on(loss: float, norm: float, step: int, tasks: set, last: tuple | None):
        """A non-finite loss or gradient norm: one line, left for the run's retries too; no model is written."""
        what = f"loss ({loss})" if not math.isfinite(loss) else f"gradient norm ({norm})"
        before = f"{last[1]:.6g} at update {last[0]}" if last else "none in this attempt"
        message = (f"{desc}: non-finite {what} at update {step} of {steps}, tasks in the update: "
                   f"{', '.join(sorted(tasks))}; last finite loss: {before}; stopped, no model or metrics written")
        if checkpoint_dir is not None and distributed.is_main():
            checkpoint.record_failure(checkpoint_dir, stamp, message)
        monitor.close()
        raise Fault(message)

    start = time.time() - elapsed
    # the live scalars' bookkeeping, only where something records them (the same decision on every rank)
    live = live_dir is not None and bool(settings.get("report_to", DEFAULT_REPORT_TO))
    window = {"start": time.time(), "tokens": 0, "grad_norm": 0.0, "updates": 0}
    task_losses = TaskLosses(list(model.tasks)) if live else None
    step, stopped_early, stop_votes, last_finite = done, False, 0, None
    last = done if finished is not None else steps
    bar = tqdm(range(done + 1, last + 1), initial=done, total=steps, desc=desc, file=sys.stderr, mininterval=5,
               disable=rank > 0)
    prefetch = Prefetcher(prepare, sampler, done + 1, last, pin_memory=device.type == "cuda")
    with checkpoint.StopSignals() if checkpoint_dir is not None else contextlib.nullcontext() as stop, prefetch:
        for step in bar:
            # forward and backward over this rank's shards of the update (all ranks draw the same update)
            _, batches, shards, sampler_state = prefetch.get()
            if len(shards) != accum << cut["halvings"]:  # prepared before a halving
                shards = shards_of(batches)
            tasks_seen = {t for batch in batches for t, _ in batch}
            examples = sum(map(len, batches))  # of the whole update, over all ranks
            if live:
                window["tokens"] += sum(int(shard["attention_mask"].sum()) for shard in shards)
            # ... and the gradients summed over the ranks; out of memory on a rank: the update again, cut finer
            while True:
                try:
                    update_loss, failed = backward_update(model, shards, examples, device, precision, scaler,
                                                          task_losses), False
                except torch.OutOfMemoryError:
                    failed = True
                if not distributed.sum_gradients(model.parameters(), failed=failed):
                    break
                shards = halve(step, batches)
            # clip the gradients; one host sync reads the loss and the gradient norm, which must be finite (under
            # fp16 an infinite gradient is the gradient scaler's: it skips that step and lowers its scale)
            scaler.unscale_(optimizer)  # no-op unless fp16
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings["max_grad_norm"])
            update_loss, norm = torch.stack([update_loss, grad_norm.float()]).tolist()
            stop_asked = float(stop is not None and stop.received is not None)
            update_loss, stop_votes = distributed.sum_values([update_loss, stop_asked], device)
            if not math.isfinite(update_loss) or not (math.isfinite(norm) or scaler.is_enabled()):
                stop_on(update_loss, norm, step, tasks_seen, last_finite)
            last_finite = (step, update_loss)
            running.append(update_loss)
            # step
            window["grad_norm"] += norm  # read by the host sync above: no kernel
            window["updates"] += 1
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            # validate (convergence budget): keep the best weights, stop after `patience` evaluations without one
            val_loss = None
            if converge and (step % settings["eval_every"] == 0 or step == steps):
                val_loss = validation_loss(model, held_out, pad_id, settings["eval_batch_size"], device, precision)
                if val_loss < early["best"]:
                    weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                    early.update(best=val_loss, best_step=step, waited=0, weights=weights)
                else:
                    early["waited"] += 1
                stopped_early = early["waited"] >= settings["patience"]
            # log: a row of train_log.tsv, and the live scalars
            if step % settings["log_every"] == 0 or step == steps or val_loss is not None or stopped_early:
                mean_loss = float(np.mean(running))
                running = []
                lr = scheduler.get_last_lr()[0]
                scalars = live_scalars(model, task_losses, window, world, device, mean_loss, lr) if live else {}
                if val_loss is not None:
                    scalars["loss/validation"] = val_loss
                validated = ["" if val_loss is None else f"{val_loss:.6f}"] if converge else []
                monitor.row([step, f"{mean_loss:.6f}", f"{lr:.3e}", len(tasks_seen), *validated,
                             f"{time.time() - start:.1f}"])
                monitor.scalars(step, scalars)
                bar.set_postfix(loss=f"{mean_loss:.4f}")
            if stopped_early:
                break
            # checkpoint: every `checkpoint_every` updates, and at once on a stop signal
            if checkpoint_dir is not None and step < steps and (stop_votes or step % settings["checkpoint_every"] == 0):
                saved_now = save_checkpoint(step, sampler_state)
                if stop_votes:  # every rank waits for rank 0's checkpoint, then all exit together
                    distributed.barrier()
                    if distributed.is_main() and saved_now:
                        print(f"\nstop signal ({stop.received or 'on another rank'}): saved a checkpoint after update "
                              f"{step} of {steps} to {checkpoint_dir}; rerun to resume", file=sys.stderr)
                    monitor.close()
                    raise SystemExit(checkpoint.EXIT_INTERRUPTED)
        monitor.close()
        if finished is not None:  # resumed after the last update: the summary as it was then
            summary = {**finished, "resumed_after": done}
        else:
            summary = {}
            if converge:  # the model that is saved is the best one seen
                model.load_state_dict(early["weights"])
                summary = {"budget": "convergence", "stopped_after": step, "stopped_early": stopped_early,
                           "best_step": early["best_step"], "best_validation_loss": round(early["best"], 6)}
            # the last step is always logged, so mean_loss is the final logged loss
            summary = {"steps": step, "final_loss": round(mean_loss, 6), "seconds": round(time.time() - start, 1),
                       "processes": world, "hosts": sorted(set(distributed.gather(socket.gethostname()))),
                       "resumed_after": done, "device": device.type, "precision": precision,
                       "attention": attention_of(model), "compiled": settings["compile"],
                       "micro_batch_halvings": cut["halvings"], **summary}
        if distributed.is_main():
            with atomic_path(log_path) as tmp:
                tmp.write_text("\n".join(monitor.rows) + "\n")
        if finish is None:
            return summary
        # evaluate, save: a stop from here on saves the final state (finished), then the job exits
        try:
            with stop.urgent() if stop is not None else contextlib.nullcontext():
                if stop_votes:  # asked for during the last update, on this rank or another
                    raise checkpoint.Interrupted(stop.received or "on another rank")
                return finish(summary)
        except checkpoint.Interrupted as signal_name:
            if distributed.is_main():  # no collective: the other ranks may be past this point
                checkpoint.save(checkpoint_dir, stamp, [], step=step, log_rows=monitor.rows, model=model,
                                finished=summary)
                print(f"\nstop signal ({signal_name}) after the last update: saved the final state to "
                      f"{checkpoint_dir}; rerun to finish without training", file=sys.stderr)
            raise SystemExit(checkpoint.EXIT_INTERRUPTED) from None


def live_scalars(model: MultiTaskModel, task_losses: TaskLosses, window: dict, world: int, device: torch.device,
                 mean_loss: float, lr: float) -> dict[str, float]:
    """The scalars of one log step, summed over the ranks and reset for the next window: the training loss,
    overall, per family and per task; the learning rate; the mean gradient norm; real tokens per second."""
    sums, counts = task_losses.take()
    norm, updates = float(window["grad_norm"]), window["updates"]
    totals = distributed.sum_values([*sums, *counts, window["tokens"]], device)
    seconds = max(time.time() - window["start"], 1e-9)
    out = {"loss/train": mean_loss, "lr": lr, "grad_norm": norm / max(updates, 1),
           "tokens_per_s": totals[-1] / seconds}
    by_family: dict[str, list[float]] = {}
    n = len(task_losses.names)
    for name, total, count in zip(task_losses.names, totals[:n], totals[n:2 * n]):
        if count:
            out[f"loss_task/{name}"] = total / count
            pair = by_family.setdefault(model.tasks[name].family, [0.0, 0.0])
            pair[0] += total
            pair[1] += count
    out.update({f"loss_family/{f}": total / count for f, (total, count) in by_family.items()})
    window.update(start=time.time(), tokens=0, grad_norm=0.0, updates=0)
    return out


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
