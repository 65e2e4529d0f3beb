"""config.yaml and registry validation: every mistake stops with one line naming the field."""

import copy
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from prefinetune.config import (DEFAULT_TRAIN, MAIN, NULL, RUN_OPTIONS, SHUFFLED, Experiment, checkpoint_root,
                               config_sources, hf_home, merge_sources, run_options)
from prefinetune.families import load_registry
from prefinetune.tasks import ConfigError, params

REPO = Path(__file__).resolve().parents[2]
DEMO = yaml.safe_load((REPO / "demo" / "config.yaml").read_text())


def config(**changes):
    c = copy.deepcopy(DEMO)
    c.update(changes)
    return c


def config_error(cfg) -> str:
    with pytest.raises(ConfigError) as info:
        Experiment.from_config(cfg, REPO)
    message = str(info.value)
    assert "\n" not in message, f"message is not one line: {message!r}"
    assert message.startswith("config.yaml: "), message
    return message


# -- the demo config -----------------------------------------------------------------------------------------
def test_demo_config_loads():
    exp = Experiment.from_config(DEMO, REPO)
    assert exp.targets == DEMO["targets"]
    assert exp.counts == sorted(DEMO["task_counts"])
    assert exp.draws == list(range(1, DEMO["draws"] + 1))
    assert exp.seeds == list(range(1, DEMO["finetune_seeds"] + 1))
    assert exp.variants == [MAIN, *DEMO.get("ablations", {})]
    registry = load_registry(REPO / DEMO["registry"])
    assert list(exp.tasks) == list(registry)  # as the registry has them; summarization with the config's target length
    for name, task in exp.tasks.items():
        expected = 128 if task.type == "summarization" else None  # the default max_target_length
        assert task == dataclasses.replace(registry[name], max_target_length=expected)
    assert set(exp.curve_tasks) == set(DEMO["pool"]) | set(DEMO["targets"])
    assert set(exp.used_tasks) == set(exp.curve_tasks) | set(DEMO["sample_efficiency"]["targets"])
    order = exp.order(1)
    if DEMO["protocol"] == "targets_in_pool":
        assert order[: len(exp.targets)] == exp.targets
    else:
        assert not set(order) & set(exp.targets)
    k = max(exp.counts)
    assert exp.subset(k, 1) == order[:k]
    assert set(exp.subset(min(c for c in exp.counts if c > 0), 1)) <= set(exp.subset(k, 1))
    assert exp.order(1) != exp.order(2)


def test_from_config_does_not_mutate_input():
    cfg = copy.deepcopy(DEMO)
    cfg.pop("seed")
    snapshot = copy.deepcopy(cfg)
    exp = Experiment.from_config(cfg, REPO)
    assert cfg == snapshot
    assert exp.config["seed"] == 0


def test_absolute_registry_path():
    exp = Experiment.from_config(config(registry=str(REPO / "demo" / "tasks.yaml")), "/nonexistent")
    assert "syn_01" in exp.tasks


def test_missing_registry_file():
    with pytest.raises(ConfigError, match="registry"):
        Experiment.from_config(config(registry="demo/no_such_tasks.yaml"), REPO)


# -- mistakes in config.yaml ---------------------------------------------------------------------------------
def test_misspelled_task_in_pool():
    pool = list(DEMO["pool"])
    pool[3] = "syn_4"
    msg = config_error(config(pool=pool))
    assert "pool[3]" in msg and "syn_4" in msg


def test_task_count_larger_than_pool():
    msg = config_error(config(task_counts=[0, 3, 99]))
    assert "task_counts[2]" in msg and "99" in msg


def test_task_count_larger_than_pool_held_out():
    n = len(set(DEMO["pool"]) - set(DEMO["targets"]))  # what held_out leaves to pre-finetune on
    msg = config_error(config(protocol="held_out", task_counts=[0, n + 1]))
    assert "task_counts[1]" in msg and str(n + 1) in msg
    Experiment.from_config(config(protocol="held_out", task_counts=[0, n], null_arm=None), REPO)


