"""A GPU job's check of its device, and the precision `auto` stands for, as functions of what torch and the driver
report (compute capability, CUDA versions, device count); then with the real torch of this machine (a CPU-only
build, no GPU). No GPU has run these: the GPU paths are checked on the values a GPU node would report."""

from __future__ import annotations

import socket

import pytest
import torch

from prefinetune import plan
from prefinetune.device import auto_precision, driver_cuda_version, gpu_problem, require_gpus
from prefinetune.training import resolve_precision


@pytest.mark.parametrize("capability, expected", [(None, "fp32"), ((6, 0), "fp16"), ((7, 0), "fp16"), ((7, 5), "fp16"),
                                                  ((8, 0), "bf16"), ((8, 6), "bf16"), ((9, 0), "bf16")])
def test_auto_is_bf16_from_compute_capability_8_and_fp16_below(capability, expected):
    assert auto_precision(capability) == expected  # (7, 0): V100, (7, 5): T4, (8, 0): A100, (9, 0): H100


def test_auto_resolves_to_fp32_on_the_cpu_and_a_given_precision_stays():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert [resolve_precision(p, cpu) for p in ("bf16", "fp16", "fp32")] == ["bf16", "fp16", "fp32"]


GOOD = dict(torch_version="2.13.0+cu128", build_cuda="12.8", driver=(12, 4), devices=1, host="gpu07", visible="0")


def test_a_job_with_its_gpus_passes_and_a_job_asking_none_is_not_checked():
    assert gpu_problem(1, **GOOD) is None
    assert gpu_problem(4, **{**GOOD, "devices": 4}) is None
    assert gpu_problem(1, **{**GOOD, "driver": (12, 2)}) is None  # minor version compatibility: 12.2 runs 12.8
    assert gpu_problem(0, **{**GOOD, "build_cuda": None, "devices": 0, "driver": None}) is None


@pytest.mark.parametrize("change, says", [
    ({"build_cuda": None, "torch_version": "2.13.0+cpu", "devices": 0}, "torch is a CPU-only build"),
    ({"driver": (11, 8), "devices": 0}, "the NVIDIA driver is older than torch's CUDA"),
    ({"devices": 0, "visible": ""}, "sees 0 CUDA devices"),
    ({"devices": 0, "driver": None, "visible": None}, "sees 0 CUDA devices"),
])
def test_a_job_without_a_usable_gpu_gets_one_line_naming_host_devices_and_cuda(change, says):
    line = gpu_problem(1, **{**GOOD, **change})
    facts = {**GOOD, **change}
    assert says in line and "\n" not in line
    assert line.startswith("the job asks for 1 GPU but") and "on gpu07 (" in line
    assert f"CUDA_VISIBLE_DEVICES {'unset' if facts['visible'] is None else repr(facts['visible'])}" in line
    assert f"torch {facts['torch_version']} built for CUDA {facts['build_cuda'] or 'none'}," in line
    driver = facts["driver"]
    assert f"driver supports CUDA {'.'.join(map(str, driver)) if driver else 'none: no NVIDIA driver found'}" in line


def test_fewer_devices_than_asked_is_refused():
    assert "asks for 4 GPUs but sees 2 CUDA devices" in gpu_problem(4, **{**GOOD, "devices": 2})


@pytest.mark.skipif(torch.version.cuda is not None, reason="checks this machine's CPU-only torch")
def test_on_this_cpu_only_machine_a_gpu_job_stops_unless_allowed(monkeypatch, capsys):
    """The real torch and driver lookup: no driver, a CPU-only build. A job asking for a GPU stops with SystemExit
    and its one line (also printed, for the job's log); allow_cpu lets it go on, saying why."""
    assert driver_cuda_version() is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(SystemExit) as stopped:
        require_gpus(1, allow_cpu=False)
    line = str(stopped.value)
    assert line.startswith("Error: the job asks for 1 GPU but torch is a CPU-only build")
    assert f"on {socket.gethostname()} (CUDA_VISIBLE_DEVICES '3', torch {torch.__version__} built for CUDA none" in line
    assert line.endswith("allow_cpu: true in the config trains on the CPU instead")
    assert capsys.readouterr().err.strip() == line
    require_gpus(1, allow_cpu=True)
    assert capsys.readouterr().err.startswith("allow_cpu: training where it can: the job asks for 1 GPU")
    require_gpus(0, allow_cpu=False)  # asks for none: nothing to check, nothing said
    assert capsys.readouterr().err == ""


def test_the_plan_prices_each_gpu_at_the_precision_its_jobs_train_in():
    """plan.precision auto: precision auto is bf16 on an A100 and fp16 on a V100 (which has no bf16 peak); fp32 with
    tf32 on runs on TF32 tensor cores where the GPU has them; a plan.precision given names the peak for every job."""
    base = {"tokens_per_s": None, "mfu": 0.5, "precision": "auto"}
    auto, fp32 = {"precision": "auto"}, {"precision": "fp32", "tf32": True}
    assert plan.priced_precision({**base, "gpu": "a100"}, auto) == "bf16"
    assert plan.priced_precision({**base, "gpu": "v100"}, auto) == "fp16"
    assert plan.priced_precision({**base, "gpu": "t4"}, auto) == "fp16"
    assert plan.priced_precision({**base, "gpu": "a100"}, fp32) == "tf32"
    assert plan.priced_precision({**base, "gpu": "v100"}, fp32) == "fp32"
    assert plan.priced_precision({**base, "gpu": "a100"}, {**fp32, "tf32": False}) == "fp32"
    assert plan.priced_precision({**base, "gpu": "v100", "precision": "fp32"}, auto) == "fp32"
    rate, text = plan.tokens_per_second({**base, "gpu": "v100"}, 10**8, auto)
    assert rate == pytest.approx(0.5 * 125e12 / 6e8) and "v100 fp16 peak 125" in text
    assert "bf16" not in plan.PEAK_TFLOPS["v100"] and "bf16" not in plan.PEAK_TFLOPS["t4"]
    with pytest.raises(ValueError, match="no peak known for v100 bf16"):
        plan.tokens_per_second({**base, "gpu": "v100"}, 10**8, {"precision": "bf16"})
    assert set(plan.CAPABILITY) == set(plan.PEAK_TFLOPS)
    for gpu, peaks in plan.PEAK_TFLOPS.items():  # every GPU has a peak for what auto trains it in
        assert auto_precision(plan.CAPABILITY[gpu]) in peaks, gpu
