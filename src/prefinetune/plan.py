"""The bill before launch: examples, tokens and GPU-hours of every training job of the DAG, against its runtime.

Run as ``snakemake --cores 1 plan`` (rules/plan.smk). :func:`training_jobs` lists the jobs from the experiment's values
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
- What a job asks Slurm for (:func:`asked_minutes`): its estimate x ``plan.runtime_safety``, plus the 5-minute
  warning, at least ``plan.runtime_floor``, at most its rule's ``resources.<rule>.runtime``. The rules of
  :data:`ARRAY_RULES`, which the Slurm profile submits as job arrays, ask for one runtime per rule: an array has
  one time limit for all its tasks (the executor plugin takes its first task's), so each of their jobs asks for
  what the rule's longest job needs. :class:`Requests` gives the rules these values while the DAG is built
  (rules/common.smk), from the same estimate as the bill.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import (DEFAULT_PLAN, DEFAULT_TRAIN, MAIN, NULL, WARNING_MINUTES, Experiment, duration_minutes,
                     finetune_steps, prefinetune_steps, reference_name)
from .device import CAPABILITY, PEAK_TFLOPS, auto_precision
from .io import write_text
from .sampling import mixing_probabilities
from .tasks import ConfigError

# The rules slurm/config.yaml submits as job arrays (slurm-array-jobs; a test checks that the two agree). Every job
# of one of them asks for the same runtime, what the rule's longest job needs (see add_requests and Requests).
ARRAY_RULES = ("finetune", "finetune_baseline", "finetune_fraction", "finetune_fraction_baseline",
               "finetune_reference")


@dataclass(frozen=True)
class TaskSize:
    items: int  # training rows the sampler counts: examples; span: passage windows
    tokens: float  # real tokens of all those items (every choice of a multiple-choice example)
    exact: bool  # counted from the tokenized data, or rough from the registry


def training_jobs(exp: Experiment) -> list[dict]:
    """Every training job of the curve, the null arm, the ablations and the sample-efficiency study, once each, as
    the plan prices it: its rule, part, values (variant, k, draw; fine-tuning also target, seed, percent), tasks,
    settings, runtime and GPUs."""
    res = exp.config["resources"]
    pre, fine = res["prefinetune"], res["finetune"]
    jobs = []
    variants = [*exp.variants, *([NULL] if exp.null_counts else [])]
    for variant in variants:
        for k, draw in exp.models(variant):
            jobs.append({"rule": "prefinetune", "part": _part(variant), "label": f"k={k}",
                         "variant": variant, "k": k, "draw": draw, "tasks": exp.subset(k, draw),
                         "settings": exp.prefinetune_settings(variant), "percent": 100, "runtime": pre["runtime"],
                         "gpus": max(1, pre["gpus"]) * pre["nodes"]})
    runs = [*(r for v in variants for r in exp.curve_runs(v)), *exp.efficiency_runs()]
    for run in dict.fromkeys(runs):  # the k = 0 baseline and the 100 % runs of main targets are shared: once each
        study = run.percent is not None
        jobs.append({"rule": ("finetune_fraction" if study else "finetune") + ("_baseline" if run.k == 0 else ""),
                     "part": "sample_efficiency" if study else _part(run.variant),
                     "label": run.target, **asdict(run), "percent": run.percent or 100, "tasks": [run.target],
                     "settings": exp.finetune_settings(run.target), "runtime": fine["runtime"],
                     "gpus": max(1, fine["gpus"])})
    for run in exp.reference_runs():  # a published checkpoint, fine-tuned like k = 0, priced on its own model
        jobs.append({"rule": "finetune_reference", "part": "reference", "label": run.target, **asdict(run),
                     "model": reference_name(run.variant), "percent": 100, "tasks": [run.target],
                     "settings": exp.finetune_settings(run.target), "runtime": fine["runtime"],
                     "gpus": max(1, fine["gpus"])})
    return jobs


def _part(variant: str) -> str:
    """The part of the bill a curve's jobs belong to: curve (the main one), null_arm or ablations."""
    return {MAIN: "curve", NULL: NULL}.get(variant, "ablations")


