"""The two training stages as the workflow runs them: pre-finetune a subset, fine-tune a target."""

from __future__ import annotations

import math

from . import checkpoint, distributed
from .data import load_tokenized
from .evaluation import compute_metrics
from .heads import MultiTaskModel
from .io import write_json
from .tasks import Task
from .training import load_encoder, predict, save_model, seed_everything, train


def prefinetune(tasks: list[Task], tokenized: dict[str, str], base_model: str, settings: dict, out_dir: str,
                log_tsv: str, checkpoint_dir: str | None = None) -> None:
    """Multi-task training of ``base_model`` on ``tasks``; saves encoder, tokenizer and heads to ``out_dir``.

    Run by one process, or by each of torchrun's processes (rank 0 writes). With ``checkpoint_dir`` the
    training resumes from, and saves, checkpoints there; they are deleted once the model is written.
    """
    from transformers import AutoTokenizer

    seed_everything(settings["seed"])
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    data = {t.name: load_tokenized(tokenized[t.name], "train") for t in tasks}
    model = MultiTaskModel(load_encoder(base_model), tasks, settings["dropout"], settings["loss_scaling"])
    summary = train(model, data, settings, settings["max_steps"], tokenizer.pad_token_id, log_tsv,
                    desc=f"pre-finetune {len(tasks)} tasks", checkpoint_dir=checkpoint_dir)
    summary.update(tasks=[t.name for t in tasks], settings=settings,
                   examples={name: len(ds) for name, ds in data.items()})
    if distributed.is_main():
        save_model(model, tokenizer, out_dir, summary)
        if checkpoint_dir is not None:
            checkpoint.remove(checkpoint_dir)


def finetune(target: Task, tokenized: str, encoder_dir: str, settings: dict, seed: int, metrics_json: str,
             log_tsv: str, meta: dict) -> dict:
    """Fine-tune ``encoder_dir`` on ``target`` with a fresh head; evaluate on validation; write metrics."""
    settings = {**settings, "seed": seed}
    seed_everything(seed)
    train_ds = load_tokenized(tokenized, "train")
    encoder = load_encoder(encoder_dir)
    pad_id = encoder.config.pad_token_id  # the data is tokenized already: no need to load the tokenizer
    if pad_id is None:
        raise ValueError(f"{encoder_dir}/config.json has no pad_token_id")
    model = MultiTaskModel(encoder, [target], settings["dropout"], settings["loss_scaling"])
    steps = math.ceil(settings["epochs"] * len(train_ds) / (settings["batch_size"] * settings["grad_accum"]))
    summary = train(model, {target.name: train_ds}, settings, steps, pad_id, log_tsv, desc=f"fine-tune {target.name}")
    outputs, labels = predict(model, load_tokenized(tokenized, "validation"), target, pad_id, settings["eval_batch_size"])
    metrics = compute_metrics(target.type, outputs, labels)
    result = {**meta, "target": target.name, "seed": seed, "metric": target.metric, "value": metrics[target.metric],
              "metrics": metrics, "train_examples": len(train_ds), "steps": summary["steps"]}
    write_json(metrics_json, result)
    return result
