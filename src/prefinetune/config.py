"""The experiment described by ``config.yaml``: validated once, then queried by the workflow.

Validation has two layers: the JSON schema (``schemas/config.schema.yaml``: types, ranges, required fields)
and the cross-checks a schema cannot express (every task is in the registry, task counts fit the pool).
Both stop with a :class:`ConfigError` whose message is one line naming the field.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from .subsets import subset, task_order
from .tasks import ConfigError, Task, load_registry, validate_with_schema

MAIN = "main"  # the variant that follows the paper; ablations are named in config["ablations"]


@dataclass
class Experiment:
    config: dict
    tasks: dict[str, Task]  # the whole registry
    source: str = "config.yaml"

    @classmethod
    def from_config(cls, config: dict, repo: str | Path, source: str = "config.yaml") -> "Experiment":
        config = copy.deepcopy(config)
        validate_with_schema(config, "config.schema.yaml", source)
        config.setdefault("seed", 0)
        config.setdefault("ablations", {})
        config.setdefault("doc_stride", 128)
        config.setdefault("sample_efficiency", None)
        for resources in config["resources"].values():
            resources.setdefault("nodes", 1)
        registry = Path(config["registry"])
        if not registry.is_absolute():
            registry = Path(repo) / registry
        exp = cls(config=config, tasks=load_registry(registry), source=source)
        exp._check()
        return exp

    # -- cross-checks ------------------------------------------------------------------------------------
    def _fail(self, field: str, message: str):
        raise ConfigError(f"{self.source}: {field}: {message}")

    def _check(self) -> None:
        c = self.config
        for field in ("pool", "targets"):
            for i, name in enumerate(c[field]):
                if name not in self.tasks:
                    self._fail(f"{field}[{i}]", f"unknown task '{name}' (not in the registry {c['registry']})")
        available = len(self.order(1))
        for i, k in enumerate(c["task_counts"]):
            if k > available:
                self._fail(f"task_counts[{i}]", f"{k} is larger than the {available} tasks available to the {c['protocol']} protocol")
            if c["protocol"] == "targets_in_pool" and 0 < k < len(c["targets"]):
                self._fail(f"task_counts[{i}]", f"{k} is smaller than the {len(c['targets'])} targets, which every subset contains under targets_in_pool")
        if c["resources"]["finetune"]["nodes"] != 1:
            self._fail("resources.finetune.nodes", "fine-tuning runs on one node; only prefinetune may use several")
        if c["doc_stride"] >= c["max_length"]:
            self._fail("doc_stride", f"{c['doc_stride']} must be smaller than max_length ({c['max_length']})")
        for i, name in enumerate(self.efficiency_targets):
            if name not in self.tasks:
                self._fail(f"sample_efficiency.targets[{i}]", f"unknown task '{name}' (not in the registry {c['registry']})")

    # -- queries used by the Snakefile ---------------------------------------------------------------------
    @property
    def counts(self) -> list[int]:
        return sorted(self.config["task_counts"])

    @property
    def draws(self) -> list[int]:
        return list(range(1, self.config["draws"] + 1))

    @property
    def seeds(self) -> list[int]:
        return list(range(1, self.config["finetune_seeds"] + 1))

    @property
    def targets(self) -> list[str]:
        return list(self.config["targets"])

    @property
    def efficiency_targets(self) -> list[str]:
        """The sample-efficiency study's targets: its own list, else the experiment's targets; none without it."""
        study = self.config["sample_efficiency"]
        return [] if study is None else list(study.get("targets", self.targets))

    @property
    def percents(self) -> list[int]:
        return sorted((self.config["sample_efficiency"] or {}).get("percents", DEFAULT_PERCENTS))

    @property
    def fraction_seed(self) -> int:
        return (self.config["sample_efficiency"] or {}).get("seed", 0)

    @property
    def variants(self) -> list[str]:
        return [MAIN, *self.config["ablations"]]

    @property
    def used_tasks(self) -> list[str]:
        """Every task some job needs: the pool and the targets, in a stable order."""
        return list(dict.fromkeys([*self.config["pool"], *self.config["targets"], *self.efficiency_targets]))

    def order(self, draw: int) -> list[str]:
        c = self.config
        return task_order(c["pool"], c["targets"], c["protocol"], c["seed"], draw)

    def subset(self, k: int, draw: int) -> list[str]:
        return subset(self.order(draw), k)

    def prefinetune_settings(self, variant: str) -> dict:
        """The pre-finetuning hyper-parameters of a variant: the main section with the ablation's overrides."""
        if variant != MAIN and variant not in self.config["ablations"]:
            raise ConfigError(f"{self.source}: ablations: no variant named '{variant}'")
        settings = dict(DEFAULT_TRAIN)
        settings.update(self.config["prefinetune"])
        if variant != MAIN:
            settings.update(self.config["ablations"][variant])
        settings["max_length"] = self.config["max_length"]
        return settings

    def finetune_settings(self) -> dict:
        settings = dict(DEFAULT_TRAIN)
        settings.update(self.config["finetune"])
        settings["max_length"] = self.config["max_length"]
        return settings


DEFAULT_PERCENTS = list(range(10, 101, 10))  # sample efficiency: 10 %, 20 %, ..., 100 % of the training data

# Defaults for every optional training field; config.yaml documents each of them.
DEFAULT_TRAIN = {
    "grad_accum": 1,
    "warmup_ratio": 0.06,
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
    "dropout": 0.1,
    "batches": "heterogeneous",
    "loss_scaling": True,
    "temperature": 1.0,
    "cap": None,
    "seed": 0,
    "log_every": 50,
    "eval_batch_size": 64,
    "max_answer_tokens": 30,
    "carry_heads": False,
    "checkpoint_every": 1000,
    "precision": "auto",
    "tf32": True,
    "compile": False,
    "group_by_length": True,
}
