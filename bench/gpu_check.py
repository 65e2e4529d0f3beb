"""Device check: the same multi-family training on CPU and on the GPU must give the same weights.

Builds three tasks of each family from the generator (classification, multiple choice, span), a small
RoBERTa, and trains it for a few updates in heterogeneous batches twice from the same initial weights: once
with CUDA hidden (CPU) and once on the GPU (TF32 off, dropout 0). Prints the largest weight difference and the
final losses. Exits non-zero when the two runs disagree.
Run:  python bench/gpu_check.py [--steps 20] [--data DIR]
      python bench/gpu_check.py --prepare DIR   # only build the data and model (e.g. on another machine)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def tasks_and_data(workdir: Path):
    from prefinetune.data import download, load_tokenized, tokenize
    from prefinetune.models import fetch, texts_of
    from prefinetune.tasks import Task

    gen = {"train": 256, "validation": 64}
    tasks = [
        Task("cls", "classification", ("sentence1", "sentence2"), "label", 3, "accuracy",
             {"generator": {"seed": 1, "pair": True, **gen}}),
        Task("reg", "regression", ("sentence",), "label", 1, "pearson", {"generator": {"seed": 2, **gen}}),
        Task("mc", "multiple_choice", ("context",), "label", 5, "accuracy",
             {"generator": {"seed": 3, "choices": [2, 5], **gen}}, choices=("choices",)),
        Task("span", "span", ("question", "context"), "answers", 0, "f1", {"generator": {"seed": 4, **gen}}),
    ]
    if not (workdir / "model").exists():
        for t in tasks:
            download(t, workdir / "raw" / t.name)
        fetch({"name": "small", "build": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                                          "intermediate_size": 1024, "vocab_size": 1000, "seed": 0}},
              workdir / "model", texts=texts_of([workdir / "raw" / t.name for t in tasks]))
        for t in tasks:
            tokenize(t, workdir / "raw" / t.name, workdir / "model", workdir / "tok" / t.name, 96, doc_stride=32)
    return tasks, {t.name: load_tokenized(workdir / "tok" / t.name, "train") for t in tasks}


def train_once(workdir: Path, steps: int, out: Path) -> None:
    """One training run on whatever device ``pick_device`` finds; saves the final weights."""
    import torch

    from prefinetune.heads import MultiTaskModel
    from prefinetune.training import load_encoder, pick_device, train

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tasks, data = tasks_and_data(workdir)
    torch.manual_seed(0)
    encoder = load_encoder(workdir / "model")
    encoder.config.hidden_dropout_prob = encoder.config.attention_probs_dropout_prob = 0.0
    for m in encoder.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    model = MultiTaskModel(encoder, tasks, dropout=0.0)
    settings = {"batch_size": 32, "seed": 0, "temperature": 1.0, "cap": None, "batches": "heterogeneous", "lr": 1e-4,
                "weight_decay": 0.01, "warmup_ratio": 0.1, "grad_accum": 2, "max_grad_norm": 1.0, "log_every": 1}
    summary = train(model, data, settings, steps, pad_id=encoder.config.pad_token_id, log_path=out / "log.tsv")
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, out / "weights.pt")
    (out / "summary.json").write_text(json.dumps({**summary, "device": str(pick_device())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--data", type=Path, help="prepared data and model (default: a new temporary folder)")
    parser.add_argument("--prepare", type=Path, help="build the data and model into this folder, then stop")
    parser.add_argument("--child", nargs=2, metavar=("WORKDIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        train_once(Path(args.child[0]), args.steps, Path(args.child[1]))
        return
    if args.prepare:
        tasks_and_data(args.prepare)
        return

    import torch

    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this check needs a GPU")
    work = args.data or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    tasks_and_data(work)  # prepare data and model once (kept if already there)
    runs = {}
    for name, visible in (("cpu", ""), ("gpu", os.environ.get("CUDA_VISIBLE_DEVICES", "0"))):
        out = Path(tempfile.mkdtemp(prefix=f"gpu_check_{name}_"))
        start = time.time()
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible}
        subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--child", str(work), str(out)],
                       env=env, check=True)
        runs[name] = {**json.loads((out / "summary.json").read_text()), "wall": round(time.time() - start, 1)}
        runs[name]["weights"] = torch.load(out / "weights.pt")
    worst = max((runs["cpu"]["weights"][k] - runs["gpu"]["weights"][k]).abs().max().item() for k in runs["cpu"]["weights"])
    for name in runs:
        print(f"{name}: device={runs[name]['device']} final_loss={runs[name]['final_loss']} "
              f"train_seconds={runs[name]['seconds']} wall={runs[name]['wall']}")
    print(f"largest |cpu - gpu| weight difference after {args.steps} updates: {worst:.2e}")
    if runs["gpu"]["device"] != "cuda" or worst > 1e-3:
        sys.exit("FAIL: the GPU run did not use CUDA or does not match the CPU run")
    print("OK")


if __name__ == "__main__":
    main()
