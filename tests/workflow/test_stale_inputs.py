"""No result from stale inputs: a fine-tuning job stopped at its first checkpoint, whose pre-finetuned model is
then rebuilt with another setting, starts over when rerun and says why; its metrics.json names the encoder it
fine-tuned. Also: a second run in the same folder while the first runs is refused (Snakemake's lock). Through the
real workflow, on a small piece of the embedded default."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import yaml

from prefinetune.io import digest
from workflow_helpers import REPO, SNAKEMAKE, load_config, make_workdir, snakemake, stop_at_first_checkpoint

RUN = "results/finetune/k2/draw1/syn_target_pair/seed1"
MODEL = "results/prefinetune/k2/draw1/model"


def small_demo() -> dict:
    """Three pool tasks and one target, one pre-finetuned model (k = 2), one fine-tuning run."""
    config = load_config()
    config.update(pool=["syn_01", "syn_02", "syn_03"], targets=["syn_target_pair"], protocol="held_out",
                  task_counts=[2], draws=1, finetune_seeds=1, sample_efficiency=None, ablations={}, null_arm=None)
    config["prefinetune"].update(max_steps=20, checkpoint_every=1000)
    config["finetune"].update(checkpoint_every=5)
    return config


def test_a_checkpoint_of_another_encoder_is_not_resumed(tmp_path):
    config = small_demo()
    workdir = make_workdir(tmp_path / "wd", config)
    # while the model is built, a second run of the same target in the same folder is refused by Snakemake's lock
    # and writes nothing: the model's job runs once, in the first run. (--rerun-incomplete, as the Slurm profile
    # has it: else the second run may stop earlier, at the first run's incomplete outputs, before the lock)
    first = subprocess.Popen([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2",
                              MODEL], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    locks = workdir / ".snakemake" / "locks"
    while not (locks.is_dir() and any(locks.iterdir())):
        assert first.poll() is None, first.stdout.read()[-3000:]
        time.sleep(0.1)
    second = snakemake(workdir, "--cores", "2", "--rerun-incomplete", MODEL)
    assert second.returncode != 0 and "Directory cannot be locked" in second.stdout + second.stderr
    assert first.wait(timeout=900) == 0, first.stdout.read()[-3000:]
    assert (workdir / "logs" / f"{Path(MODEL).parent}.log").read_text().count("=== attempt started") == 1
    assert (workdir / "logs" / Path(MODEL).parent / "attempts.log").read_text().count("=== attempt started") == 1
    old_model = digest(workdir / MODEL)

    # the fine-tuning job, stopped by SIGTERM once it saved its first checkpoint (after update 5)
    state = workdir / "checkpoints" / RUN / "state.pt"
    stop_at_first_checkpoint(workdir, [f"{RUN}/metrics.json"], state, RUN, jitter=0.2, poll=0.02)
    assert state.exists() and not (workdir / RUN / "metrics.json").exists()

    # the pre-finetuned model is rebuilt with another learning rate, then the job runs again: it starts over
    config["prefinetune"]["lr"] = config["prefinetune"]["lr"] / 2
    changed = workdir / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--cores", "2", "--configfile", str(changed), "--", f"{RUN}/metrics.json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rule prefinetune:" in result.stdout + result.stderr  # the model was rebuilt first
    new_model = digest(workdir / MODEL)
    assert new_model != old_model
    attempt = (workdir / "logs" / f"{RUN}.log").read_text().split("=== attempt started ")[-1]
    assert f"ignoring checkpoint checkpoints/{RUN}/state.pt, starting over: its encoder changed since" in attempt
    assert "resuming from" not in attempt
    metrics = json.loads((workdir / RUN / "metrics.json").read_text())
    assert metrics["encoder"] == {"path": MODEL, "digest": new_model}
    assert not state.parent.exists()

    # and it ends where an uninterrupted run from the rebuilt model ends
    result = snakemake(workdir, "--cores", "2", "--configfile", str(changed), "--forcerun", "finetune", "--",
                       f"{RUN}/metrics.json")
    assert result.returncode == 0, result.stderr[-3000:]
    fresh = json.loads((workdir / RUN / "metrics.json").read_text())
    assert fresh["metrics"] == metrics["metrics"] and fresh["steps"] == metrics["steps"] > 5
