"""Device check: the same multi-family training on CPU and on the GPU must give the same weights, and a GPU
run stopped by SIGTERM must resume to the weights of an uninterrupted one.

Builds tasks of each family from the generator (classification, regression, multiple choice, span; with
``--arch bart`` summarization too), a small RoBERTa or BART, and trains it for a few updates in heterogeneous
batches from the same initial weights: once with
CUDA hidden (CPU), once on the GPU (precision fp32 with TF32 off, dropout 0), and once on the GPU with
checkpoints, stopped by SIGTERM after its first checkpoint and run again. Prints the largest weight
differences and the final losses. Exits non-zero when the runs disagree.
Run:  python bench/gpu_check.py [--steps 20] [--data DIR] [--arch roberta|bart]   (default: both, one after the other)
      python bench/gpu_check.py --prepare DIR   # only build the data and model (e.g. on another machine)
      python bench/gpu_check.py --smoke         # CI: 8 updates; without a GPU: 2 on the CPU, then "skipped: no GPU"
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def tasks_and_data(workdir: Path, arch: str):
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
    if arch == "bart":  # the generation family trains BART's own decoder and LM head, in the same batches
        tasks.append(Task("sum", "summarization", ("document",), "summary", 0, "rougeL",
                          {"generator": {"seed": 5, **gen}}, max_target_length=48))
    if not (workdir / "model").exists():
        for t in tasks:
            download(t, workdir / "raw" / t.name)
        fetch({"name": "small", "build": {"architecture": arch, "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                                          "intermediate_size": 1024, "vocab_size": 1000, "seed": 0}},
              workdir / "model", texts=texts_of([workdir / "raw" / t.name for t in tasks]))
        for t in tasks:
            tokenize(t, workdir / "raw" / t.name, workdir / "model", workdir / "tok" / t.name, 96, doc_stride=32)
    return tasks, {t.name: load_tokenized(workdir / "tok" / t.name, "train") for t in tasks}


def train_once(workdir: Path, arch: str, steps: int, out: Path, checkpoint_dir: Path | None = None) -> None:
    """One training run on whatever device ``pick_device`` finds; saves the final weights."""
    import torch

    from prefinetune.config import DEFAULT_TRAIN
    from prefinetune.heads import MultiTaskModel
    from prefinetune.training import load_encoder, pick_device, train

    tasks, data = tasks_and_data(workdir, arch)
    torch.manual_seed(0)
    encoder = load_encoder(workdir / "model")
    for m in encoder.modules():  # dropout off: RoBERTa's modules, and BART's rates (floats its layers read)
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        for rate in ("dropout", "activation_dropout", "attention_dropout"):
            if isinstance(getattr(m, rate, None), float):
                setattr(m, rate, 0.0)
    model = MultiTaskModel(encoder, tasks, dropout=0.0)
    settings = {**DEFAULT_TRAIN, "batch_size": 32, "seed": 0, "lr": 1e-4, "weight_decay": 0.01, "warmup_ratio": 0.1,
                "grad_accum": 2, "max_grad_norm": 1.0, "log_every": 1, "checkpoint_every": 5,
                "precision": "fp32", "tf32": False}  # exact fp32, to compare with the CPU
    summary = train(model, data, settings, steps, pad_id=encoder.config.pad_token_id, log_path=out / "log.tsv",
                    checkpoint_dir=checkpoint_dir)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, out / "weights.pt")
    (out / "summary.json").write_text(json.dumps({**summary, "device": str(pick_device())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--data", type=Path, help="prepared data and model (default: a new temporary folder)")
    parser.add_argument("--prepare", type=Path, help="build the data and model into this folder, then stop")
    parser.add_argument("--smoke", action="store_true", help="8 updates; exit 0 with a message when there is no GPU")
    parser.add_argument("--arch", choices=["roberta", "bart"], action="append",
                        help="the model checked (repeatable; default: roberta, then bart)")
    parser.add_argument("--child", nargs="+", metavar="WORKDIR OUT [CHECKPOINTS]", help=argparse.SUPPRESS)
    args = parser.parse_args()
    archs = args.arch or ["roberta", "bart"]
    if args.child:
        train_once(Path(args.child[0]), archs[0], args.steps, Path(args.child[1]), *map(Path, args.child[2:]))
        return
    if args.prepare:
        for arch in archs:
            tasks_and_data(args.prepare / arch, arch)
        return

    from prefinetune.device import gpu_problem_here

    problem = gpu_problem_here(1)  # the driver against torch's CUDA, and a visible device: what a GPU job checks
    if problem is not None:
        if args.smoke:  # still run the training path on the CPU, so that the script keeps up with the API
            for arch in archs:
                work = (args.data or Path(tempfile.mkdtemp(prefix="gpu_check_"))) / arch
                train_once(work, arch, 2, Path(tempfile.mkdtemp(prefix="gpu_check_cpu_")))
            print(f"gpu_check: skipped: no GPU (this check needs CUDA; 2 updates of {' and '.join(archs)} ran on the "
                  f"CPU): {problem}")
            return
        sys.exit(f"gpu_check: {problem}")
    import torch

    print(f"gpu_check: {torch.cuda.get_device_name()} (compute capability "
          f"{'.'.join(map(str, torch.cuda.get_device_capability()))}), torch {torch.__version__}")
    if args.smoke:
        args.steps = 8
    failures = [arch for arch in archs if not check(arch, (args.data or Path(tempfile.mkdtemp(prefix="gpu_check_"))) / arch,
                                                    args.steps)]
    if failures:
        sys.exit(f"FAIL: {', '.join(failures)}")
    print("OK")


def check(arch: str, work: Path, steps: int) -> bool:
    """CPU vs GPU, and a GPU run stopped by SIGTERM and resumed vs an uninterrupted one, for one model."""
    import torch

    print(f"== {arch}")
    tasks_and_data(work, arch)  # prepare data and model once (kept if already there)
    runs = {}
    for name, visible in (("cpu", ""), ("gpu", os.environ.get("CUDA_VISIBLE_DEVICES", "0"))):
        out = Path(tempfile.mkdtemp(prefix=f"gpu_check_{name}_"))
        start = time.time()
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible}
        subprocess.run([sys.executable, __file__, "--arch", arch, "--steps", str(steps), "--child", str(work), str(out)],
                       env=env, check=True)
        runs[name] = {**json.loads((out / "summary.json").read_text()), "wall": round(time.time() - start, 1)}
        runs[name]["weights"] = torch.load(out / "weights.pt")
    worst = max_difference(runs["cpu"]["weights"], runs["gpu"]["weights"])
    for name in runs:
        print(f"{name}: device={runs[name]['device']} final_loss={runs[name]['final_loss']} "
              f"train_seconds={runs[name]['seconds']} wall={runs[name]['wall']}")
    print(f"largest |cpu - gpu| weight difference after {steps} updates: {worst:.2e}")

    # stop a GPU run with SIGTERM after its first checkpoint, run it again, compare with the uninterrupted run
    out, checkpoints = Path(tempfile.mkdtemp(prefix="gpu_check_resume_")), work / "checkpoints"
    cmd = [sys.executable, __file__, "--arch", arch, "--steps", str(steps), "--child", str(work), str(out), str(checkpoints)]
    proc = subprocess.Popen(cmd)
    while not (checkpoints / "state.pt").exists():
        if proc.poll() is not None:
            print(f"FAIL: the run ended ({proc.returncode}) before its first checkpoint")
            return False
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stopped = proc.wait()
    subprocess.run(cmd, check=True)
    resumed = json.loads((out / "summary.json").read_text())
    resume_diff = max_difference(runs["gpu"]["weights"], torch.load(out / "weights.pt"))
    print(f"SIGTERM: exit code {stopped}; rerun resumed after update {resumed['resumed_after']} on {resumed['device']}, "
          f"final_loss={resumed['final_loss']}; largest |uninterrupted - resumed| difference: {resume_diff:.2e}")
    if runs["gpu"]["device"] != "cuda" or worst > 1e-3:
        print("FAIL: the GPU run did not use CUDA or does not match the CPU run")
        return False
    if stopped != 143 or resumed["resumed_after"] == 0 or resume_diff > 1e-4:
        print("FAIL: the stopped GPU run did not resume to the uninterrupted run's weights")
        return False
    return True


def max_difference(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


if __name__ == "__main__":
    main()
