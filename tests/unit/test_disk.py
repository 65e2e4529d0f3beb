"""The disk bill (prefinetune.disk): rough from the registry until a folder exists, then its files' bytes; and the
checkpoint folders a job holds while it runs, which clean_checkpoints keeps while removing the others."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from prefinetune import disk, plan
from prefinetune.workflow import OWNER, clean_checkpoints, holding

TASKS = {  # registry fields, as the plan rule passes them
    "gen": {"type": "classification", "num_labels": 2, "size": None,
            "source": {"generator": {"train": 100, "validation": 25}}},
    "hubbed": {"type": "classification", "num_labels": 3, "size": {"train": 1000, "validation": 500, "tokens": 20},
               "source": {"hub": "x/y"}},
}
PLAN = {"tokens_per_s": None, "gpu": "a100", "precision": "auto", "mfu": 0.3, "model_params": 10**6}


def jobs(pre: int, fine: int) -> list[dict]:
    job = {"gpus": 1, "settings": {}, "percent": 100, "runtime": "1h", "tasks": ["gen"]}
    return [{**job, "rule": "prefinetune"}] * pre + [{**job, "rule": "finetune"}] * fine


def test_rough_before_anything_exists_then_exact_from_the_folders(tmp_path):
    folders = {"datasets": {t: str(tmp_path / "raw" / t) for t in TASKS},
               "tokenized": {"m": {t: str(tmp_path / "tok" / t) for t in TASKS}}, "models": {"m": str(tmp_path / "m")}}
    pricer = plan.Pricer(TASKS, folders["tokenized"], folders["models"], PLAN, max_length=64, doc_stride=16)
    places = {"checkpoints": "/scratch/ckpt", "hf_cache": "~/.cache/huggingface (HF_HOME)"}

    def bill(jobs_at_once):
        rows = disk.disk_rows(jobs(3, 10), pricer, folders["datasets"], {"m": "hub"}, jobs_at_once, places)
        return {r["part"]: r for r in rows}

    rough = bill(jobs_at_once=4)
    assert {r["basis"] for r in rough.values()} == {"rough"}
    text = 100 * 64 * 1.25 + 1000 * 20 * 1.5  # a generated task's rows at max_length; both splits
    assert rough["downloads"]["bytes"] == pytest.approx(text * disk.BYTES_PER_TEXT_TOKEN + 4 * 10**6, abs=1)
    assert rough["downloads: Hugging Face cache"]["count"] == 2  # the hub's dataset and the hub's model
    tokenized = (4 * 100 * 64 + disk.ROW_BYTES * 100) * 1.25 + (4 * 1000 * 20 + disk.ROW_BYTES * 1000) * 1.5
    assert rough["tokenized data"]["bytes"] == pytest.approx(tokenized, abs=1)
    assert rough["pre-finetuned models"] == {**rough["pre-finetuned models"], "count": 3, "bytes": 3 * 4 * 10**6}
    assert rough["checkpoints at peak"]["count"] == 4  # plan.jobs_at_once
    assert rough["checkpoints at peak"]["bytes"] == 4 * 2 * 12 * 10**6 and rough["checkpoints at peak"]["where"] == "/scratch/ckpt"
    assert bill(jobs_at_once=None)["checkpoints at peak"]["count"] == 13  # not set: every training job at once
    assert rough["total"]["bytes"] == sum(r["bytes"] for p, r in rough.items() if p != "total")

    for path, size in [(tmp_path / "raw/gen/train/data.arrow", 1000), (tmp_path / "tok/gen/train/data.arrow", 300),
                       (tmp_path / "m/tokenizer.json", 700)]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    save_file({"w": np.zeros((1000, 2000), np.float32)}, str(tmp_path / "m/model.safetensors"))  # 2M parameters
    partly = bill(jobs_at_once=4)
    model = disk.folder_bytes(tmp_path / "m")
    assert model == 700 + (tmp_path / "m/model.safetensors").stat().st_size > 8 * 10**6
    assert partly["downloads"]["basis"] == "mixed" and partly["pre-finetuned models"]["bytes"] == 3 * model
    assert partly["tokenized data"]["bytes"] == pytest.approx(300 + (4 * 1000 * 20 + disk.ROW_BYTES * 1000) * 1.5, abs=1)
    assert partly["checkpoints at peak"] == {**partly["checkpoints at peak"], "bytes": 4 * 2 * 12 * 2 * 10**6,
                                             "basis": "exact"}  # the parameters counted from the model
    lines = disk.disk_lines(list(partly.values()), 4)
    assert lines[0].startswith("Disk") and any("checkpoints at peak" in line and "/scratch/ckpt" in line for line in lines)


def test_a_job_holds_its_checkpoint_folder_and_the_others_are_removed(tmp_path, capsys):
    root = tmp_path / "checkpoints"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = {"host": socket.gethostname(), "pid": int(finished.stdout), "slurm_job": None}
    for name, owner in {"stopped": None, "killed": dead, "elsewhere": {**dead, "host": "not-" + socket.gethostname()}}.items():
        (root / "results" / name).mkdir(parents=True)
        (root / "results" / name / "state.pt").write_bytes(b"state")
        if owner:
            (root / "results" / name / OWNER).write_text(json.dumps(owner))
    with holding(root / "results" / "running"):
        owner = json.loads((root / "results" / "running" / OWNER).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        removed, kept = clean_checkpoints(root)
        assert sorted(p.name for p in removed) == ["killed", "stopped"]  # no owner, or its process is gone
        assert {p.name: why for p, why in kept} == {
            "elsewhere": f"process {dead['pid']} on not-{socket.gethostname()} cannot be checked from here",
            "running": f"process {os.getpid()} on {socket.gethostname()} is running"}
    assert not (root / "results" / "running").exists()  # held, nothing saved: gone with its owner
    with pytest.raises(SystemExit), holding(root / "results" / "saved"):
        (root / "results" / "saved" / "state.pt").write_bytes(b"state")
        raise SystemExit(143)  # stopped after saving a checkpoint: the folder stays, without an owner
    assert [p.name for p in (root / "results" / "saved").iterdir()] == ["state.pt"]
    assert [p.name for p in clean_checkpoints(root)[0]] == ["saved"]