def test_task_count_smaller_than_targets():
    assert len(DEMO["targets"]) >= 2
    msg = config_error(config(protocol="targets_in_pool", task_counts=[0, 1, 6]))
    assert "task_counts[1]" in msg


def test_target_not_in_registry():
    msg = config_error(config(targets=[DEMO["targets"][0], "rte"]))
    assert "targets[1]" in msg and "rte" in msg


@pytest.mark.parametrize("value", [0, -1])
def test_bad_finetune_seeds(value):
    msg = config_error(config(finetune_seeds=value))
    assert "finetune_seeds" in msg


def test_finetune_seeds_wrong_type():
    assert "finetune_seeds" in config_error(config(finetune_seeds="two"))


def test_bad_protocol():
    msg = config_error(config(protocol="leave_one_out"))
    assert "protocol" in msg and "leave_one_out" in msg


def test_runtime_without_unit():
    cfg = config()
    cfg["resources"]["prefinetune"]["runtime"] = "10"
    msg = config_error(cfg)
    assert "resources.prefinetune.runtime" in msg


def test_runtime_as_number():
    cfg = config()
    cfg["resources"]["finetune"]["runtime"] = 10
    assert "resources.finetune.runtime" in config_error(cfg)


def test_nodes_default_to_one_and_only_prefinetune_may_use_several():
    assert Experiment.from_config(config(), REPO).config["resources"]["prefinetune"]["nodes"] == 1
    cfg = config()
    cfg["resources"]["prefinetune"]["nodes"] = 4
    assert Experiment.from_config(cfg, REPO).config["resources"]["prefinetune"]["nodes"] == 4
    cfg["resources"]["finetune"]["nodes"] = 2
    assert "resources.finetune.nodes" in config_error(cfg)
    cfg["resources"]["finetune"]["nodes"] = 0
    assert "resources.finetune.nodes" in config_error(cfg)


def test_unknown_top_level_key():
    cfg = config(learning_rate=0.1)
    msg = config_error(cfg)
    assert "learning_rate" in msg


def test_unknown_key_in_training_section():
    cfg = config()
    cfg["prefinetune"]["learnig_rate"] = 0.1
    msg = config_error(cfg)
    assert "prefinetune" in msg and "learnig_rate" in msg


def test_missing_required_field():
    cfg = config()
    del cfg["finetune"]["lr"]
    msg = config_error(cfg)
    assert "finetune" in msg and "lr" in msg


def test_bad_ablation_value():
    cfg = config()
    cfg["ablations"] = {**cfg.get("ablations", {}), "mixed_up": {"batches": "mixed"}}
    msg = config_error(cfg)
    assert "ablations.mixed_up.batches" in msg


def test_an_ablation_named_main_stops_the_config_check():
    cfg = config()
    cfg["ablations"] = {MAIN: {"lr": 1e-4}}  # it would become the main curve (results/) without a word
    assert config_error(cfg) == "config.yaml: ablations.main: 'main' names the main curve; give the ablation another name"


def test_a_key_given_twice_stops_with_its_line(tmp_path):
    """PyYAML keeps the last of two equal keys; the config (every --configfile too) and the registry are read with a
    loader that refuses the second, naming the file, its line and column, and the first one's line."""
    text = (REPO / "demo" / "config.yaml").read_text().replace("\nfinetune:\n", "\nfinetune:\n  lr: 0.1\n", 1)
    (tmp_path / "config.yaml").write_text(text)
    line = text.splitlines().index("  lr: 0.1") + 1
    first = next(i for i, row in enumerate(text.splitlines()[line:], start=line + 1) if row.startswith("  lr:"))
    with pytest.raises(ConfigError) as info:
        config_sources([tmp_path / "config.yaml"], [], {})
    assert str(info.value) == f"{tmp_path / 'config.yaml'}: line {first}, column 3: key 'lr' is given twice (first on line {line})"
    path = write_registry(tmp_path, t=GOOD_ENTRY)
    path.write_text(path.read_text() + "t:\n  type: regression\n")
    assert registry_error(path).endswith("column 1: key 't' is given twice (first on line 1)")


