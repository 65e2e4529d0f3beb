"""Multi-process pre-finetuning and resuming after a stop signal, with real processes, real gloo and real signals.

Both run the job as the Snakemake rule does: ``python -m prefinetune.launch JOB.json`` for one process, and
``prefinetune.launch.run`` (torchrun, 2 CPU processes, gloo) for two. The model is a tiny RoBERTa built here.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from data_helpers import GENERATED_MAX_LENGTH
from prefinetune import checkpoint, launch
from prefinetune.config import DEFAULT_TRAIN
from workflow_helpers import model_weights, without_dropout

MAX_LENGTH = GENERATED_MAX_LENGTH
ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def inputs(generated):
    """Three generated tasks (2-way, 3-way pair, regression), tokenized for a tiny RoBERTa built on their text."""
    return generated


def write_job(tmp_path, name, inputs, base, settings):
    tasks, tokenized, _ = inputs
    run = tmp_path / name
    launch.write_job(run / "job.json", tasks, tokenized, str(base), settings, str(run / "model"),
                     str(run / "train_log.tsv"), str(run / "checkpoints"))
    return run


def start_one_process(run):
    """``python -m prefinetune.launch JOB.json``: one ordinary process, as the rule runs a one-GPU job."""
    log = open(run / "stderr.log", "a")
    return subprocess.Popen([sys.executable, "-m", "prefinetune.launch", str(run / "job.json")], stdout=log,
                            stderr=log, env={**os.environ, **ENV})


def weights(run) -> dict[str, torch.Tensor]:
    return model_weights(run / "model")


def log_columns(run, drop_seconds=True) -> list[list[str]]:
    rows = [r.split("\t") for r in (run / "train_log.tsv").read_text().splitlines()]
    return [r[:-1] for r in rows] if drop_seconds else rows


def start_two_processes(run):
    """``prefinetune.launch.run`` with 2 processes (torchrun, gloo) in its own process, as the rule calls it."""
    log = open(run / "stderr.log", "a")
    code = "import sys; from prefinetune import launch; sys.exit(launch.run(sys.argv[1], processes=2, threads=2))"
    return subprocess.Popen([sys.executable, "-c", code, str(run / "job.json")], stdout=log, stderr=log,
                            env={**os.environ, **ENV})


def stop_after_first_checkpoint(proc, run, delay=0.0) -> int:
    """Send SIGTERM once the first periodic checkpoint exists (plus ``delay``); returns the update it stopped after."""
    state = run / "checkpoints" / checkpoint.STATE
    while not state.exists():
        assert proc.poll() is None, (run / "stderr.log").read_text()[-3000:]
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == checkpoint.EXIT_INTERRUPTED, (run / "stderr.log").read_text()[-3000:]
    assert not (run / "model").exists() and not (run / "train_log.tsv").exists()
    return torch.load(state, weights_only=False)["step"]


def test_two_processes_give_the_weights_of_one_also_when_stopped_and_resumed(tmp_path, inputs):
    """Same global batch on 1 and on 2 gloo processes -> the same weights, up to float rounding.

    The 2-process run is also stopped by SIGTERM (sent to the launcher, which passes it on through torchrun)
    and resumed. Dropout is off (heads: settings; encoder: config.json) because each rank draws its own
    dropout masks, so with dropout the two runs differ by design. batch_size 9 gives unequal shards (5 and 4
    items), which checks the loss weighting: a plain mean of the two ranks' means would weight the 4 more.
    """
    base = without_dropout(inputs[2], tmp_path / "base")
    settings = {**DEFAULT_TRAIN, "max_steps": 40, "batch_size": 9, "grad_accum": 2, "lr": 1e-3, "warmup_ratio": 0.0,
                "dropout": 0.0, "log_every": 1, "checkpoint_every": 5, "max_length": MAX_LENGTH}
    one, two = write_job(tmp_path, "one", inputs, base, settings), write_job(tmp_path, "two", inputs, base, settings)
    assert start_one_process(one).wait(timeout=300) == 0, (one / "stderr.log").read_text()[-3000:]

    stopped_at = stop_after_first_checkpoint(start_two_processes(two), two)
    assert 5 <= stopped_at < 40
    assert start_two_processes(two).wait(timeout=300) == 0, (two / "stderr.log").read_text()[-3000:]
    assert f"after update {stopped_at} of 40" in (two / "stderr.log").read_text()

    summary_one = json.loads((one / "model" / "prefinetune.json").read_text())
    summary_two = json.loads((two / "model" / "prefinetune.json").read_text())
    assert (summary_one["processes"], summary_two["processes"]) == (1, 2)
    assert summary_two["resumed_after"] == stopped_at
    initial = load_file(str(base / "model.safetensors"))
    w1, w2 = weights(one), weights(two)
    assert w1.keys() == w2.keys()
    moved = max((w1[k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1e-2  # 40 updates at lr 1e-3 moved the weights far beyond the tolerance below
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")
    losses_one = [float(r[1]) for r in log_columns(one)[1:]]
    losses_two = [float(r[1]) for r in log_columns(two)[1:]]
    assert losses_two == pytest.approx(losses_one, abs=1e-5)  # the logged loss is the global batch's mean
    assert [r[3] for r in log_columns(one)] == [r[3] for r in log_columns(two)]  # tasks per update: the same batches


def test_stopped_run_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, inputs):
    """SIGTERM at a random moment after the first checkpoint; the rerun must end bit-identical (CPU).

    Dropout stays on, so the RNG states must be restored exactly too.
    """
    settings = {**DEFAULT_TRAIN, "max_steps": 120, "batch_size": 8, "lr": 1e-3, "dropout": 0.1, "log_every": 10,
                "checkpoint_every": 7, "max_length": MAX_LENGTH}
    base = inputs[2]
    full, stopped = write_job(tmp_path, "full", inputs, base, settings), write_job(tmp_path, "stopped", inputs, base, settings)
    assert start_one_process(full).wait(timeout=300) == 0, (full / "stderr.log").read_text()[-3000:]

    delay = random.uniform(0.0, 0.5)
    stopped_at = stop_after_first_checkpoint(start_one_process(stopped), stopped, delay)
    assert 7 <= stopped_at < settings["max_steps"], f"signal {delay:.2f} s after the first checkpoint"
    assert f"saved a checkpoint after update {stopped_at} of 120" in (stopped / "stderr.log").read_text()

    assert start_one_process(stopped).wait(timeout=300) == 0, (stopped / "stderr.log").read_text()[-3000:]
    assert f"resuming from {stopped / 'checkpoints'} after update {stopped_at} of 120" in (stopped / "stderr.log").read_text()
    w_full, w_resumed = weights(full), weights(stopped)
    assert w_full.keys() == w_resumed.keys()
    assert all(torch.equal(w_full[k], w_resumed[k]) for k in w_full), f"stopped after update {stopped_at}"
    assert log_columns(stopped) == log_columns(full)
    s_full = json.loads((full / "model" / "prefinetune.json").read_text())
    s_resumed = json.loads((stopped / "model" / "prefinetune.json").read_text())
    assert s_resumed["final_loss"] == s_full["final_loss"]
    assert (s_full["resumed_after"], s_resumed["resumed_after"]) == (0, stopped_at)
    assert not (stopped / "checkpoints").exists() and not (full / "checkpoints").exists()  # removed once the model is written


FINETUNE = """
import json, sys
from prefinetune.stages import finetune
from prefinetune.families import load_registry
run, root, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
target = load_registry(root + "/tasks.yaml")["score"]
finetune(target, root + "/tok/score", root + "/model", settings, 1, run + "/metrics.json", run + "/train_log.tsv",
         {"k": 0}, checkpoint_dir=run + "/checkpoints")