def write_bill(jobs: list[dict], pricer: "Pricer", summary_path: str, jobs_path: str) -> str:
    """Price ``jobs`` (with their ``output``), write the summary and the per-job table, return the printed bill.
    Task sizes are exact where a model's tokenized data exists, else rough from the registry; a model's
    parameters come from its folder once it exists, else from ``plan.model_params`` (see :class:`Pricer`)."""
    main_jobs = [j for j in jobs if not j.get("model")]
    rate = pricer.rate(None, main_jobs[0]["settings"] if main_jobs else None)[0]
    if rate is None:
        raise ConfigError(f"plan.model_params: needed until the model is in {pricer.model_dirs[pricer.main]} (run the "
                          "download_model rule, or give the model's parameter count)")
    bases = dict.fromkeys(pricer.rate(j.get("model"), j["settings"])[1] for j in jobs)  # one per model and precision
    rows = pricer.estimate(jobs)
    summary = summarize(rows)
    write_text(summary_path, tsv(summary))
    write_text(jobs_path, tsv(rows))
    return (bill(summary, over_runtime(rows), "; ".join(bases), pricer.throughput) +
            "\n".join(budget_lines(main_jobs, pricer.sizes(None), rate)) + "\n")


class Pricer:
    """Task sizes and throughput for pricing jobs, read when first asked and kept. A task's size is rough (from the
    registry) until its tokenized data exists, then exact (read once); a model's throughput comes from its
    parameters, counted from its folder once it exists, else ``plan.model_params`` (a reference model not yet
    downloaded is assumed as large as the main model). So the same object prices before and after the data is
    tokenized, and a running Snakemake, which evaluates a job's resources again when the job is ready, asks for
    its runtime from the real token counts.

    ``tasks``: registry fields per task (type, num_labels, size, source); ``tokenized``: {model: {task: folder}};
    ``model_dirs``: {model: folder}, the main model first; ``throughput``: the config's ``plan`` section with its
    defaults. A job names its model in ``model`` (a reference model), or none (the main model)."""

    def __init__(self, tasks: dict, tokenized: dict, model_dirs: dict, throughput: dict, max_length: int,
                 doc_stride: int):
        self.tasks, self.tokenized, self.model_dirs = tasks, tokenized, model_dirs
        self.throughput, self.max_length, self.doc_stride = {**DEFAULT_PLAN, **throughput}, max_length, doc_stride
        self.main = next(iter(model_dirs))
        self._exact: dict[tuple[str, str], TaskSize] = {}
        self._rough: dict[str, TaskSize] = {}
        self._params: dict[str, int] = {}

    def size(self, model: str | None, task: str) -> TaskSize:
        key = (model or self.main, task)
        if key not in self._exact:
            path = self.tokenized[key[0]][task]
            if not Path(path).exists():
                if task not in self._rough:
                    self._rough[task] = rough_size(task, self.tasks[task], self.max_length, self.doc_stride)
                return self._rough[task]
            self._exact[key] = exact_size(path)
        return self._exact[key]

    def sizes(self, model: str | None) -> "_Sizes":
        """The sizes of one model's tasks, as the mapping job_work reads."""
        return _Sizes(self, model)

    def rate(self, model: str | None, settings: dict | None = None) -> tuple[float | None, str]:
        """Real tokens/s per GPU on ``model`` for a job of ``settings`` (its precision) and how it was obtained;
        None where the model's parameters are not known yet (no folder, no plan.model_params)."""
        if self.throughput["tokens_per_s"]:
            return tokens_per_second(self.throughput, 0)
        params = self.parameters(model)
        if params is None:
            return None, "unknown until the model is downloaded (or plan.model_params is given)"
        return tokens_per_second(self.throughput, params, settings)

    def parameters(self, model: str | None) -> int | None:
        """``model``'s parameters: counted from its folder once it exists (kept), else ``plan.model_params``."""
        model = model or self.main
        if model not in self._params:
            folder = self.model_dirs.get(model)
            if folder is None or not Path(folder).exists():
                return self.throughput["model_params"]
            self._params[model] = model_parameters(folder)
        return self._params[model]

    def hours(self, job: dict) -> float | None:
        """Wall hours of one job on its GPUs; None while its model's parameters are unknown."""
        rate = self.rate(job.get("model"), job["settings"])[0]
        if rate is None:
            return None
        return job_work(job, self.sizes(job.get("model")))[1] / rate / 3600 / max(1, job["gpus"])

    def estimate(self, jobs: list[dict]) -> list[dict]:
        """The bill's rows (see :func:`estimate`), each job priced on its own model."""
        rows = []
        for job in jobs:
            sizes = self.sizes(job.get("model"))
            rows.append(row(job, *job_work(job, sizes), self.rate(job.get("model"), job["settings"])[0], sizes))
        return add_requests(rows, self.throughput)


