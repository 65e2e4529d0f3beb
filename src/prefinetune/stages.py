"""The two training stages as the workflow runs them: pre-finetune a subset, fine-tune a target."""

from __future__ import annotations

from . import checkpoint, distributed
from .config import DEFAULT_TRAIN, finetune_steps
from .data import fraction, label_map, load_tokenized
from .evaluation import evaluate
from .families import head_name
from .heads import MultiTaskModel, saved_heads
from .io import write_json
from .tasks import Task
from .training import load_encoder, save_model, seed_everything, train


def prefinetune(tasks: list[Task], tokenized: dict[str, str], base_model: str, settings: dict, out_dir: str,
                log_tsv: str, checkpoint_dir: str | None = None) -> None:
    """Multi-task training of ``base_model`` on ``tasks``; saves encoder, tokenizer and heads to ``out_dir``.

    Run by one process, or by each of torchrun's processes (rank 0 writes). With ``checkpoint_dir`` the
    training resumes from, and saves, checkpoints there; they are deleted once the model is written.
    """
    from transformers import AutoTokenizer

    settings = {**DEFAULT_TRAIN, **settings}
    seed_everything(settings["seed"])
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    data = {t.name: load_tokenized(tokenized[t.name], "train") for t in tasks}
    model = MultiTaskModel(load_encoder(base_model), tasks, settings["dropout"], settings["loss_scaling"],
                           settings["label_smoothing"])
    summary = train(model, data, settings, settings["max_steps"], tokenizer.pad_token_id, log_tsv,
                    desc=f"pre-finetune {len(tasks)} tasks", checkpoint_dir=checkpoint_dir)
    summary.update(tasks=[t.name for t in tasks], settings=settings,
                   examples={name: len(ds) for name, ds in data.items()})
    if distributed.is_main():
        save_model(model, tokenizer, out_dir, summary)
        if checkpoint_dir is not None:
            checkpoint.remove(checkpoint_dir)


def finetune(target: Task, tokenized: str, encoder_dir: str, settings: dict, seed: int, metrics_json: str,
             log_tsv: str, meta: dict, percent: int = 100, fraction_seed: int | None = 0,
             checkpoint_dir: str | None = None) -> dict:
    """Fine-tune ``encoder_dir`` on ``target``; evaluate on validation; write metrics.

    The head is new, or with ``settings["carry_heads"]`` the pre-finetuned one where the target was in
    the pre-finetuning subset (its own head, or the shared multiple-choice / span head). ``percent`` < 100
    trains on that share of the training examples, in the order fixed by ``fraction_seed`` (nested across
    percents, see :func:`data.fraction`; unused at 100). The run takes ``epochs`` passes, at most
    ``max_steps`` updates where set. With ``checkpoint_dir`` it resumes from, and saves, checkpoints there, as
    pre-finetuning does; they are deleted once the metrics are written.
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
    summary = train(model, {target.name: train_ds}, settings, steps, pad_id, log_tsv, desc=f"fine-tune {target.name}",
                    checkpoint_dir=checkpoint_dir)
    metrics = evaluate(model, target, tokenized, pad_id, settings, summary["precision"], encoder_dir)
    result = {**meta, "target": target.name, "family": target.family, "seed": seed, "percent": percent,
              "metric": target.metric, "value": metrics[target.metric], "metrics": metrics,
              "head": "pre-finetuned" if carried else "new" if head in model.heads else "the model's own",
              "train_examples": len(train_ds),
              "steps": summary["steps"], "precision": summary["precision"], "attention": summary["attention"]}
    if label_map(tokenized) is not None:  # which raw label each class index stands for
        result["label_map"] = label_map(tokenized)
    write_json(metrics_json, result)
    if checkpoint_dir is not None:
        checkpoint.remove(checkpoint_dir)
    return result