def test_model_needs_exactly_one_source():
    cfg = config()
    cfg["model"] = {"name": "m", "hub": "roberta-base", "path": "/models/roberta"}
    assert "model" in config_error(cfg)


def test_a_later_model_section_naming_a_source_replaces_the_earlier_one():
    default = {"model": {"name": "tiny", "build": {"hidden_size": 8}}, "draws": 2, "prefinetune": {"lr": 0.1, "max_steps": 5}}
    mine = {"model": {"name": "big", "hub": "org/big"}, "prefinetune": {"lr": 0.2}}
    merged = merge_sources([("config.yaml", default), ("mine.yaml", mine)])
    assert merged["model"] == {"name": "big", "hub": "org/big"}  # not merged with build
    assert merged["prefinetune"] == {"lr": 0.2, "max_steps": 5} and merged["draws"] == 2  # the rest: key by key
    revision_only = merge_sources([("mine.yaml", mine), ("--config", {"model": {"revision": "abc"}})])
    assert revision_only["model"] == {"name": "big", "hub": "org/big", "revision": "abc"}


def test_errors_name_the_layer_that_set_the_value():
    mine = {"prefinetune": {"max_steps": 0}}
    with pytest.raises(ConfigError) as info:
        Experiment.from_sources([("config.yaml", copy.deepcopy(DEMO)), ("mine.yaml", mine)], REPO)
    assert str(info.value) == "mine.yaml: prefinetune.max_steps: 0 is less than the minimum of 1"
    with pytest.raises(ConfigError) as info:  # a cross-check: the pool is the default file's
        Experiment.from_sources([("config.yaml", config(pool=["nope"])), ("mine.yaml", {"draws": 3})], REPO)
    assert str(info.value).startswith("config.yaml: pool[0]: unknown task 'nope'")


# -- settings ------------------------------------------------------------------------------------------------
def test_prefinetune_settings_of_an_ablation_override_only_its_keys():
    cfg = config()
    cfg["prefinetune"].pop("dropout", None)
    cfg["ablations"] = {"no_loss_scaling": {"loss_scaling": False}, "homogeneous_batches": {"batches": "homogeneous"},
                        "two": {"lr": 1e-5, "max_steps": 7}}
    exp = Experiment.from_config(cfg, REPO)
    main = exp.prefinetune_settings(MAIN)
    assert main["lr"] == DEMO["prefinetune"]["lr"]
    assert main["max_steps"] == DEMO["prefinetune"]["max_steps"]
    assert main["max_length"] == DEMO["max_length"]
    assert main["loss_scaling"] is True
    assert main["dropout"] == DEFAULT_TRAIN["dropout"]  # a default not given in the config
    for name, overrides in cfg["ablations"].items():
        ablation = exp.prefinetune_settings(name)
        assert set(ablation) == set(main)
        for key, value in ablation.items():
            assert value == (overrides[key] if key in overrides else main[key]), key
        assert any(ablation[k] != main[k] for k in overrides)
    assert exp.prefinetune_settings("no_loss_scaling")["loss_scaling"] is False
    assert exp.prefinetune_settings("homogeneous_batches")["batches"] == "homogeneous"
    assert exp.prefinetune_settings("two")["lr"] == 1e-5 and exp.prefinetune_settings("two")["max_steps"] == 7
    # querying an ablation leaves the main settings and DEFAULT_TRAIN untouched
    assert exp.prefinetune_settings(MAIN) == main
    assert DEFAULT_TRAIN["loss_scaling"] is True and DEFAULT_TRAIN["batches"] == "heterogeneous"


def test_each_draw_has_its_own_seed_the_same_at_every_k_and_in_every_variant():
    cfg = config(null_arm={})
    cfg["ablations"] = {"no_loss_scaling": {"loss_scaling": False}}
    exp = Experiment.from_config(cfg, REPO)
    seeds = {d: exp.prefinetune_settings(MAIN, d)["seed"] for d in exp.draws}
    assert len(set(seeds.values())) == len(seeds)  # independent draws
    for variant in (NULL, "no_loss_scaling"):  # common random numbers: the same seed for the same draw
        assert {d: exp.prefinetune_settings(variant, d)["seed"] for d in exp.draws} == seeds
    changed = Experiment.from_config(config(prefinetune={**DEMO["prefinetune"], "seed": 5}), REPO)
    assert changed.prefinetune_settings(MAIN, 1)["seed"] != seeds[1]  # derived from the config's seed too


