"""Data-parallel training over N processes: one per GPU, or CPU processes with gloo (tests).

torchrun starts the processes and sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address;
:func:`setup` then joins the process group. With one process nothing here creates a process group and
every helper is a no-op, so the single-GPU path stays plain.

The scheme (see :func:`prefinetune.training.train`):
- every rank draws the same global micro-batch from the sampler (a list of (task, index) items) and keeps
  the strided shard ``batch[rank::world]``, so each shard still mixes the tasks of the batch;
- the model returns the mean loss over its shard's items; weighting it by shard size / global batch size
  makes the sum over ranks the mean over the global micro-batch, whatever the shard sizes;
- gradients are summed over ranks once per optimizer update (:func:`sum_gradients`), so every rank takes
  the same optimizer step and the weights stay identical on all ranks.
"""

from __future__ import annotations

import os

import torch
from torch import distributed as dist


def setup() -> None:
    """Join the process group torchrun described in the environment (nothing to do for one process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # "cuda" now means this rank's GPU
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 alone writes logs, checkpoints and the model."""
    return rank() == 0


def shard(batch: list, rank: int, world: int) -> list:
    """This rank's items of a global micro-batch: every ``world``-th item, so a shard mixes tasks too."""
    return batch[rank::world]


def broadcast_model(model: torch.nn.Module) -> None:
    """Start every rank from rank 0's weights (the heads are seeded alike anyway; this makes it certain)."""
    if world_size() > 1:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def sum_gradients(params, failed: bool = False) -> bool:
    """Sum every gradient over the ranks in one all-reduce; returns whether a rank ``failed`` its part of the
    update (ran out of memory), in which case no gradient is summed and every rank redoes the update.

    A parameter that no rank touched in this update (a head whose task was not drawn) keeps ``grad=None``,
    as it would with one process, so AdamW leaves it alone instead of decaying it with a zero gradient.
    """
    if world_size() == 1:
        return failed
    params = [p for p in params if p.requires_grad]
    device = params[0].device
    touched = torch.tensor([float(p.grad is not None) for p in params] + [float(failed)], device=device)
    dist.all_reduce(touched)  # the failure flag rides on this existing all-reduce: no extra sync
    *touched, failures = touched.tolist()
    if failures:
        return True
    live = [p for p, t in zip(params, touched) if t > 0]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in live])
    dist.all_reduce(flat)
    offset = 0
    for p in live:
        p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
        offset += p.numel()
    return False


def sum_values(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of a few numbers over the ranks (losses, stop requests)."""
    if world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather(obj) -> list:
    """Every rank's ``obj``, in rank order (for per-rank RNG states in a checkpoint)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def from_main(obj):
    """Rank 0's ``obj`` on every rank (a decision rank 0 alone can take, e.g. which checkpoint to resume)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait until every rank is here (e.g. until rank 0 has written the stop checkpoint)."""
    if world_size() > 1:
        dist.barrier()


def seed_rank(seed: int) -> None:
    """Different dropout masks on each rank: rank r reseeds torch with (seed, r) after the model is built."""
    if world_size() > 1:
        torch.manual_seed(seed * 1_000_003 + rank())
