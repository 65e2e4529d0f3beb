"""The live record of a training run, written while it trains, so that a run of hours can be watched.

In the job's live folder (``logs/<output folder>/``, beside its log file):
- ``train_log.tsv``: one row every ``log_every`` updates, appended and flushed as they come;
- TensorBoard event files (``report_to: [tensorboard]``, the default): the training loss, overall, per family
  and per task, the learning rate, the gradient norm, real (non-pad) tokens per second, and every validation
  metric where one is computed; ``tensorboard --logdir logs`` shows every job of a run;
- a W&B run (``report_to: [..., wandb]``, needs the ``wandb`` package; ``WANDB_MODE=offline`` works offline).

A resumed run continues the record: the rows up to its checkpoint come back from the checkpoint (the file is
rewritten with them), and TensorBoard is told to purge the steps after it (what the stopped attempt logged after
its last checkpoint), so that every step appears once. The job's output ``train_log.tsv`` is written atomically
from the same rows when training ends.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .io import atomic_path

DEFAULT_REPORT_TO = ("tensorboard",)  # the config's report_to, where it says nothing


class Monitor:
    """Rows and scalars of one run; ``folder`` None keeps the rows in memory only (no live files)."""

    def __init__(self, folder: str | Path | None, header: list[str], rows: list[str] | None = None,
                 first_step: int = 1, report_to: tuple[str, ...] = DEFAULT_REPORT_TO, name: str = "",
                 config: dict | None = None):
        self.header = "\t".join(header)
        self.rows = list(rows or [self.header])
        self.folder = Path(folder) if folder is not None else None
        self._tsv = self._writer = self._wandb = None
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / "train_log.tsv") as tmp:  # the rows of earlier attempts, up to the checkpoint
            tmp.write_text("\n".join(self.rows) + "\n")
        self._tsv = open(self.folder / "train_log.tsv", "a", buffering=1)
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.folder), purge_step=first_step)
        if "wandb" in report_to:
            import wandb

            self._wandb = wandb.init(dir=str(self.folder), project=os.environ.get("WANDB_PROJECT", "prefinetune"),
                                     name=name, id=_wandb_id(self.folder), resume="allow", config=config or {})

    def row(self, values: list) -> None:
        """One line of train_log.tsv (in the header's order), written through at once."""
        line = "\t".join(str(v) for v in values)
        self.rows.append(line)
        if self._tsv is not None:
            self._tsv.write(line + "\n")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Named numbers at an update (e.g. ``loss/train``, ``lr``), to TensorBoard and W&B."""
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(name, value, step)
            self._writer.flush()
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def close(self) -> None:
        if self._tsv is not None:
            self._tsv.close()
        if self._writer is not None:
            self._writer.close()
        if self._wandb is not None:
            self._wandb.finish()


def _wandb_id(folder: Path) -> str:
    """One W&B run per job folder, kept across its attempts (a retried job resumes the same run)."""
    readable = "-".join(part for part in folder.parts[-5:] if part != "/")[-80:]
    readable = "".join(c if c.isalnum() or c in "._-" else "-" for c in readable)
    return f"{readable}-{hashlib.blake2b(str(folder.resolve()).encode(), digest_size=4).hexdigest()}"


def record_once(folder: str | Path, step: int, values: dict[str, float], report_to=DEFAULT_REPORT_TO) -> None:
    """Scalars at one step, added to a run's live record after training (e.g. the final validation metrics)."""
    if "tensorboard" in report_to:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(folder)) as writer:
            for name, value in values.items():
                writer.add_scalar(name, value, step)