def test_the_null_arm_is_the_main_method_with_shuffled_labels_on_its_task_counts():
    trained = [k for k in DEMO["task_counts"] if k > 0]
    exp = Experiment.from_config(config(null_arm={"task_counts": [trained[-1]]}), REPO)
    assert exp.prefinetune_settings(NULL) == {**exp.prefinetune_settings(MAIN), "labels": SHUFFLED}
    assert "labels" not in exp.prefinetune_settings(MAIN)
    assert exp.null_counts == [0, trained[-1]] and not exp.null_in_default  # k = 0: the shared baseline
    assert exp.models(NULL) == [(trained[-1], d) for d in exp.draws]
    assert {r.k for r in exp.curve_runs(NULL)} == {0, trained[-1]}
    assert {(r.variant, r.k) for r in exp.curve_runs(NULL) if r.k == 0} == {(MAIN, 0)}
    assert Experiment.from_config(config(null_arm={}), REPO).null_counts == exp.counts  # default: every k
    assert Experiment.from_config(config(null_arm=None), REPO).null_counts == []


def test_bad_null_arm():
    msg = config_error(config(null_arm={"task_counts": [0, 5]}))
    assert msg.startswith("config.yaml: null_arm.task_counts[1]: 5 is not one of task_counts"), msg
    msg = config_error(config(ablations={NULL: {"lr": 1e-4}}))
    assert msg.startswith(f"config.yaml: ablations.{NULL}: '{NULL}' names the null arm's curve"), msg


def test_a_sample_efficiency_target_in_the_pool_is_refused():
    """The study fine-tunes datasets held out of pre-finetuning (the paper's design)."""
    pooled = DEMO["pool"][2]
    msg = config_error(config(sample_efficiency={"targets": ["syn_target_mc", pooled]}))
    assert msg.startswith(f"config.yaml: sample_efficiency.targets[1]: {pooled} is in the pool"), msg
    msg = config_error(config(sample_efficiency={"percents": [50, 100]}))  # the default: the targets, in every subset
    assert msg.startswith(f"config.yaml: sample_efficiency.targets: {DEMO['targets'][0]} (the default: the targets) "
                          "is a target, which targets_in_pool puts in every subset"), msg
    # held_out takes the targets out of the pool: the study may use them
    Experiment.from_config(config(protocol="held_out", task_counts=[0, 3], null_arm=None, sample_efficiency={}), REPO)


def test_the_shipped_configs_hold_their_sample_efficiency_targets_out_of_the_pool():
    for path in ("config.yaml", "bart/config.yaml", "demo/config.yaml", "demo/bart/config.yaml"):
        cfg = yaml.safe_load((REPO / path).read_text())
        exp = Experiment.from_config(cfg, REPO)
        assert exp.efficiency_targets and not set(exp.efficiency_targets) & set(cfg["pool"]), path


def test_unknown_variant():
    exp = Experiment.from_config(DEMO, REPO)
    with pytest.raises(ConfigError, match="no_such"):
        exp.prefinetune_settings("no_such")


def test_finetune_settings():
    exp = Experiment.from_config(DEMO, REPO)
    s = exp.finetune_settings("syn_target_pair")
    assert s["epochs"] == DEMO["finetune"]["epochs"]
    assert s["lr"] == DEMO["finetune"]["lr"]
    assert s["max_length"] == DEMO["max_length"]
    assert "max_steps" not in s  # no cap unless the config sets one


