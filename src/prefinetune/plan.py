"""The bill before launch: examples, tokens and GPU-hours of every training job of the DAG, against its runtime.

Run as ``snakemake plan`` (rules/plan.smk). :func:`training_jobs` lists the jobs from the experiment's values
(the same lists the workflow's input functions are built from); the rule adds each job's output path. Per task it counts the real (non-pad) tokens of the tokenized training split where that exists
(``exact``), and otherwise reads the registry's ``size`` (``rough``: examples from the dataset cards, a
guessed mean length per row). A job is exact only if all its tasks are.

- Pre-finetuning draws ``updates x batch_size x grad_accum`` items (examples; span: passage windows) from the
  subset, mixed as the sampler mixes them, so its tokens are the items times the mixture's mean tokens. Its
  updates follow its budget: max_steps, passes over the subset, or at most max_steps until convergence (whose
  validation losses add a third of their tokens). The bill prices the three budgets side by side.
- Fine-tuning takes ``epochs`` passes over the target's items (capped by ``max_steps``), in whole updates.
- GPU-hours are tokens / throughput: a measured ``plan.tokens_per_s`` per GPU (real tokens, as
  bench/throughput.py prints it), or the FLOPs rule ``6 x params x tokens`` at ``plan.mfu`` of the GPU's peak.
  Left out: start-up, evaluation (one forward pass over the validation split), checkpoint writes. A job of
  several GPUs is assumed to run that many times faster.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import DEFAULT_TRAIN, MAIN, Experiment, finetune_steps, prefinetune_steps
from .io import write_text
from .sampling import mixing_probabilities
from .tasks import ConfigError

# Dense peak TFLOP/s per GPU (vendor data sheets, without sparsity). bf16: 16-bit tensor cores (fp16 on V100,
# which has no bf16); tf32: fp32 matmuls on TF32 tensor cores; fp32: plain fp32 (PyTorch's default: TF32 off).
PEAK_TFLOPS = {
    "v100": {"bf16": 125.0, "fp32": 15.7},
    "a10": {"bf16": 125.0, "tf32": 62.5, "fp32": 31.2},
    "a100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "l40s": {"bf16": 362.0, "tf32": 183.0, "fp32": 91.6},
    "h100": {"bf16": 989.0, "tf32": 495.0, "fp32": 67.0},  # SXM
    "h200": {"bf16": 989.0, "tf32": 495.0, "fp32": 67.0},
}
WARNING_MINUTES = 5  # the Slurm profile's --signal=TERM@300: the last 5 minutes of a job only save a checkpoint


@dataclass(frozen=True)
class TaskSize:
    items: int  # training rows the sampler counts: examples; span: passage windows
    tokens: float  # real tokens of all those items (every choice of a multiple-choice example)
    exact: bool  # counted from the tokenized data, or rough from the registry


def training_jobs(exp: Experiment) -> list[dict]:
    """Every training job of the curve, the ablations and the sample-efficiency study, once each, as the plan
    prices it: its rule, part, values (variant, k, draw; fine-tuning also target, seed, percent), tasks,
    settings, runtime and GPUs."""
    res = exp.config["resources"]
    pre, fine = res["prefinetune"], res["finetune"]
    jobs = []
    for variant in exp.variants:
        for k, draw in exp.models():
            jobs.append({"rule": "prefinetune", "part": "curve" if variant == MAIN else "ablations", "label": f"k={k}",
                         "variant": variant, "k": k, "draw": draw, "tasks": exp.subset(k, draw),
                         "settings": exp.prefinetune_settings(variant), "percent": 100, "runtime": pre["runtime"],
                         "gpus": max(1, pre["gpus"]) * pre["nodes"]})
    runs = [*exp.curve_runs(MAIN), *(r for v in exp.variants[1:] for r in exp.curve_runs(v)), *exp.efficiency_runs()]
    for run in dict.fromkeys(runs):  # the k = 0 baseline and the 100 % runs of main targets are shared: once each
        study = run.percent is not None
        jobs.append({"rule": ("finetune_fraction" if study else "finetune") + ("_baseline" if run.k == 0 else ""),
                     "part": "sample_efficiency" if study else "curve" if run.variant == MAIN else "ablations",
                     "label": run.target, **asdict(run), "percent": run.percent or 100, "tasks": [run.target],
                     "settings": exp.finetune_settings(run.target), "runtime": fine["runtime"],
                     "gpus": max(1, fine["gpus"])})
    return jobs


def write_bill(jobs: list[dict], tasks: dict, tokenized: dict[str, str], model_dir: str, throughput: dict,
               max_length: int, doc_stride: int, summary_path: str, jobs_path: str) -> str:
    """Price ``jobs`` (with their ``output``), write the summary and the per-job table, return the printed bill.
    Task sizes are exact where ``tokenized`` data exists, else rough from the registry (``tasks``); the model's
    parameters come from ``model_dir`` once it exists, else from the config (``throughput["model_params"]``)."""
    sizes = {name: exact_size(path) if Path(path).exists() else rough_size(name, tasks[name], max_length, doc_stride)
             for name, path in tokenized.items()}
    params = model_parameters(model_dir) if Path(model_dir).exists() else throughput["model_params"]
    if not params:
        raise ConfigError(f"plan.model_params: needed until the model is in {model_dir} (run the download_model "
                          "rule, or give the model's parameter count)")
    rate, basis = tokens_per_second(throughput, params)
    rows = estimate(jobs, sizes, rate)
    summary = summarize(rows)
    write_text(summary_path, tsv(summary))
    write_text(jobs_path, tsv(rows))
    return bill(summary, over_runtime(rows), basis) + "\n".join(budget_lines(jobs, sizes, rate)) + "\n"


def rough_size(name: str, task: dict, max_length: int, doc_stride: int) -> TaskSize:
    """From the registry's ``size``: train examples and the mean tokens of one row before truncation. A generated
    task without one: its generator's train count, every row at max_length (an upper bound)."""
    size = task.get("size")
    if not size and "generator" in task["source"]:
        size = {"train": task["source"]["generator"]["train"], "tokens": max_length}
    if not size:
        raise ValueError(f"{name}: no size in the registry and no tokenized data: the plan cannot price it "
                         f"(add size: {{train: N, tokens: T}} to its entry, or tokenize it first)")
    n, row = size["train"], size["tokens"]
    if task["type"] == "multiple_choice":  # one row per choice; num_labels is the most choices a row has
        return TaskSize(n, n * task["num_labels"] * min(row, max_length), False)
    if task["type"] == "span":  # a long passage is cut into windows that overlap by doc_stride
        windows = 1 + math.ceil(max(0, row - max_length) / (max_length - doc_stride))
        return TaskSize(n * windows, n * (min(row, max_length) + (windows - 1) * max_length), False)
    return TaskSize(n, n * min(row, max_length), False)