"""


def start_finetuning(run, inputs, settings):
    """``stages.finetune`` in a process of its own, as the rule's script runs it."""
    run.mkdir(exist_ok=True)
    log = open(run / "stderr.log", "a")
    root = str(inputs[2].parent)
    return subprocess.Popen([sys.executable, "-c", FINETUNE, str(run), root, json.dumps(settings)], stdout=log,
                            stderr=log, env={**os.environ, **ENV})


def test_stopped_fine_tuning_resumes_to_the_metrics_of_an_uninterrupted_run(tmp_path, inputs):
    """Fine-tuning checkpoints as pre-finetuning does: SIGTERM at a random moment after the first checkpoint,
    the rerun resumes and ends bit-identical (CPU): the same loss at every update and the same Pearson and
    Spearman on the validation split (a regression target: any weight difference shows in them)."""
    settings = {**DEFAULT_TRAIN, "epochs": 16, "batch_size": 8, "lr": 1e-3, "dropout": 0.1, "log_every": 1,
                "checkpoint_every": 7}
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    assert start_finetuning(full, inputs, settings).wait(timeout=300) == 0, (full / "stderr.log").read_text()[-3000:]

    delay = random.uniform(0.0, 0.3)
    proc = start_finetuning(stopped, inputs, settings)
    state = stopped / "checkpoints" / checkpoint.STATE
    while not state.exists():
        assert proc.poll() is None, (stopped / "stderr.log").read_text()[-3000:]
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == checkpoint.EXIT_INTERRUPTED, (stopped / "stderr.log").read_text()[-3000:]
    assert not (stopped / "metrics.json").exists() and not (stopped / "train_log.tsv").exists()
    stopped_at = torch.load(state, weights_only=False)["step"]
    assert 7 <= stopped_at < 120, f"signal {delay:.2f} s after the first checkpoint"

    assert start_finetuning(stopped, inputs, settings).wait(timeout=300) == 0, (stopped / "stderr.log").read_text()[-3000:]
    assert f"after update {stopped_at} of 120" in (stopped / "stderr.log").read_text()
    m_full, m_resumed = (json.loads((run / "metrics.json").read_text()) for run in (full, stopped))
    assert m_full["steps"] == 120 and m_resumed == m_full
    assert log_columns(stopped) == log_columns(full) and len(log_columns(full)) == 121
    assert not (stopped / "checkpoints").exists() and not (full / "checkpoints").exists()  # removed with the metrics


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    settings = {**DEFAULT_TRAIN, "lr": 1e-3}
    stamp = checkpoint.fingerprint(settings, 10, {"a": 5}, 1)
    checkpoint.save(tmp_path, stamp, [checkpoint.rng_state()], step=3)
    assert checkpoint.load(tmp_path, stamp)["step"] == 3
    assert checkpoint.load(tmp_path, checkpoint.fingerprint({**settings, "lr": 2e-3}, 10, {"a": 5}, 1)) is None
    assert checkpoint.load(tmp_path, checkpoint.fingerprint(settings, 10, {"a": 5}, 2)) is None  # other process count
    # how often checkpoints are written or the log is, or the evaluation batch, do not change the run: they do
    # not invalidate one
    for option in ({"checkpoint_every": 3}, {"log_every": 7}, {"eval_batch_size": 5}):
        assert checkpoint.load(tmp_path, checkpoint.fingerprint({**settings, **option}, 10, {"a": 5}, 1))


def test_several_nodes_need_a_slurm_job(tmp_path, monkeypatch):
    """Outside a Slurm job there is no allocation to start the other nodes' processes in: one clear error."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(RuntimeError, match=r"resources\.prefinetune\.nodes.*--profile slurm"):
        launch.run(tmp_path / "job.json", processes=1, nodes=2)


@pytest.mark.parametrize("gres, gpus", [("gpu:4", 4), ("gpu:a100:4", 4), ("gpu", 1), ("", 0), ("tmpdisk:10,gpu:2", 2)])
def test_gpus_per_node_of_a_gres_request(gres, gpus):
    assert launch.gres_gpus(gres) == gpus