def test_settings_hold_only_what_changes_a_result():
    """Log and checkpoint intervals and the evaluation batch size are run options, read by the job from the
    config, not settings (params); nor are the keys a stage never reads."""
    cfg = config()
    cfg["prefinetune"].update(eval_batch_size=7, max_answer_tokens=5, carry_heads=True, epochs=3)
    cfg["finetune"].update(log_every=3, checkpoint_every=4, eval_batch_size=5, seed=9, temperature=2.0)
    exp = Experiment.from_config(cfg, REPO)
    pre, fine = exp.prefinetune_settings(MAIN), exp.finetune_settings("syn_target_pair")
    for key in RUN_OPTIONS:
        assert key not in pre and key not in fine
    assert not {"eval_batch_size", "max_answer_tokens", "carry_heads", "epochs"} & set(pre)
    assert not {"seed", "temperature", "batches", "cap"} & set(fine)
    assert pre["seed"] == DEMO.get("prefinetune", {}).get("seed", 0) and pre["batches"] == "heterogeneous"
    assert run_options(cfg, "finetune") == {"log_every": 3, "checkpoint_every": 4, "eval_batch_size": 5}
    assert run_options(cfg, "prefinetune") == {"log_every": DEMO["prefinetune"]["log_every"],
                                               "checkpoint_every": DEMO["prefinetune"]["checkpoint_every"],
                                               "eval_batch_size": 7}


def test_per_target_overrides_change_only_that_target():
    cfg = config(finetune_overrides={"syn_target_span": {"epochs": 2, "lr": 5e-4, "batch_size": 8, "max_steps": 30}})
    exp = Experiment.from_config(cfg, REPO)
    pair, span = exp.finetune_settings("syn_target_pair"), exp.finetune_settings("syn_target_span")
    assert pair == Experiment.from_config(DEMO, REPO).finetune_settings("syn_target_pair")
    assert (span["epochs"], span["lr"], span["batch_size"], span["max_steps"]) == (2, 5e-4, 8, 30)
    overridden = ("epochs", "lr", "batch_size", "max_steps", "max_answer_tokens")
    assert {k: v for k, v in span.items() if k not in overridden} == {k: v for k, v in pair.items() if k not in overridden}
    # decoding answers is read by span targets only
    assert "max_answer_tokens" in span and "max_answer_tokens" not in pair


def test_bad_per_target_override():
    assert "finetune_overrides.syn_99" in config_error(config(finetune_overrides={"syn_99": {"epochs": 2}}))
    msg = config_error(config(finetune_overrides={"syn_target_pair": {"dropout": 0.2}}))
    assert "finetune_overrides.syn_target_pair" in msg and "dropout" in msg
    assert "finetune_overrides.syn_target_pair.epochs" in config_error(
        config(finetune_overrides={"syn_target_pair": {"epochs": 0}}))


# -- the registry --------------------------------------------------------------------------------------------
GOOD_ENTRY = {
    "source": {"generator": {"seed": 1, "train": 10, "validation": 5}},
    "type": "classification",
    "text": ["sentence"],
    "label": "label",
    "num_labels": 2,
    "metric": "accuracy",
}


def write_registry(tmp_path, **entries):
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump(entries))
    return path


def registry_error(path) -> str:
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    message = str(info.value)
    assert "\n" not in message, f"message is not one line: {message!r}"
    assert str(path) in message
    return message


def test_good_registry(tmp_path):
    reg = dict(GOOD_ENTRY, type="regression", num_labels=1, metric="pearson")
    path = write_registry(tmp_path, cls=GOOD_ENTRY, reg=reg,
                          pair=dict(GOOD_ENTRY, text=["a", "b"], splits={"validation": "test"}))
    tasks = load_registry(path)
    assert set(tasks) == {"cls", "reg", "pair"}
    assert tasks["pair"].text == ("a", "b")
    assert tasks["pair"].splits == {"train": "train", "validation": "test"}


def test_regression_with_several_labels(tmp_path):
    bad = dict(GOOD_ENTRY, type="regression", num_labels=2, metric="pearson")
    msg = registry_error(write_registry(tmp_path, sts=bad))
    assert "sts.num_labels" in msg


def test_classification_with_one_label(tmp_path):
    msg = registry_error(write_registry(tmp_path, one=dict(GOOD_ENTRY, num_labels=1)))
    assert "one.num_labels" in msg