class _Sizes:
    """One model's task sizes, read through its Pricer."""

    def __init__(self, pricer: Pricer, model: str | None):
        self.pricer, self.model = pricer, model

    def __getitem__(self, task: str) -> TaskSize:
        return self.pricer.size(self.model, task)


def asked_minutes(hours: float | None, runtime: str, plan: dict) -> int:
    """What a job asks Slurm for, in whole minutes: its estimated ``hours`` x ``plan["runtime_safety"]`` plus the
    5-minute warning (in which it only saves a checkpoint), at least ``plan["runtime_floor"]``, at most
    ``runtime`` (the config's ``resources.<rule>.runtime``, the most a job may ask for). Without an estimate
    (its model's size not known yet): ``runtime``."""
    limit = math.ceil(duration_minutes(runtime))
    if hours is None:
        return limit
    want = math.ceil(round(hours * 60 * plan["runtime_safety"] + WARNING_MINUTES, 6))
    return min(limit, max(math.ceil(duration_minutes(plan["runtime_floor"])), want))


def minutes_text(minutes: int) -> str:
    """90 -> '1h30m', 15 -> '15m', 1440 -> '24h' (what sbatch -t and Snakemake's runtime read)."""
    hours, rest = divmod(int(minutes), 60)
    return (f"{hours}h{rest:02d}m" if rest else f"{hours}h") if hours else f"{rest}m"


def work_key(job: dict) -> str:
    """What a job's estimate depends on: jobs with the same key cost the same (they differ in seed, draw, output)."""
    return json.dumps([job["rule"], job.get("model"), job["tasks"], job["percent"], job["settings"], job["gpus"],
                       job["runtime"]], sort_keys=True, default=str)


