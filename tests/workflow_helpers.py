"""Running the real Snakemake CLI on this repository's workflow, from tests."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from prefinetune.config import NULL, Experiment

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``snakemake -s <repo>/Snakefile --directory <workdir> ARGS``; never raises on failure."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def stop_at_first_checkpoint(workdir: Path, args, state: Path, job: str, jitter: float, poll: float) -> None:
    """Run Snakemake with ``args``; once the job's checkpoint ``state`` exists (plus a random 0..``jitter`` s),
    send SIGTERM to every process of the run, as Slurm does. Asserts the run failed after saving a checkpoint."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "1", *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    while not state.exists():  # the first periodic checkpoint
        assert proc.poll() is None, "the job ended before its first checkpoint"
        time.sleep(poll)
    time.sleep(random.uniform(0.0, jitter))
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) != 0
    job_log = (workdir / "logs" / f"{job}.log").read_text()
    assert "stop signal (SIGTERM): saved a checkpoint" in job_log, job_log[-2000:]


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as {rule: count} (without 'total')."""
    match = re.search(r"Job stats:\njob\s+count\n[- ]+\n(.*?)\ntotal\s+(\d+)", output, re.S)
    if match is None:
        return {}
    counts = {}
    for line in match.group(1).strip().splitlines():
        rule, count = line.split()
        counts[rule] = int(count)
    return counts


def expected_counts(config: dict) -> dict[str, int]:
    """The jobs a dry run of ``config``'s default target lists, as {rule: count}, counted from the config."""
    exp = Experiment.from_config(config, REPO)
    trained = [k for k in exp.counts if k > 0]
    runs = len(exp.targets) * len(exp.seeds)
    curve_tasks = set(exp.config["pool"]) | set(exp.targets)
    counts = {
        # the curve's tasks: the held-out sample-efficiency targets only when the study is asked for (a built
        # tokenizer is trained on the curve's text only)
        "download_dataset": len(curve_tasks),
        "download_model": 1,
        "tokenize": len(curve_tasks),  # the sample-efficiency targets are tokenized only when asked for
        "subsets": len(exp.draws),
        "prefinetune": len(trained) * len(exp.draws),
        "finetune": len(trained) * len(exp.draws) * runs,
        "aggregate": 1,
        "analyse": 1,  # critical point and per-task transfer
        "plot": 1,
        "plot_transfer": 1,
        "plot_losses": 1,
        "all": 1,
    }
    if 0 in exp.counts:
        counts["finetune_baseline"] = runs
    if exp.null_in_default:  # the null arm's models, their runs, its table and the comparison with the main curve
        null_models = len(exp.models(NULL))
        counts.update(prefinetune=counts["prefinetune"] + null_models, finetune=counts["finetune"] + null_models * runs,
                      aggregate=2, analyse_null=1, plot_null=1)
    if exp.reference_models:  # each downloaded, its targets tokenized with its tokenizer, fine-tuned like k = 0
        counts.update(download_reference=len(exp.reference_models),
                      tokenize_reference=len(exp.reference_models) * len(exp.targets),
                      finetune_reference=len(exp.reference_models) * runs)
    return counts


def make_workdir(tmp: Path, config: dict | None = None, source: Path = REPO / "demo" / "config.yaml") -> Path:
    """A fresh working directory holding a config.yaml (the demo's unless ``config`` is given)."""
    tmp.mkdir(parents=True, exist_ok=True)
    if config is None:
        shutil.copy(source, tmp / "config.yaml")
    else:
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp


def load_config(path: Path = REPO / "demo" / "config.yaml") -> dict:
    return yaml.safe_load(path.read_text())


def without_dropout(model_dir, out_dir):
    """A copy of the model with the encoder's dropout off (config.json), for comparisons across process counts."""
    shutil.copytree(model_dir, out_dir)
    config = json.loads((out_dir / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out_dir / "config.json").write_text(json.dumps(config))
    return out_dir


def model_weights(model_dir: Path) -> dict:
    """Encoder and heads of a saved model (heads prefixed ``heads.``), as tensors by name."""
    from safetensors.torch import load_file

    from prefinetune.heads import HEADS_WEIGHTS

    return {**load_file(str(model_dir / "model.safetensors")),
            **{f"heads.{k}": v for k, v in load_file(str(model_dir / HEADS_WEIGHTS)).items()}}