def test_metric_not_matching_type(tmp_path):
    msg = registry_error(write_registry(tmp_path, cls=dict(GOOD_ENTRY, metric="pearson")))
    assert "cls.metric" in msg and "pearson" in msg
    reg = dict(GOOD_ENTRY, type="regression", num_labels=1, metric="accuracy")
    msg = registry_error(write_registry(tmp_path, reg=reg))
    assert "reg.metric" in msg


def test_unknown_registry_field(tmp_path):
    msg = registry_error(write_registry(tmp_path, cls=dict(GOOD_ENTRY, labels="label")))
    assert "cls" in msg and "labels" in msg


def test_unknown_metric_name(tmp_path):
    msg = registry_error(write_registry(tmp_path, cls=dict(GOOD_ENTRY, metric="bleu")))
    assert "cls.metric" in msg


def test_bad_task_name(tmp_path):
    msg = registry_error(write_registry(tmp_path, **{"Bad-Name": GOOD_ENTRY}))
    assert "Bad-Name" in msg


def test_registry_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_registry(tmp_path / "nope.yaml")


def test_demo_registry_loads():
    raw = yaml.safe_load((REPO / DEMO["registry"]).read_text())
    tasks = load_registry(REPO / DEMO["registry"])
    assert list(tasks) == list(raw)
    for name, task in tasks.items():
        assert task.text == tuple(raw[name]["text"])
        assert task.num_labels == raw[name].get("num_labels", 0)  # span tasks have none
        assert (task.type == "regression") == (task.num_labels == 1)


def test_paper_registry_pins_every_hub_revision_to_a_commit():
    """tasks.yaml: every hub dataset is pinned to a full commit sha (a branch such as main moves under a run)."""
    tasks = load_registry(REPO / "tasks.yaml")
    hub = {name: t.source for name, t in tasks.items() if "hub" in t.source}
    assert len(hub) == len(tasks) == 43  # 41 of the three encoder families, 2 summarization (BART)
    unpinned = {name: s.get("revision") for name, s in hub.items()
                if not re.fullmatch(r"[0-9a-f]{40}", str(s.get("revision")))}
    assert not unpinned
    mrqa = [t for t in tasks.values() if t.source["hub"] == "mrqa-workshop/mrqa"]
    assert len(mrqa) == 5 and all(t.answer_format == "mrqa" and "subset" in t.source["filter"] for t in mrqa)


def test_generation_settings_are_params_only_of_jobs_with_a_summarization_task():
    """label_smoothing and the summarization fields of a Task (its params) appear only where a job has a
    summarization task: adding the generation half reruns no finished job of the RoBERTa experiment."""
    roberta = Experiment.from_config(yaml.safe_load((REPO / "config.yaml").read_text()), REPO)
    bart = Experiment.from_config(yaml.safe_load((REPO / "bart" / "config.yaml").read_text()), REPO)
    assert "label_smoothing" not in roberta.prefinetune_settings(MAIN)
    assert "label_smoothing" not in roberta.finetune_settings("rte")
    assert bart.prefinetune_settings(MAIN)["label_smoothing"] == 0.1
    assert bart.finetune_settings("xsum")["label_smoothing"] == 0.1 and "label_smoothing" not in bart.finetune_settings("rte")
    assert "generation" not in params(roberta.tasks["rte"]) and "max_target_length" not in params(roberta.tasks["squad"])
    assert params(bart.tasks["rte"]) == params(roberta.tasks["rte"])
    xsum = params(bart.tasks["xsum"])
    assert xsum["generation"]["num_beams"] == 6 and xsum["max_target_length"] == 142


def test_report_to_wandb_needs_wandb_installed(monkeypatch):
    """A writer the training jobs could not import stops the config check, before any job starts."""
    import importlib.util

    cfg = config(report_to=["tensorboard", "wandb"])
    Experiment.from_config(cfg, REPO)  # installed here (the test extra)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert "report_to[1]: wandb is not installed" in config_error(cfg)