class Requests:
    """The runtime each training job asks Slurm for, computed while the DAG is built (rules/common.smk) from the
    plan's estimate (:class:`Pricer`) with :func:`asked_minutes`; every job of a rule of ARRAY_RULES asks for its
    rule's longest. Jobs are found by their output (``output`` of plan_jobs' rows); the estimate is computed once
    per kind of job (:func:`work_key`): the thousands of fine-tuning jobs of the paper's config are a few dozen
    kinds (target, share, model)."""

    def __init__(self, jobs: list[dict], pricer: Pricer):
        self.pricer = pricer
        self.jobs = {job["output"]: job for job in jobs}
        self.keys = {job["output"]: work_key(job) for job in jobs}
        self.kinds: dict[str, dict[str, dict]] = {}  # rule -> {work_key: a job of that kind}
        for job in jobs:
            self.kinds.setdefault(job["rule"], {}).setdefault(self.keys[job["output"]], job)
        self._asked_of: dict[tuple, int] = {}

    def _asked(self, key: str, job: dict) -> int:
        """What one kind of job asks for, computed again only once its model's rate or a task's size (rough, then
        exact once tokenized) has changed."""
        model = job.get("model")
        state = (key, self.pricer.rate(model, job["settings"])[0],
                 tuple(self.pricer.size(model, t).exact for t in job["tasks"]))
        if state not in self._asked_of:
            self._asked_of[state] = asked_minutes(self.pricer.hours(job), job["runtime"], self.pricer.throughput)
        return self._asked_of[state]

    def minutes(self, output: str, attempt: int = 1) -> int:
        """Minutes for the job that writes ``output``; a retry (``attempt`` > 1) asks for twice the attempt before,
        at most its rule's runtime."""
        job = self.jobs[output]
        if job["rule"] in ARRAY_RULES:
            asked = max(self._asked(key, kind) for key, kind in self.kinds[job["rule"]].items())
        else:
            asked = self._asked(self.keys[output], job)
        return min(math.ceil(duration_minutes(job["runtime"])), asked * 2 ** (max(1, attempt) - 1))


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
    """Rows and real tokens of a tokenized training split (multiple choice: every choice's row), read from its
    Arrow files with pyarrow alone (the Snakemake process that builds the DAG calls this: no ``datasets``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    split = Path(tokenized) / "train"
    files = [split / f["filename"] for f in json.loads((split / "state.json").read_text())["_data_files"]]
    rows = tokens = 0
    for path in files:  # save_to_disk's files: Arrow IPC streams, the split's rows in order, no index mapping
        with pa.memory_map(str(path)) as source:
            ids = pa.ipc.open_stream(source).read_all().column("input_ids")
        rows += len(ids)
        if pa.types.is_list(ids.type.value_type):  # multiple choice: a list of rows per example
            ids = pc.list_flatten(ids)
        tokens += int(pc.sum(pc.list_value_length(ids)).as_py() or 0)
    return TaskSize(rows, tokens, True)


def priced_precision(plan: dict, settings: dict | None = None) -> str:
    """The precision whose peak prices a job on ``plan["gpu"]``: ``plan["precision"]`` where it names one; with
    ``auto`` (the default) the one the job really trains in there, from its own settings: ``precision: auto`` as
    training resolves it on that GPU's compute capability (bf16 from 8.0, fp16 below: a V100 has no bf16), ``fp32``
    on TF32 tensor cores where ``tf32`` is on and the GPU has them, bf16 and fp16 as they are."""
    if plan["precision"] != "auto":
        return plan["precision"]
    s = {**DEFAULT_TRAIN, **(settings or {})}
    gpu = plan["gpu"].lower()
    if s["precision"] == "auto":
        return auto_precision(CAPABILITY.get(gpu, (8, 0)))  # an unknown GPU is refused by tokens_per_second
    if s["precision"] == "fp32" and s["tf32"] and "tf32" in PEAK_TFLOPS.get(gpu, {}):
        return "tf32"
    return s["precision"]


def tokens_per_second(plan: dict, model_params: int, settings: dict | None = None) -> tuple[float, str]:
    """Real tokens per second per GPU for a job of ``settings`` (its precision, see :func:`priced_precision`), and
    how it was obtained (for the bill's header)."""
    if plan["tokens_per_s"]:
        return float(plan["tokens_per_s"]), f"{plan['tokens_per_s']:,.0f} tokens/s per GPU (measured, plan.tokens_per_s)"
    gpu, precision = plan["gpu"].lower(), priced_precision(plan, settings)
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


def estimate(jobs: list[dict], sizes: dict[str, TaskSize], rate: float, plan: dict | None = None) -> list[dict]:
    """One row per job: its work, GPU-hours, wall hours on its GPUs, whether that fits its runtime, and what it asks
    Slurm for (``asks``, see :func:`add_requests`; ``plan``'s safety and floor, else the defaults). All jobs on
    one model (``sizes``, ``rate``); :meth:`Pricer.estimate` prices each job on its own."""
    rows = [row(job, *job_work(job, sizes), rate, sizes) for job in jobs]
    return add_requests(rows, {**DEFAULT_PLAN, **(plan or {})})


def row(job: dict, items: int, tokens: float, rate: float, sizes) -> dict:
    """The bill's row of one job, before its request (:func:`add_requests`)."""
    gpu_hours = tokens / rate / 3600
    hours = gpu_hours / max(1, job["gpus"])
    limit = duration_minutes(job["runtime"]) / 60
    useful = limit - WARNING_MINUTES / 60  # the time of one attempt that trains
    fits = hours <= useful
    return {"part": job["part"], "rule": job["rule"], "job": job["label"], "output": job["output"],
            "examples": items, "tokens": round(tokens), "gpu_hours": gpu_hours, "hours": hours,
            "runtime": job["runtime"], "fits": fits,
            "needs": "" if fits else f"{math.ceil(hours + WARNING_MINUTES / 60)}h",
            "attempts": max(1, math.ceil(hours / useful)),  # resuming each time from the last checkpoint
            "basis": "exact" if all(sizes[t].exact for t in job["tasks"]) else "rough",
            "gpus": max(1, job["gpus"])}


def add_requests(rows: list[dict], plan: dict) -> list[dict]:
    """Each row's request, as Slurm gets it: ``asks`` (e.g. 1h30m) and ``asks_minutes``, from
    :func:`asked_minutes`; the jobs of a rule of ARRAY_RULES all ask for the rule's longest."""
    for r in rows:
        r["asks_minutes"] = asked_minutes(r["hours"], r["runtime"], plan)
    for rule in {r["rule"] for r in rows} & set(ARRAY_RULES):
        longest = max(r["asks_minutes"] for r in rows if r["rule"] == rule)
        for r in rows:
            if r["rule"] == rule:
                r["asks_minutes"] = longest
    for r in rows:
        r["asks"] = minutes_text(r["asks_minutes"])
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
                    "basis": basis.pop() if len(basis) == 1 else "mixed",
                    "asks": _span(r["asks_minutes"] for r in rs),
                    "asked_gpu_hours": sum(r["asks_minutes"] / 60 * r["gpus"] for r in rs)})
    order = {"curve": 0, NULL: 1, "reference": 2, "ablations": 3, "sample_efficiency": 4, "total": 5}
    return sorted(out, key=lambda r: (order.get(r["part"], 9), r["rule"] == "all rules"))


