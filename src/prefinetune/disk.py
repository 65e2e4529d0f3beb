"""The disk bill, beside the GPU bill of ``snakemake --cores 1 plan`` (prefinetune.plan): what the experiment
keeps on disk, where, and how much.

- downloads: every dataset as saved under ``resources/datasets/`` and every model under ``resources/models/``, and
  the Hugging Face cache of what came through ``datasets.load_dataset`` or the hub (``HF_HOME``), assumed as large
  again (not measured: the cache is shared with whatever else uses it);
- tokenized data: ``results/tokenized/<model>/<task>/``;
- pre-finetuned models: one per pre-finetuning job, each as large as the base model's folder;
- checkpoints at peak: one per running training job, its fp32 weights and AdamW's two fp32 moments (12 bytes per
  parameter), twice that while a new one is written beside the last, times the training jobs that run at once
  (``plan.jobs_at_once``; default: every training job, an upper bound);
- the total.

A folder that exists is counted exactly (the sizes of its files); one that does not yet is estimated from the
registry (``rough``): raw text at BYTES_PER_TEXT_TOKEN per token, tokenized rows at 4 bytes per token (int32 ids)
plus ROW_BYTES per row, a model at 4 bytes per parameter. Not counted: the task heads (at most 15M parameters, 12 %
of RoBERTa-base, for a k = 41 model of config.yaml), logs, TensorBoard events and metrics (kilobytes per job);
fine-tuned weights are not kept.
"""

from __future__ import annotations

from pathlib import Path

BYTES_PER_TEXT_TOKEN = 4.5  # UTF-8 English per BPE token (about 4 characters and a space): an assumption
ROW_BYTES = 12  # a tokenized row's Arrow offset (4 bytes) and int64 label (8)
CHECKPOINT_BYTES_PER_PARAMETER = 12  # fp32 weights + AdamW's exp_avg and exp_avg_sq, fp32 each
MODEL_BYTES_PER_PARAMETER = 4  # fp32 safetensors


def folder_bytes(path: str | Path) -> int:
    """The summed size of every file under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _splits(task: dict) -> float:
    """(train + validation) / train rows of a task, from its registry size or generator; 1 where unknown."""
    counts = task.get("size") or task["source"].get("generator") or {}
    train = counts.get("train")
    return (train + counts.get("validation", 0)) / train if train else 1.0


def disk_rows(jobs: list[dict], pricer, datasets: dict[str, str], model_sources: dict[str, str],
              jobs_at_once: int | None, places: dict) -> list[dict]:
    """The disk bill's rows (part, count, bytes, basis, where) for ``jobs`` (the plan's), their ``pricer``'s task sizes
    and models, ``datasets`` ({task: its folder}) and ``model_sources`` ({model: hub, path or build}). ``places``:
    where the checkpoints and the Hugging Face cache go, for the reader."""
    rows = []

    def add(part, count, sizes, where):  # sizes: [(bytes, exact)]
        rows.append({"part": part, "count": count, "bytes": int(sum(b for b, _ in sizes)),
                     "basis": basis({"exact" if e else "rough" for _, e in sizes}), "where": where})

    saved, cached = [], []
    for task, folder in datasets.items():
        fields = pricer.tasks[task]
        if Path(folder).exists():
            size = (folder_bytes(folder), True)
        else:
            size = (pricer.sizes(None)[task].tokens * _splits(fields) * BYTES_PER_TEXT_TOKEN, False)
        saved.append(size)
        if "generator" not in fields["source"]:  # load_dataset keeps its own copy in the cache
            cached.append((size[0], False))
    params = {model: pricer.parameters(model) for model in pricer.model_dirs}
    for model, folder in pricer.model_dirs.items():
        exists = Path(folder).exists()
        size = (folder_bytes(folder) if exists else MODEL_BYTES_PER_PARAMETER * (params[model] or 0), exists)
        saved.append(size)
        if model_sources.get(model) == "hub":
            cached.append((size[0], False))
    add("downloads", len(datasets) + len(pricer.model_dirs), saved, "resources/")
    add("downloads: Hugging Face cache", len(cached), cached, places["hf_cache"])
    tokenized = []
    for model, folders in pricer.tokenized.items():
        for task, folder in folders.items():
            if Path(folder).exists():
                tokenized.append((folder_bytes(folder), True))
            else:
                rough = pricer.sizes(None if model == pricer.main else model)[task]
                tokenized.append(((4 * rough.tokens + ROW_BYTES * rough.items) * _splits(pricer.tasks[task]), False))
    add("tokenized data", len(tokenized), tokenized, "results/tokenized/")
    models = [j for j in jobs if j["rule"] == "prefinetune"]
    base = saved[len(datasets)]  # the main model's folder: a pre-finetuned model is as large
    add("pre-finetuned models", len(models), [base] * len(models), "results/**/prefinetune/")
    per_job = max(2 * CHECKPOINT_BYTES_PER_PARAMETER * (params[j.get("model") or pricer.main] or 0) for j in jobs)
    running = min(jobs_at_once or len(jobs), len(jobs))
    exact = all(Path(pricer.model_dirs[m]).exists() for m in {j.get("model") or pricer.main for j in jobs})
    add("checkpoints at peak", running, [(per_job * running, exact)], places["checkpoints"])
    rows.append({"part": "total", "count": "", "bytes": sum(r["bytes"] for r in rows),
                 "basis": basis({r["basis"] for r in rows}), "where": ""})
    return rows


def basis(kinds: set[str]) -> str:
    """exact (also: nothing to count), rough, or mixed."""
    return "exact" if kinds <= {"exact"} else "rough" if kinds == {"rough"} else "mixed"


def size_text(n: float) -> str:
    """Bytes in MB, GB or TB (powers of 1,000)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 1e6:,.1f} MB"


def disk_lines(rows: list[dict], jobs_at_once: int | None) -> list[str]:
    """The printed disk bill."""
    lines = ["Disk (results/plan_disk.tsv; exact where the folder exists, else rough from the registry):"]
    for r in rows:
        count = f"{r['count']:>6,}" if r["count"] != "" else " " * 6
        lines.append(f"  {r['part']:<30} {count} {size_text(r['bytes']):>12}  {r['basis']:<6} {r['where']}")
    peak = next(r for r in rows if r["part"] == "checkpoints at peak")
    per_job = peak["bytes"] / max(peak["count"], 1)
    lines.append(f"  checkpoints at peak: {size_text(per_job)} per running job (12 bytes per parameter, twice that "
                 f"while one is written) x {peak['count']:,} jobs at once (plan.jobs_at_once"
                 f"{'' if jobs_at_once else ': not set, every training job'})")
    return lines