def exact_size(tokenized: str | Path) -> TaskSize:
    """Rows and real tokens of a tokenized training split (multiple choice: every choice's row)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from datasets import load_from_disk

    ds = load_from_disk(str(Path(tokenized) / "train"))
    ids = ds.data.table.column("input_ids")
    if pa.types.is_list(ids.type.value_type):  # multiple choice: a list of rows per example
        ids = pc.list_flatten(ids)
    return TaskSize(len(ds), int(pc.sum(pc.list_value_length(ids)).as_py() or 0), True)


def tokens_per_second(plan: dict, model_params: int) -> tuple[float, str]:
    """Real tokens per second per GPU, and how it was obtained (for the bill's header)."""
    if plan["tokens_per_s"]:
        return float(plan["tokens_per_s"]), f"{plan['tokens_per_s']:,.0f} tokens/s per GPU (measured, plan.tokens_per_s)"
    gpu, precision = plan["gpu"].lower(), plan["precision"]
    if gpu not in PEAK_TFLOPS or precision not in PEAK_TFLOPS[gpu]:
        known = ", ".join(f"{g} ({'/'.join(p)})" for g, p in PEAK_TFLOPS.items())
        raise ValueError(f"plan.gpu/precision: no peak known for {gpu} {precision}; known: {known}; "
                         f"or set plan.tokens_per_s")
    peak = PEAK_TFLOPS[gpu][precision]
    rate = plan["mfu"] * peak * 1e12 / (6 * model_params)
    return rate, (f"{rate:,.0f} tokens/s per GPU (assumed: {gpu} {precision} peak {peak:g} TFLOP/s x MFU {plan['mfu']:g} "
                  f"/ (6 x {model_params:,} parameters); not measured)")


EVAL_COST = 1 / 3  # a forward pass alone: about a third of a training step's FLOPs per token


def job_work(job: dict, sizes: dict[str, TaskSize]) -> tuple[int, float]:
    """Items drawn and real tokens processed by one training job. Pre-finetuning's updates follow its budget
    (``config.prefinetune_steps``; convergence: at most max_steps), and the validation losses of the convergence
    budget add a third of their tokens (forward passes only)."""
    s = {**DEFAULT_TRAIN, **job["settings"]}
    if job["rule"] == "prefinetune":
        subset = {t: sizes[t] for t in job["tasks"]}
        steps = prefinetune_steps(s, sum(z.items for z in subset.values()))
        items = steps * s["batch_size"] * s["grad_accum"]
        p = mixing_probabilities({t: z.items for t, z in subset.items()}, s["temperature"], s["cap"])
        tokens = items * sum(p[t] * z.tokens / z.items for t, z in subset.items())
        if s["budget"] == "convergence":
            held_out = sum(min(s["eval_examples"], z.items) * z.tokens / z.items for z in subset.values())
            tokens += EVAL_COST * (steps // s["eval_every"] + 1) * held_out
        return items, tokens
    size = sizes[job["tasks"][0]]
    examples = max(1, round(size.items * job["percent"] / 100))  # a share keeps whole examples (span: windows)
    items = finetune_steps(s, examples) * s["batch_size"] * s.get("grad_accum", 1)
    return items, items * size.tokens / size.items


def budget_lines(jobs: list[dict], sizes: dict[str, TaskSize], rate: float) -> list[str]:
    """The curve's pre-finetuning priced under each budget (updates, passes, convergence: an upper bound), and
    the passes over its subset that each k makes under the configured one: a fixed number of updates passes a
    small subset many more times than a large one, so that k is confounded with repetition."""
    pre = [j for j in jobs if j["rule"] == "prefinetune" and j["part"] == "curve"]
    if not pre:
        return []
    settings = {**DEFAULT_TRAIN, **pre[0]["settings"]}
    meaning = {"updates": "max_steps updates at every k",
               "passes": f"{settings['passes']:g} pass(es) over each subset (at most max_steps)",
               "convergence": "until the validation loss stops improving (at most max_steps: an upper bound)"}
    lines = ["The curve's pre-finetuning under each budget (prefinetune.budget; * the configured one):"]
    for choice, what in meaning.items():
        hours = sum(job_work({**j, "settings": {**j["settings"], "budget": choice}}, sizes)[1] for j in pre) / rate / 3600
        lines.append(f"  {'*' if choice == settings['budget'] else ' '} {choice:<12} {hours:>10,.2f} GPU-h  {what}")
    passes: dict[str, list[float]] = {}
    for j in pre:
        passes.setdefault(j["label"], []).append(job_work(j, sizes)[0] / sum(sizes[t].items for t in j["tasks"]))
    lines.append(f"  passes over the subset per k ({settings['budget']}): " +
                 ", ".join(f"{label} {sum(v) / len(v):.1f}" for label, v in passes.items()))
    return lines


def runtime_hours(runtime: str) -> float:
    value, unit = int(runtime[:-1]), runtime[-1]
    return value * {"s": 1 / 3600, "m": 1 / 60, "h": 1, "d": 24}[unit]


def estimate(jobs: list[dict], sizes: dict[str, TaskSize], rate: float) -> list[dict]:
    """One row per job: its work, GPU-hours, wall hours on its GPUs, and whether that fits its runtime."""
    rows = []
    for job in jobs:
        items, tokens = job_work(job, sizes)
        gpu_hours = tokens / rate / 3600
        hours = gpu_hours / max(1, job["gpus"])
        limit = runtime_hours(job["runtime"])
        useful = limit - WARNING_MINUTES / 60  # the time of one attempt that trains
        fits = hours <= useful
        rows.append({"part": job["part"], "rule": job["rule"], "job": job["label"], "output": job["output"],
                     "examples": items, "tokens": round(tokens), "gpu_hours": gpu_hours, "hours": hours,
                     "runtime": job["runtime"], "fits": fits,
                     "needs": "" if fits else f"{math.ceil(hours + WARNING_MINUTES / 60)}h",
                     "attempts": max(1, math.ceil(hours / useful)),  # resuming each time from the last checkpoint
                     "basis": "exact" if all(sizes[t].exact for t in job["tasks"]) else "rough"})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per (part, rule), per part and in all: jobs, examples, tokens, GPU-hours, the longest job, jobs too long."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["part"], r["rule"]), []).append(r)
        groups.setdefault((r["part"], "all rules"), []).append(r)
        groups.setdefault(("total", "all rules"), []).append(r)
    out = []
    for (part, rule), rs in groups.items():
        basis = {r["basis"] for r in rs}
        out.append({"part": part, "rule": rule, "jobs": len(rs), "examples": sum(r["examples"] for r in rs),
                    "tokens": sum(r["tokens"] for r in rs), "gpu_hours": sum(r["gpu_hours"] for r in rs),
                    "longest_job_hours": max(r["hours"] for r in rs),
                    "runtime": ",".join(sorted({r["runtime"] for r in rs})),
                    "jobs_over_runtime": sum(not r["fits"] for r in rs),
                    "basis": basis.pop() if len(basis) == 1 else "mixed"})
    order = {"curve": 0, "ablations": 1, "sample_efficiency": 2, "total": 3}
    return sorted(out, key=lambda r: (order.get(r["part"], 9), r["rule"] == "all rules"))


def over_runtime(rows: list[dict]) -> list[str]:
    """The jobs that do not fit their runtime, grouped by rule and job kind, with the runtime they need."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        if not r["fits"]:
            groups.setdefault((r["rule"], r["job"], r["runtime"]), []).append(r)
    lines = []
    for (rule, label, runtime), rs in groups.items():
        longest = max(rs, key=lambda r: r["hours"])
        lines.append(f"{rule} {label}: {len(rs)} job(s) of up to {longest['hours']:.1f} h on their GPUs > runtime "
                     f"{runtime}: needs {longest['needs']}, or {longest['attempts']} attempts that resume "
                     f"(e.g. {longest['output']})")
    return lines


def tsv(rows: list[dict]) -> str:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)

    return "\n".join(["\t".join(rows[0]), *("\t".join(cell(v) for v in r.values()) for r in rows)]) + "\n"


def bill(summary: list[dict], over: list[str], throughput: str) -> str:
    """The printed bill: throughput, the summary table, and the jobs that exceed their runtime."""
    head = f"{'part':<18} {'rule':<27} {'jobs':>5} {'examples':>13} {'tokens':>16} {'GPU-h':>10} {'longest h':>9} {'over':>5}  basis"
    lines = [f"Cost plan. Throughput: {throughput}.", head]
    for r in summary:
        lines.append(f"{r['part']:<18} {r['rule']:<27} {r['jobs']:>5} {r['examples']:>13,} {r['tokens']:>16,} "
                     f"{r['gpu_hours']:>10,.2f} {r['longest_job_hours']:>9.1f} {r['jobs_over_runtime']:>5}  {r['basis']}")
    lines.append("Jobs over their runtime (estimate + the 5-minute warning > runtime):" if over else
                 "Every job fits its runtime.")
    lines += [f"  {line}" for line in over]
    return "\n".join(lines) + "\n"


def model_parameters(model_dir: str | Path) -> int:
    """Parameters of the transformer in ``model_dir`` (built from its config.json on the meta device: no weights
    read): an encoder without pooler, or an encoder-decoder (BART; its LM head is tied to the embeddings)."""
    import torch
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(str(model_dir))
    with torch.device("meta"):
        model = AutoModel.from_config(config, **({} if config.is_encoder_decoder else {"add_pooling_layer": False}))
    return sum(p.numel() for p in model.parameters())