def _span(minutes) -> str:
    values = sorted(set(minutes))
    return minutes_text(values[0]) if len(values) == 1 else f"{minutes_text(values[0])}-{minutes_text(values[-1])}"


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


def bill(summary: list[dict], over: list[str], throughput: str, plan: dict | None = None) -> str:
    """The printed bill: throughput, the summary table with what its jobs ask Slurm for, and the jobs that exceed
    their runtime."""
    head = (f"{'part':<18} {'rule':<27} {'jobs':>5} {'examples':>13} {'tokens':>16} {'GPU-h':>10} {'longest h':>9} "
            f"{'over':>5}  {'asks':<13} {'asked GPU-h':>11}  basis")
    lines = [f"Cost plan. Throughput: {throughput}.", head]
    for r in summary:
        lines.append(f"{r['part']:<18} {r['rule']:<27} {r['jobs']:>5} {r['examples']:>13,} {r['tokens']:>16,} "
                     f"{r['gpu_hours']:>10,.2f} {r['longest_job_hours']:>9.1f} {r['jobs_over_runtime']:>5}  "
                     f"{r['asks']:<13} {r['asked_gpu_hours']:>11,.1f}  {r['basis']}")
    if plan is not None:
        lines.append(f"asks: the time each job asks Slurm for (sbatch -t): its estimate x {plan['runtime_safety']:g} "
                     f"(plan.runtime_safety) + {WARNING_MINUTES} min, at least {plan['runtime_floor']} "
                     "(plan.runtime_floor), at most its rule's runtime; the rules submitted as job arrays ask for "
                     "their longest job's")
    lines.append("Jobs over their runtime (estimate + the 5-minute warning > runtime):" if over else
                 "Every job fits its runtime.")
    lines += [f"  {line}" for line in over]
    return "\n".join(lines) + "\n"


def model_parameters(model_dir: str | Path) -> int:
    """Parameters of the model that download_model saved in ``model_dir`` (an encoder without pooler, or an
    encoder-decoder whose LM head is tied to its embeddings), summed from the tensor shapes in the headers of its
    safetensors files: no weight is read, and neither torch nor transformers is imported (the Snakemake process
    that builds the DAG calls this). Every saved tensor counts, so BART's ``final_logits_bias`` buffer too (one
    number per vocabulary entry, 0.04 % of BART-base)."""
    folder = Path(model_dir)
    index = folder / "model.safetensors.index.json"  # a sharded save: its files, listed by the index
    names = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    total = 0
    for name in names:
        path = folder / name
        if not path.is_file():
            raise ConfigError(f"{path}: no such file; the plan counts the model's parameters from it (a folder that "
                              "download_model saved with save_pretrained has it)")
        with open(path, "rb") as f:  # the format: 8 bytes (little-endian header length), then the JSON header
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        total += sum(math.prod(t["shape"]) for key, t in header.items() if key != "__metadata__")
    return total
