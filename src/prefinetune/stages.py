"""The two training stages as the workflow runs them: pre-finetune a subset, fine-tune a target."""

from __future__ import annotations

import zlib

import numpy as np

from . import checkpoint, distributed
from .batching import TaskArrays, task_arrays
from .config import DEFAULT_TRAIN, SHUFFLED, finetune_steps, prefinetune_steps
from .data import fraction, hold_out, label_map, load_tokenized
from .evaluation import chance_loss, evaluate
from .families import family, head_name
from .heads import MultiTaskModel, saved_heads
from .io import digest, write_json
from .monitor import DEFAULT_REPORT_TO, record_once
from .tasks import Task
from .training import load_encoder, pick_device, resolve_precision, save_model, seed_everything, train, validation_loss

PROBE = 256  # training examples whose loss before and after fine-tuning the failed-run rule compares


def prefinetune(tasks: list[Task], tokenized: dict[str, str], base_model: str, settings: dict, out_dir: str,
                log_tsv: str, checkpoint_dir: str | None = None, live_dir: str | None = None) -> None:
    """Multi-task training of ``base_model`` on ``tasks``; saves encoder, tokenizer and heads to ``out_dir``.

    Run by one process, or by each of torchrun's processes (rank 0 writes). With ``checkpoint_dir`` the
    training resumes from, and saves, checkpoints there; they are deleted once the model is written. The run's
    budget (``settings["budget"]``, see :func:`config.prefinetune_steps`) sets its updates; ``convergence``
    holds a slice of ``eval_examples`` examples out of each task's training split for its validation loss
    (:func:`data.hold_out`): no validation split, on which targets are scored, is read. ``settings["labels"]``
    ``"shuffled"``: the null arm, the same data with its labels destroyed (:func:`null_labels`). ``live_dir``:
    the live record (monitor.py).
    """
    from transformers import AutoTokenizer

    settings = {**DEFAULT_TRAIN, **settings}
    seed_everything(settings["seed"])
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    data = {t.name: load_tokenized(tokenized[t.name], "train") for t in tasks}
    validation = None
    if settings["budget"] == "convergence":
        split = {name: hold_out(ds, settings["eval_examples"], name) for name, ds in data.items()}
        data, validation = ({name: parts[i] for name, parts in split.items()} for i in (0, 1))
    if settings.get("labels") == SHUFFLED:
        data = null_labels(data, tasks, settings["seed"])
        validation = validation and null_labels(validation, tasks, settings["seed"], part=1)
    inputs = {"encoder": digest(base_model), "data": {t.name: digest(tokenized[t.name]) for t in tasks}}
    model = MultiTaskModel(load_encoder(base_model), tasks, settings["dropout"], settings["loss_scaling"],
                           settings["label_smoothing"])
    steps = prefinetune_steps(settings, sum(len(ds) for ds in data.values()))

    def save(summary: dict) -> None:  # after the last update, still under the stop signals (training.train)
        summary.update(tasks=[t.name for t in tasks], settings=settings, inputs=inputs,
                       examples={name: len(ds) for name, ds in data.items()}, label_costs=model.label_costs)
        if distributed.is_main():
            save_model(model, tokenizer, out_dir, summary)

    train(model, data, settings, steps, tokenizer.pad_token_id, log_tsv, desc=f"pre-finetune {len(tasks)} tasks",
          checkpoint_dir=checkpoint_dir, live_dir=live_dir, inputs=inputs, validation=validation, finish=save)
    if distributed.is_main() and checkpoint_dir is not None:
        checkpoint.remove(checkpoint_dir)


def null_labels(data: dict, tasks: list[Task], seed: int, part: int = 0) -> dict:
    """The null arm's data: each task's split (name -> dataset) as the arrays training reads, its labels destroyed
    by its family (``families.base.Data.shuffled_labels``), deterministic in the run's seed and the task's name (so
    a task's labels are shuffled alike at every k of a draw); ``part`` tells the held-out slice from the rest."""
    by_name = {t.name: t for t in tasks}
    return {name: TaskArrays(ds, family(by_name[name]), np.random.default_rng([seed, zlib.crc32(name.encode()), part]))
            for name, ds in data.items()}