# -- reference models and the runtime each job asks for -------------------------------------------------------------
def test_reference_models_are_fine_tuned_like_k0_under_names_of_their_own(tmp_path):
    saved = tmp_path / "ref"
    saved.mkdir()
    (saved / "config.json").write_text('{"model_type": "bert"}')
    exp = Experiment.from_config(config(reference_models=[{"name": "ref", "path": str(saved)},
                                                          {"name": "hubbed", "hub": "org/m", "revision": "abc"}]), REPO)
    assert list(exp.reference_models) == ["ref", "hubbed"]
    runs = exp.reference_runs()
    k0 = [r for r in exp.curve_runs(MAIN) if r.k == 0]
    assert len(runs) == 2 * len(k0)
    assert {(r.target, r.seed) for r in runs if r.variant == "reference:ref"} == {(r.target, r.seed) for r in k0}
    assert Experiment.from_config(config(), REPO).reference_runs() == []  # none by default


@pytest.mark.parametrize("references, field, words", [
    ([{"name": "tiny-roberta", "hub": "org/m"}], "reference_models[0].name", "the model's own name"),
    ([{"name": "a", "hub": "org/m"}, {"name": "a", "hub": "org/n"}], "reference_models[1].name", "another reference"),
    ([{"name": "a", "path": "no/such/folder"}], "reference_models[0].path", "no such folder"),
    ([{"name": "a", "hub": "org/m", "path": "."}], "reference_models[0]", "hub and path given at once"),
    ([{"name": "a"}], "reference_models[0]", "no hub or path given"),
    ([{"name": "a/b", "hub": "org/m"}], "reference_models[0].name", "does not match"),
])
def test_bad_reference_model(references, field, words):
    msg = config_error(config(reference_models=references))
    assert f": {field}:" in msg and words in msg


def test_runtime_floor_must_exceed_the_warning():
    assert Experiment.from_config(config(plan={"runtime_floor": "6m"}), REPO).config["plan"]["runtime_safety"] == 2.0
    assert "plan.runtime_floor: 5m must be longer than the 5 minutes" in config_error(config(plan={"runtime_floor": "5m"}))
    assert "plan.runtime_safety" in config_error(config(plan={"runtime_safety": 0.5}))
    assert "plan.runtime_floor" in config_error(config(plan={"runtime_floor": "15"}))


def test_the_plan_needs_a_peak_for_the_precision_each_job_trains_in_on_its_gpu():
    """plan.gpu must be known; plan.precision, or a job's own precision under plan.precision auto, must be one the GPU
    has (a V100 has no bf16); a measured plan.tokens_per_s needs neither."""
    assert "plan.gpu: p100: no peak known" in config_error(config(plan={"gpu": "p100"}))
    assert "plan.precision: bf16: a v100 has no bf16 peak" in config_error(config(plan={"gpu": "v100", "precision": "bf16"}))
    msg = config_error(config(plan={"gpu": "v100"}, finetune={**DEMO["finetune"], "precision": "bf16"}))
    assert msg.startswith("config.yaml: finetune.precision: bf16 on a v100") and "auto trains in fp16 there" in msg
    Experiment.from_config(config(plan={"gpu": "v100"}), REPO)  # auto: fp16 on a V100
    Experiment.from_config(config(plan={"gpu": "p100", "tokens_per_s": 1000.0}), REPO)


def test_run_folders_with_an_unset_variable_are_refused(monkeypatch):
    monkeypatch.delenv("NO_SUCH_SCRATCH", raising=False)
    assert "checkpoints: $NO_SUCH_SCRATCH/ckpt: an environment variable" in config_error(config(checkpoints="$NO_SUCH_SCRATCH/ckpt"))
    monkeypatch.setenv("NO_SUCH_SCRATCH", "/scratch/me")
    exp = Experiment.from_config(config(checkpoints="$NO_SUCH_SCRATCH/ckpt", hf_home="~/hf"), REPO)
    assert checkpoint_root(exp.config) == "/scratch/me/ckpt" and hf_home(exp.config) == str(Path.home() / "hf")
    assert checkpoint_root(DEMO) == "checkpoints" and hf_home(DEMO) is None
