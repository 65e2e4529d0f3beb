"""What a training job checks before it trains, and the precision ``auto`` stands for on a device.

A job whose resources ask for GPUs must train on them. On a cluster, a job that finds no CUDA device (a wrong
partition, a node whose NVIDIA driver is older than the CUDA that torch was built for, a CPU-only torch) would
otherwise train on the CPU, silently, until its time limit. :func:`require_gpus` stops it at once with one line
that names the host, ``CUDA_VISIBLE_DEVICES``, torch's CUDA version and the driver's. The demos, whose jobs ask
for a GPU so that the Slurm test exercises GPU requests on its dummy GPUs, opt out with ``allow_cpu: true`` (a run
option: the job reads it from the config, so changing it reruns nothing).

``precision: auto`` (:func:`auto_precision`) is bf16 on GPUs of compute capability 8.0 and above (A100, A10, L40S,
H100), fp16 with a loss scaler below it (V100, T4: their bf16 is emulated, far below their fp16 tensor cores), and
fp32 on the CPU. The plan prices each GPU at that precision (``prefinetune.plan``), from the table of GPUs below.

Nothing here imports torch at module level: the plan, which runs in the Snakemake process, imports this module.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys

BF16_CAPABILITY = (8, 0)  # Ampere: the first GPUs with bf16 tensor cores

# Dense peak TFLOP/s per GPU (vendor data sheets, without sparsity), per precision it has: bf16 and fp16 on 16-bit
# tensor cores (a V100 or T4 has no bf16: emulated, far below its fp16); tf32: fp32 matmuls on TF32 tensor cores
# (compute capability 8.0 and above); fp32: plain fp32. CAPABILITY: each GPU's compute capability, which decides what
# precision: auto trains in (auto_precision), so what the plan (prefinetune.plan) prices.
PEAK_TFLOPS = {
    "v100": {"fp16": 125.0, "fp32": 15.7},
    "t4": {"fp16": 65.0, "fp32": 8.1},
    "a10": {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2},
    "a100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "l40s": {"bf16": 362.0, "fp16": 362.0, "tf32": 183.0, "fp32": 91.6},
    "h100": {"bf16": 989.0, "fp16": 989.0, "tf32": 495.0, "fp32": 67.0},  # SXM
    "h200": {"bf16": 989.0, "fp16": 989.0, "tf32": 495.0, "fp32": 67.0},
}
CAPABILITY = {"v100": (7, 0), "t4": (7, 5), "a10": (8, 6), "a100": (8, 0), "l40s": (8, 9), "h100": (9, 0),
              "h200": (9, 0)}


def auto_precision(capability: tuple[int, int] | None) -> str:
    """``precision: auto`` on a GPU of compute ``capability`` (major, minor), or on the CPU (None)."""
    if capability is None:
        return "fp32"
    return "bf16" if tuple(capability) >= BF16_CAPABILITY else "fp16"


def driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA version the node's NVIDIA driver supports (``cuDriverGetVersion`` of libcuda, what
    ``nvidia-smi`` shows as "CUDA Version"), or None where no driver is installed."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int()
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return version.value // 1000, version.value % 1000 // 10


def _version(text: str | None) -> tuple[int, int] | None:
    return None if not text else tuple(int(part) for part in text.split(".")[:2])


def gpu_problem(asked: int, torch_version: str, build_cuda: str | None, driver: tuple[int, int] | None,
                devices: int, host: str, visible: str | None) -> str | None:
    """Why a job that asks for ``asked`` GPUs cannot train on them, in one line; None where it can (or asks for
    none). From what torch and the driver report: torch's version and the CUDA it was built for (None: a CPU-only
    build), the CUDA version the driver supports (None: no driver), and the CUDA devices torch sees.

    A driver serves every CUDA release of its major version and older ones (CUDA's minor version compatibility),
    so torch built for CUDA 12.8 runs on a driver that supports 12.2, not on one that supports only 11.x."""
    if asked <= 0:
        return None
    shown = "unset" if visible is None else repr(visible)
    where = (f"on {host} (CUDA_VISIBLE_DEVICES {shown}, torch {torch_version} built for CUDA "
             f"{build_cuda or 'none'}, driver supports CUDA "
             f"{'.'.join(map(str, driver)) if driver else 'none: no NVIDIA driver found'})")
    wants = f"the job asks for {asked} GPU{'s' if asked > 1 else ''}"
    build = _version(build_cuda)
    if build is None:
        return f"{wants} but torch is a CPU-only build {where}: install torch built for the nodes' CUDA (docs/cluster.md)"
    if driver is not None and driver[0] < build[0]:
        return (f"{wants} but the NVIDIA driver is older than torch's CUDA {where}: install torch built for CUDA "
                f"{driver[0]}.x or older, or update the driver (docs/cluster.md)")
    if devices < asked:
        return f"{wants} but sees {devices} CUDA device{'s' if devices != 1 else ''} {where}"
    return None


def gpu_problem_here(asked: int) -> str | None:
    """:func:`gpu_problem` on this node, from what its torch and driver report."""
    import torch  # the job's own: the training that follows imports it anyway

    return gpu_problem(asked, torch.__version__, torch.version.cuda, driver_cuda_version(),
                       torch.cuda.device_count() if torch.cuda.is_available() else 0, socket.gethostname(),
                       os.environ.get("CUDA_VISIBLE_DEVICES"))


def require_gpus(asked: int, allow_cpu: bool = False) -> None:
    """Stop a job that asks for ``asked`` GPUs and cannot train on them (see :func:`gpu_problem`) with its one
    line; with ``allow_cpu`` (config ``allow_cpu``), say so and let it train where it can."""
    problem = gpu_problem_here(asked)
    if problem is None:
        return
    if not allow_cpu:
        line = f"Error: {problem}; allow_cpu: true in the config trains on the CPU instead"
        print(line, file=sys.stderr, flush=True)  # the job's log (the job runs inside workflow.logging_to) ...
        raise SystemExit(line)  # ... and Snakemake's console
    print(f"allow_cpu: training where it can: {problem}", file=sys.stderr, flush=True)
