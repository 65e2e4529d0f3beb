"""Benchmark: dynamic padding (pad to the longest row of each batch) vs padding every row to max_length.

Prints seconds per training step for both on the same data, model and batches, and their ratio.
Run:  python bench/padding.py [--steps 40] [--max-length 128]
"""

from __future__ import annotations

import argparse
import time

import torch

from prefinetune.heads import MultiTaskModel
from prefinetune.models import build_tiny_roberta
from prefinetune.sampling import MultiTaskSampler
from prefinetune.synthetic import generate
from prefinetune.tasks import Task
from prefinetune.training import collate, make_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)

    tasks = [Task(f"t{i}", "classification", ("sentence1", "sentence2") if i % 2 else ("sentence",), "label", 2,
                  "accuracy", {"generator": {"seed": i, "pair": bool(i % 2), "train": 512, "validation": 1}})
             for i in range(4)]
    raw = {t.name: generate(t.source["generator"], t.type, t.num_labels)["train"] for t in tasks}
    texts = [s for t in tasks for c in t.text for s in raw[t.name][c]]
    tokenizer, encoder = build_tiny_roberta({"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}, texts)
    data = {t.name: raw[t.name].map(lambda b, t=t: {"input_ids": tokenizer(*[b[c] for c in t.text], truncation=True,
                                                                             max_length=args.max_length)["input_ids"]},
                                    batched=True) for t in tasks}

    def seconds_per_step(pad_to: int | None) -> float:
        torch.manual_seed(0)
        model = MultiTaskModel(encoder, tasks)
        optimizer = make_optimizer(model, 1e-4, 0.0)
        sampler = MultiTaskSampler({n: len(d) for n, d in data.items()}, 32, seed=0)
        start = time.perf_counter()
        for step in range(args.steps):
            inputs = collate(data, sampler.batch(step), tokenizer.pad_token_id, torch.device("cpu"))
            if pad_to is not None:  # the baseline: every row padded to max_length
                extra = pad_to - inputs["input_ids"].shape[1]
                inputs["input_ids"] = torch.nn.functional.pad(inputs["input_ids"], (0, extra), value=tokenizer.pad_token_id)
                inputs["attention_mask"] = torch.nn.functional.pad(inputs["attention_mask"], (0, extra), value=0)
            loss, _ = model(inputs["input_ids"], inputs["attention_mask"], inputs["segments"], inputs["labels"])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return (time.perf_counter() - start) / args.steps

    fixed = seconds_per_step(args.max_length)
    dynamic = seconds_per_step(None)
    print(f"padded to max_length={args.max_length}: {fixed * 1000:.1f} ms/step")
    print(f"dynamic padding:              {dynamic * 1000:.1f} ms/step")
    print(f"speed-up: {fixed / dynamic:.2f}x")


if __name__ == "__main__":
    main()
