"""The experiment described by ``config.yaml``: validated once, then queried by the workflow.

Validation has two layers: the JSON schema (``schemas/config.schema.yaml``: types, ranges, required fields)
and the cross-checks a schema cannot express (every task is in the registry, task counts fit the pool).
Both stop with a :class:`ConfigError` whose message is one line naming the file the value came from and
the field. The config may come from several files (the workflow's ``config.yaml``, then each
``--configfile``, then ``--config``); each later one updates the earlier ones, except that a ``model``
section naming a source (``hub``, ``path`` or ``build``) replaces the earlier model section as a whole.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .device import PEAK_TFLOPS
from .families import family, load_registry
from .monitor import DEFAULT_REPORT_TO
from .subsets import draw_seed, subset, task_order
from .tasks import ConfigError, Task, read_yaml, validate_with_schema

MAIN = "main"  # the variant that follows the paper; ablations are named in config["ablations"]
NULL = "null_arm"  # the null arm (config null_arm, results/null/): the main method, its labels destroyed; not "null",
# which pandas reads as a missing value in a CSV's variant column
SHUFFLED = "shuffled"  # the null arm's ``labels`` setting: each task's label information destroyed (families.base)
MODEL_SOURCES = ("hub", "path", "build")  # exactly one says where the model comes from
REFERENCE = "reference:"  # variant of a reference model's runs: reference:<name> (config["reference_models"])
WARNING_MINUTES = 5  # the Slurm profile's --signal=TERM@300: the last 5 minutes of a job only save a checkpoint


def config_sources(workflow_files, cli_files, cli_config: dict, replace_workflow_config: bool = False) -> list:
    """The config's layers as ``[(name, dict)]``, lowest precedence first: the workflow's own config file,
    each ``--configfile`` in order, then the ``--config`` values."""
    cli = [str(f) for f in cli_files]
    own = [] if replace_workflow_config else [str(f) for f in workflow_files if str(f) not in cli]
    sources = []
    for name in [*own, *cli]:
        data = read_yaml(name)
        if not isinstance(data, dict):
            raise ConfigError(f"{name}: (top level): the config must be a mapping of keys to values")
        sources.append((name, data))
    if cli_config:
        sources.append(("--config", dict(cli_config)))
    return sources


def merge_sources(sources: list) -> dict:
    """Each layer updates the ones before; a model section naming a source replaces the earlier one."""
    merged = {}
    for _, data in sources:
        data = copy.deepcopy(data)
        if isinstance(data.get("model"), dict) and set(MODEL_SOURCES) & set(data["model"]):
            merged.pop("model", None)
        _update(merged, data)
    return merged


def _update(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _update(into[key], value)
        else:
            into[key] = value


def _has(data, path: tuple) -> bool:
    for key in path:
        if isinstance(data, dict) and key in data:
            data = data[key]
        elif isinstance(data, list) and isinstance(key, int) and key < len(data):
            data = data[key]
        else:
            return False
    return True


@dataclass(frozen=True)
class Run:
    """One fine-tuning run: from the model (variant, k, draw) of a curve (k = 0: the original model, draw 0) on a
    target with a seed. ``percent``: the sample-efficiency study's share of the training data; None for a run of
    a curve, which trains on the whole split."""

    variant: str
    k: int
    draw: int
    target: str
    seed: int
    percent: int | None = None


@dataclass
class Experiment:
    config: dict
    tasks: dict[str, Task]  # the whole registry
    source: str = "config.yaml"
    sources: list = field(default_factory=list)  # [(file name, its content)], lowest precedence first

    @classmethod
    def from_sources(cls, sources: list, repo: str | Path) -> "Experiment":
        """The experiment of config layers (see :func:`config_sources`); errors name the layer of the value."""
        return cls.from_config(merge_sources(sources), repo, source=sources[-1][0] if sources else "config",
                               sources=sources)

    @classmethod
    def from_config(cls, config: dict, repo: str | Path, source: str = "config.yaml", sources=()) -> "Experiment":
        config = copy.deepcopy(config)
        where = cls(config=config, tasks={}, source=source, sources=list(sources)).where
        _check_model_source(config.get("model"), where)
        _check_reference_sources(config.get("reference_models"), where)
        validate_with_schema(config, "config.schema.yaml", where)
        config.setdefault("seed", 0)
        config.setdefault("ablations", {})
        stride_given = "doc_stride" in config
        config.setdefault("doc_stride", 128)
        config.setdefault("max_target_length", 128)
        config.setdefault("sample_efficiency", None)
        config.setdefault("null_arm", None)
        config.setdefault("finetune_overrides", {})
        config.setdefault("reference_models", [])
        config["plan"] = {**DEFAULT_PLAN, **(config.get("plan") or {})}
        for resources in config["resources"].values():
            resources.setdefault("nodes", 1)
        registry = Path(config["registry"])
        if not registry.is_absolute():
            registry = Path(repo) / registry
        tasks = {name: dataclasses.replace(t, max_target_length=config["max_target_length"])
                 if family(t).model.teacher_forced else t for name, t in load_registry(registry).items()}
        exp = cls(config=config, tasks=tasks, source=source, sources=list(sources))
        exp._check(stride_given)
        return exp

    # -- cross-checks ------------------------------------------------------------------------------------
    def where(self, path: tuple) -> str:
        """The file that set the value at ``path`` (the last layer holding it), else the last layer."""
        for name, data in reversed(self.sources):
            if _has(data, path):
                return name
        return self.source

    def _fail(self, field: str, message: str):
        path = tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", field) if p)
        raise ConfigError(f"{self.where(path)}: {field}: {message}")

    def _check(self, stride_given: bool = True) -> None:
        c = self.config
        for i, writer in enumerate(c.get("report_to", [])):
            if writer == "wandb" and importlib.util.find_spec("wandb") is None:  # before any job, not at its start
                self._fail(f"report_to[{i}]", "wandb is not installed here (pip install wandb, or the [wandb] extra)")
        for key in ("pool", "targets"):
            for i, name in enumerate(c[key]):
                if name not in self.tasks:
                    self._fail(f"{key}[{i}]", f"unknown task '{name}' (not in the registry {c['registry']})")
        available = len(self.order(1))
        for i, k in enumerate(c["task_counts"]):
            if k > available:
                self._fail(f"task_counts[{i}]", f"{k} is larger than the {available} tasks available to the {c['protocol']} protocol")
            if c["protocol"] == "targets_in_pool" and 0 < k < len(c["targets"]):
                self._fail(f"task_counts[{i}]", f"{k} is smaller than the {len(c['targets'])} targets, which every subset contains under targets_in_pool")
        if MAIN in c["ablations"]:  # it would silently become the main curve (results/, not results/ablations/)
            self._fail(f"ablations.{MAIN}", f"'{MAIN}' names the main curve; give the ablation another name")
        if c["resources"]["finetune"]["nodes"] != 1:
            self._fail("resources.finetune.nodes", "fine-tuning runs on one node; only prefinetune may use several")
        if "path" in c["model"]:  # relative to the working directory, where the download_model job runs
            self._saved_config("model.path", c["model"]["path"])
        self._check_model_fits_tasks()
        self._check_reference_models()
        self._check_plan_gpu()
        for key in ("checkpoints", "hf_home"):  # folders of the run: a $VARIABLE that is not set would become a name
            if c.get(key) and "$" in expand_path(c[key]):
                self._fail(key, f"{c[key]}: an environment variable in it is not set here")
        if duration_minutes(c["plan"]["runtime_floor"]) <= WARNING_MINUTES:
            self._fail("plan.runtime_floor", f"{c['plan']['runtime_floor']} must be longer than the {WARNING_MINUTES} "
                       "minutes before a job's time limit in which it only saves a checkpoint (--signal=TERM@300)")
        has_span = any(self.tasks[t].type == "span" for t in self.used_tasks)
        if has_span and c["doc_stride"] >= c["max_length"]:  # only span tasks cut passages into windows
            default = "" if stride_given else " (the default)"
            self._fail("doc_stride", f"{c['doc_stride']}{default} must be smaller than max_length ({c['max_length']})")
        for i, name in enumerate(self.efficiency_targets):
            if name not in self.tasks:
                self._fail(f"sample_efficiency.targets[{i}]", f"unknown task '{name}' (not in the registry {c['registry']})")
        self._check_efficiency_held_out()
        self._check_null_arm()
        for name in c["finetune_overrides"]:
            if name not in self.tasks:
                self._fail(f"finetune_overrides.{name}", f"unknown task '{name}' (not in the registry {c['registry']})")

    def _check_efficiency_held_out(self) -> None:
        """The sample-efficiency study measures how a dataset left out of pre-finetuning gains from it (the paper's
        design): none of its targets may enter a subset."""
        pretrained = set(self.order(1))  # every task some subset holds (under held_out, not the targets)
        given = "targets" in (self.config["sample_efficiency"] or {})
        for i, name in enumerate(self.efficiency_targets):
            if name in pretrained:
                field = f"sample_efficiency.targets[{i}]" if given else "sample_efficiency.targets"
                why = " and ".join(reason for reason, holds in (
                    ("in the pool", name in self.config["pool"]),
                    ("a target, which targets_in_pool puts in every subset", name in self.targets)) if holds)
                default = "" if given else " (the default: the targets)"
                self._fail(field, f"{name}{default} is {why}, so pre-finetuned models have seen its labels; the study "
                           "fine-tunes datasets held out of pre-finetuning: take it out of the pool, or name another")

    def _check_null_arm(self) -> None:
        """The null arm's task counts are the main curve's (each null model is paired with the main model of the same
        k and draw); no ablation takes its name (results/ablations/null would read as the null arm)."""
        if NULL in self.config["ablations"]:
            self._fail(f"ablations.{NULL}", f"'{NULL}' names the null arm's curve (results/null/); give the ablation "
                       "another name")
        for i, k in enumerate((self.config["null_arm"] or {}).get("task_counts", [])):
            if k not in self.config["task_counts"]:
                self._fail(f"null_arm.task_counts[{i}]", f"{k} is not one of task_counts {self.counts}: each null model "
                           "is compared with the main curve's model of the same k and draw")

    def _check_plan_gpu(self) -> None:
        """Without a measured plan.tokens_per_s the plan prices every job at its GPU's peak for the precision it trains
        in there (prefinetune.plan.priced_precision): that GPU and that precision must be in device.PEAK_TFLOPS."""
        plan, c = self.config["plan"], self.config
        if plan["tokens_per_s"]:
            return
        gpu = plan["gpu"].lower()
        if gpu not in PEAK_TFLOPS:
            self._fail("plan.gpu", f"{plan['gpu']}: no peak known; known: {', '.join(PEAK_TFLOPS)} (or measure "
                       "plan.tokens_per_s)")
        peaks = PEAK_TFLOPS[gpu]
        if plan["precision"] != "auto":
            if plan["precision"] not in peaks:
                self._fail("plan.precision", f"{plan['precision']}: a {gpu} has no {plan['precision']} peak (it has "
                           f"{', '.join(peaks)})")
            return
        sections = {"prefinetune": c["prefinetune"], "finetune": c["finetune"],
                    **{f"ablations.{name}": v for name, v in c["ablations"].items()},
                    **{f"finetune_overrides.{name}": v for name, v in c["finetune_overrides"].items()}}
        for field, section in sections.items():
            if section.get("precision", "auto") not in ("auto", "fp32", *peaks):
                self._fail(f"{field}.precision", f"{section['precision']} on a {gpu} (plan.gpu) has no peak to price: "
                           f"its {section['precision']} is emulated; auto trains in {', '.join(p for p in peaks if p != 'fp32')} there")

    def _check_model_fits_tasks(self) -> None:
        """A summarization task needs an encoder-decoder: a built BART, or a local model whose config says so (a hub
        model's config is read only once downloaded: the first training job stops then)."""
        model = self.config["model"]
        needs = [self.tasks[t] for t in self.used_tasks if family(self.tasks[t]).model.needs_seq2seq]
        if not needs:
            return
        why = f"{needs[0].name} is a {needs[0].type} task, which needs an encoder-decoder model (BART)"
        if "build" in model and model["build"].get("architecture", "roberta") != "bart":
            given = model["build"].get("architecture", "roberta (the default)")
            self._fail("model.build.architecture", f"{given} is an encoder; {why}: architecture: bart")
        if "path" in model:
            saved = self._saved_config("model.path", model["path"])
            if not saved.get("is_encoder_decoder"):
                self._fail("model.path", f"{model['path']} holds an encoder ({saved.get('model_type', '?')}); {why}")

    def _saved_config(self, field: str, path: str) -> dict:
        """The config.json of a local model folder (``model.path``, ``reference_models[i].path``), which must exist
        and hold a model saved by save_pretrained."""
        folder = Path(path).expanduser()
        if not folder.is_dir():
            self._fail(field, f"{path}: no such folder")
        if not (folder / "config.json").is_file():
            self._fail(field, f"{path} has no config.json (not a folder saved by save_pretrained)")
        return json.loads((folder / "config.json").read_text())

    def _check_reference_models(self) -> None:
        """Names unique and not the model's own (they name paths); a local folder exists and holds a saved model,
        an encoder-decoder where a target is summarization (a hub model's config is read once downloaded)."""
        names = [self.config["model"]["name"]]
        seq2seq = [t for t in self.targets if family(self.tasks[t]).model.needs_seq2seq]
        for i, ref in enumerate(self.config["reference_models"]):
            field = f"reference_models[{i}]"
            if ref["name"] in names:
                which = "the model's own name" if ref["name"] == names[0] else "the name of another reference model"
                self._fail(f"{field}.name", f"{ref['name']} is {which}; every model needs a name of its own (it names "
                           "its folders: resources/models/<name>, results/tokenized/<name>, results/reference/<name>)")
            names.append(ref["name"])
            if "path" in ref:
                saved = self._saved_config(f"{field}.path", ref["path"])
                if seq2seq and not saved.get("is_encoder_decoder"):
                    self._fail(f"{field}.path", f"{ref['path']} holds an encoder ({saved.get('model_type', '?')}); "
                               f"{seq2seq[0]} is a summarization target, which needs an encoder-decoder model")

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
    def null_counts(self) -> list[int]:
        """The null arm's task counts (config null_arm.task_counts, default all), k = 0 included where the main curve
        has it (the baseline both share); none without a null arm."""
        arm = self.config["null_arm"]
        if arm is None:
            return []
        return sorted(set(arm.get("task_counts", self.counts)) | ({0} & set(self.counts)))

    @property
    def null_in_default(self) -> bool:
        """Whether the default target (plain ``snakemake``) builds the null arm too (null_arm.default_target)."""
        return bool((self.config["null_arm"] or {}).get("default_target", False))

    def counts_of(self, variant: str) -> list[int]:
        """The task counts of a variant's curve: the null arm's own, every other curve the config's."""
        return self.null_counts if variant == NULL else self.counts

    @property
    def curve_tasks(self) -> list[str]:
        """The tasks of the curve: the pool and the targets, in a stable order (a built tokenizer reads their text)."""
        return list(dict.fromkeys([*self.config["pool"], *self.config["targets"]]))

    @property
    def used_tasks(self) -> list[str]:
        """Every task some job needs: the curve's, then the sample-efficiency study's, in a stable order."""
        return list(dict.fromkeys([*self.curve_tasks, *self.efficiency_targets]))

    @property
    def reference_models(self) -> dict[str, dict]:
        """The published checkpoints fine-tuned beside the curve, by name (config reference_models)."""
        return {ref["name"]: ref for ref in self.config["reference_models"]}

    def order(self, draw: int) -> list[str]:
        c = self.config
        return task_order(c["pool"], c["targets"], c["protocol"], c["seed"], draw)

    def subset(self, k: int, draw: int) -> list[str]:
        return subset(self.order(draw), k)

    # -- the jobs, as values (rules/common.smk turns them into paths) -----------------------------------------
    def models(self, variant: str = MAIN) -> list[tuple[int, int]]:
        """(k, draw) of every pre-finetuned model of a curve (each variant has its own)."""
        return [(k, draw) for k in self.counts_of(variant) if k > 0 for draw in self.draws]

    def curve_runs(self, variant: str, targets: list[str] | None = None) -> list[Run]:
        """Every fine-tuning run behind one curve: the k = 0 baseline (shared by all variants) and the runs from
        the variant's pre-finetuned models."""
        targets = self.targets if targets is None else targets
        runs = []
        for k in self.counts_of(variant):
            models = [(MAIN, 0)] if k == 0 else [(variant, draw) for draw in self.draws]
            runs += [Run(v, k, draw, target, seed) for v, draw in models for target in targets for seed in self.seeds]
        return runs

    def reference_runs(self) -> list[Run]:
        """Every run of the reference models: each fine-tuned on the targets with the seeds of k = 0 (variant
        reference:<name>; k and draw 0 only place the run, its row in scaling.csv has no k)."""
        return [Run(f"{REFERENCE}{name}", 0, 0, target, seed) for name in self.reference_models
                for target in self.targets for seed in self.seeds]

    def efficiency_runs(self) -> list[Run]:
        """Every run of the sample-efficiency study: each of its targets, percents and seeds, from every model of
        the main curve (k = 0 included). 100 % of a target of the main curve is that curve's own run."""
        runs = []
        for target in self.efficiency_targets:
            for pct in self.percents:
                if pct == 100 and target in self.targets:  # the whole training split: the main curve's runs
                    runs += self.curve_runs(MAIN, [target])
                    continue
                models = [(0, 0)] if 0 in self.counts else []
                runs += [Run(MAIN, k, draw, target, seed, pct) for k, draw in [*models, *self.models()]
                         for seed in self.seeds]
        return runs

    def prefinetune_settings(self, variant: str, draw: int | None = None) -> dict:
        """The pre-finetuning hyper-parameters of a variant: the main section with the ablation's overrides; the null
        arm's are the main ones with ``labels: shuffled``. With ``draw``, the seed is that draw's (:func:`draw_seed`),
        the same at every k and in every variant."""
        if variant not in (MAIN, NULL) and variant not in self.config["ablations"]:
            raise ConfigError(f"{self.source}: ablations: no variant named '{variant}'")
        merged = {**DEFAULT_TRAIN, **self.config["prefinetune"]}
        if variant in self.config["ablations"]:
            merged.update(self.config["ablations"][variant])
        reads = [*PREFINETUNE_READS, *BUDGET_READS[merged["budget"]], *self.generation_reads(self.config["pool"])]
        settings = {**{k: merged[k] for k in reads if k in merged}, "max_length": self.config["max_length"]}
        if variant == NULL:
            settings["labels"] = SHUFFLED
        if draw is not None:
            settings["seed"] = draw_seed(merged["seed"], draw)
        return settings

    def finetune_settings(self, target: str) -> dict:
        """The fine-tuning hyper-parameters of a target: the finetune section with the target's overrides."""
        merged = {**DEFAULT_TRAIN, **self.config["finetune"], **self.config["finetune_overrides"].get(target, {})}
        reads = [k for k in FINETUNE_READS if k != "max_answer_tokens" or self.tasks[target].type == "span"]
        reads += self.generation_reads([target])
        return {**{k: merged[k] for k in reads if k in merged}, "max_length": self.config["max_length"]}

    def generation_reads(self, names) -> list[str]:
        """GENERATION_READS where one of the tasks is a generation task (summarization), else none: settings no
        other family reads are no params of its jobs, and changing them reruns nothing."""
        return list(GENERATION_READS) if any(family(self.tasks[n]).model.teacher_forced for n in names) else []


def prefinetune_steps(settings: dict, items: int) -> int:
    """Updates of a pre-finetuning run (its budget per k), ``items`` the training items of its subset (examples;
    span: windows): ``updates``, ``max_steps`` whatever k; ``passes``, that many passes over the subset, at most
    ``max_steps``; ``convergence``, at most ``max_steps``, stopping once the validation loss stops improving."""
    if settings["budget"] != "passes":
        return settings["max_steps"]
    steps = math.ceil(settings["passes"] * items / (settings["batch_size"] * settings.get("grad_accum", 1)))
    return min(steps, settings["max_steps"])


def finetune_steps(settings: dict, examples: int) -> int:
    """Updates of a fine-tuning run: ``epochs`` passes over ``examples`` (span: windows), capped by ``max_steps``."""
    steps = math.ceil(settings["epochs"] * examples / (settings["batch_size"] * settings.get("grad_accum", 1)))
    return min(steps, settings.get("max_steps") or steps)


def run_options(config: dict, stage: str) -> dict:
    """How a job of ``stage`` (prefinetune or finetune) runs, not what it computes: log and checkpoint intervals
    and the evaluation batch size. The job reads them from the config itself, so they are never params and
    changing them reruns nothing. Ablations use the prefinetune section's."""
    section = config.get(stage) or {}
    return {k: section.get(k, DEFAULT_TRAIN[k]) for k in RUN_OPTIONS}


def _check_reference_sources(references, where) -> None:
    """Each reference model names exactly one of hub and path (a published checkpoint: no build)."""
    if not isinstance(references, list):
        return  # the schema says what is wrong
    for i, ref in enumerate(references):
        if not isinstance(ref, dict):
            continue
        given = [key for key in ("hub", "path") if key in ref]
        if len(given) != 1:
            what = "hub and path given at once" if given else "no hub or path given"
            raise ConfigError(f"{where(('reference_models', i))}: reference_models[{i}]: {what}; give one of hub, path")


def duration_minutes(text: str) -> float:
    """A duration with a unit (``30s``, ``15m``, ``4h``, ``1d``; the schema's pattern for runtimes) in minutes."""
    return int(text[:-1]) * {"s": 1 / 60, "m": 1, "h": 60, "d": 1440}[text[-1]]


def is_reference(variant) -> bool:
    """Whether a run's variant is a reference model's (reference:<name>), not a point of a curve."""
    return isinstance(variant, str) and variant.startswith(REFERENCE)


def reference_name(variant: str) -> str:
    """The model's name in a reference model's variant: reference:<name> -> <name>."""
    return variant[len(REFERENCE):]


def report_to(config: dict) -> list[str]:
    """Where a training job writes its live metrics (config ``report_to``): read by the job, never a param."""
    return list(config.get("report_to", DEFAULT_REPORT_TO))


def checkpoint_root(config: dict) -> str:
    """The folder under which training jobs keep their checkpoints (config ``checkpoints``, default ``checkpoints``
    in the working directory; ~ and $VARIABLES expanded): read by the job, never a param."""
    return expand_path(config.get("checkpoints") or DEFAULT_CHECKPOINTS)


def hf_home(config: dict) -> str | None:
    """The Hugging Face cache the download jobs use (config ``hf_home``, set as HF_HOME for every job); None: the
    environment's HF_HOME, else Hugging Face's default, ~/.cache/huggingface."""
    return expand_path(config["hf_home"]) if config.get("hf_home") else None


def expand_path(path: str) -> str:
    """A configured folder with ~ and $VARIABLES expanded, as the shell would."""
    return os.path.expandvars(os.path.expanduser(path))


def allow_cpu(config: dict) -> bool:
    """Whether a training job whose resources ask for GPUs may train on the CPU when it sees none (config
    ``allow_cpu``, default false: it stops, see prefinetune.device): read by the job, never a param."""
    return bool(config.get("allow_cpu", False))


def _check_model_source(model, where) -> None:
    """Exactly one of hub, path and build. (Across files none is given twice: a later file's model section
    that names a source replaces the earlier section, see :func:`merge_sources`.)"""
    if not isinstance(model, dict):
        return  # the schema says what is wrong
    given = [key for key in MODEL_SOURCES if key in model]
    if len(given) > 1:
        raise ConfigError(f"{where(('model', given[-1]))}: model: {' and '.join(given)} given at once; "
                          "give one of hub, path, build")
    if not given:
        raise ConfigError(f"{where(('model',))}: model: give one of hub, path, build")


DEFAULT_CHECKPOINTS = "checkpoints"  # training checkpoints, under the working directory unless config checkpoints says
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
    "label_smoothing": 0.1,
    "budget": "updates",
    "passes": 1.0,
    "eval_every": 500,
    "patience": 3,
    "eval_examples": 256,
}