def finetune(target: Task, tokenized: str, encoder_dir: str, settings: dict, seed: int, metrics_json: str,
             log_tsv: str, meta: dict, percent: int = 100, fraction_seed: int | None = 0,
             checkpoint_dir: str | None = None, live_dir: str | None = None) -> dict:
    """Fine-tune ``encoder_dir`` on ``target``; evaluate on validation; write metrics.

    The head is new, or with ``settings["carry_heads"]`` the pre-finetuned one where the target was in
    the pre-finetuning subset (its own head, or the shared multiple-choice / span head). ``percent`` < 100
    trains on that share of the training examples, in the order fixed by ``fraction_seed`` (nested across
    percents, see :func:`data.fraction`; unused at 100). The run takes ``epochs`` passes, at most
    ``max_steps`` updates where set. With ``checkpoint_dir`` it resumes from, and saves, checkpoints there, as
    pre-finetuning does; they are deleted once the metrics are written. ``metrics.json`` records the encoder
    that was fine-tuned (its folder and a content hash, which a checkpoint must also match). ``live_dir``: the
    live record (monitor.py), which also gets the validation metrics.
    """
    settings = {**DEFAULT_TRAIN, **settings, "seed": seed}
    seed_everything(seed)
    train_ds = fraction(load_tokenized(tokenized, "train"), percent, fraction_seed)
    encoder = load_encoder(encoder_dir)
    pad_id = encoder.config.pad_token_id  # the data is tokenized already: no need to load the tokenizer
    if pad_id is None:
        raise ValueError(f"{encoder_dir}/config.json has no pad_token_id")
    model = MultiTaskModel(encoder, [target], settings["dropout"], settings["loss_scaling"], settings["label_smoothing"])
    head = head_name(target)
    carried = settings["carry_heads"] and target.name in saved_heads(encoder_dir).get(head, {}).get("tasks", [])
    if carried:
        model.load_heads(encoder_dir, [head])
    steps = finetune_steps(settings, len(train_ds))
    probe_ds = train_ds.select(range(min(PROBE, len(train_ds))))  # what failed_runs.py reads: the loss on it
    probe = task_arrays({target.name: probe_ds}, {target.name: target})  # before and after, and the chance loss
    loss_start = probe_loss(model, probe, pad_id, settings)
    encoder_id = {"path": str(encoder_dir), "digest": digest(encoder_dir)}
    # what the run read: the encoder, the data, and which share of it (its percent and order)
    inputs = {"encoder": encoder_id["digest"], "data": digest(tokenized),
              "share": {"percent": percent, "seed": fraction_seed if percent < 100 else None}}

    def evaluate_and_write(summary: dict) -> dict:  # after the last update, still under the stop signals
        metrics = evaluate(model, target, tokenized, pad_id, settings, summary["precision"], encoder_dir)
        chance = metrics.pop("chance")
        if live_dir is not None and distributed.is_main():
            record_once(live_dir, summary["steps"], {f"validation/{name}": value for name, value in metrics.items()},
                        settings.get("report_to", DEFAULT_REPORT_TO))
        result = {**meta, "target": target.name, "family": target.family, "seed": seed, "percent": percent,
                  "metric": target.metric, "value": metrics[target.metric], "metrics": metrics,
                  "head": "pre-finetuned" if carried else "new" if head in model.heads else "the model's own",
                  "train_examples": len(train_ds), "encoder": encoder_id,
                  "steps": summary["steps"], "precision": summary["precision"], "attention": summary["attention"],
                  "micro_batch_halvings": summary["micro_batch_halvings"],
                  "chance": chance, "loss_start": loss_start,  # what failed_runs.py reads
                  "loss_end": probe_loss(model, probe, pad_id, settings, summary["precision"]),
                  "loss_chance": chance_loss(target, probe_ds)}
        if label_map(tokenized) is not None:  # which raw label each class index stands for
            result["label_map"] = label_map(tokenized)
        write_json(metrics_json, result)
        return result

    result = train(model, {target.name: train_ds}, settings, steps, pad_id, log_tsv, desc=f"fine-tune {target.name}",
                   checkpoint_dir=checkpoint_dir, live_dir=live_dir, inputs=inputs, finish=evaluate_and_write)
    if checkpoint_dir is not None:
        checkpoint.remove(checkpoint_dir)
    return result


def probe_loss(model: MultiTaskModel, probe: dict, pad_id: int, settings: dict, precision: str | None = None) -> float:
    """The model's plain (unscaled) loss, in eval mode, on ``probe`` (``task_arrays`` of the first ``PROBE``
    examples of the target's training data): measured before and after fine-tuning, it says whether training
    moved the model (``failed_runs.py``)."""
    device = pick_device()
    model.to(device)
    precision = precision or resolve_precision(settings["precision"], device)
    scaling, model.loss_scaling = model.loss_scaling, False
    try:
        return round(validation_loss(model, probe, pad_id, settings["eval_batch_size"], device, precision), 6)
    finally:
        model.loss_scaling = scaling