# What each stage's training reads, so exactly the params of its jobs: changing one reruns the job. Left out:
# RUN_OPTIONS (see run_options); for fine-tuning also `seed` (the seed wildcard replaces it) and the sampler's
# batches, temperature and cap (one task: every batch is that task's), and max_answer_tokens but for span targets;
# for pre-finetuning the fine-tuning keys.
PRECISION_READS = ("precision", "tf32", "compile", "group_by_length")  # how the arithmetic is done: both stages
PREFINETUNE_READS = ("max_steps", "batch_size", "grad_accum", "lr", "warmup_ratio", "weight_decay", "max_grad_norm",
                     "dropout", "batches", "loss_scaling", "temperature", "cap", "seed", "budget", *PRECISION_READS)
# Pre-finetuning's budget per k (prefinetune_steps): the settings each choice reads besides max_steps.
BUDGET_READS = {"updates": (), "passes": ("passes",), "convergence": ("eval_every", "patience", "eval_examples")}
FINETUNE_READS = ("epochs", "max_steps", "batch_size", "grad_accum", "lr", "warmup_ratio", "weight_decay",
                  "max_grad_norm", "dropout", "loss_scaling", "max_answer_tokens", "carry_heads", *PRECISION_READS)
RUN_OPTIONS = ("log_every", "checkpoint_every", "eval_batch_size")
GENERATION_READS = ("label_smoothing",)  # read only where a job's tasks include summarization (see generation_reads)

# The cost plan (prefinetune.plan): throughput assumed where no measured tokens_per_s is given; precision auto: each
# job at the precision it trains in on that GPU (prefinetune.plan.priced_precision).
DEFAULT_PLAN = {"gpu": "a100", "precision": "auto", "mfu": 0.3, "tokens_per_s": None, "model_params": None,
                # What each training job asks Slurm for (prefinetune.plan.asked_minutes): its estimate x runtime_safety,
                # plus the 5-minute warning, at least runtime_floor, at most the rule's resources.<rule>.runtime.
                "runtime_safety": 2.0, "runtime_floor": "15m",
                # The disk bill's checkpoints at peak (prefinetune.disk): the training jobs that run at once; None: all.
                "jobs_at_once": None}
