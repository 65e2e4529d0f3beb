"""The Slurm executor plugin's versions: the profile's settings against the releases that brought them, the pins,
and the one line that stops a Slurm run with a plugin outside them (prefinetune.slurm_plugin). The fixes of its job
arrays and the `jobs` check run on the test cluster (tests/e2e/test_slurm_cluster.py)."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import yaml

from prefinetune import slurm_plugin
from workflow_helpers import REPO

# The plugin release that brought each of its settings that slurm/config.yaml uses, from the plugin's history
# (github.com/snakemake/snakemake-executor-plugin-slurm: the first tag whose ExecutorSettings has the field).
FIRST_RELEASE = {
    "slurm-array-jobs": "2.6.0",
    "slurm-array-limit": "2.6.0",
    "slurm-disable-memory-fudge": "2.8.0",
    "slurm-requeue": "0.11.0",
    "slurm-efficiency-report": "1.5.0",
    "slurm-efficiency-report-path": "1.5.0",
}


def profile_settings() -> list[str]:
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    return [key for key in profile if key.startswith("slurm-")]


def test_the_supported_range_starts_at_the_release_of_the_profiles_newest_setting():
    assert sorted(profile_settings()) == sorted(FIRST_RELEASE)  # a new setting needs its release here
    newest = max(FIRST_RELEASE.values(), key=slurm_plugin.release)
    assert slurm_plugin.SUPPORTED[0] == newest


def test_every_setting_of_the_profile_is_one_of_the_installed_plugin():
    from snakemake_executor_plugin_slurm import ExecutorSettings

    fields = {f"slurm-{f.name.replace('_', '-')}" for f in dataclasses.fields(ExecutorSettings)}
    assert set(profile_settings()) <= fields


def test_pyproject_and_the_conda_env_pin_the_supported_range():
    low, high = slurm_plugin.SUPPORTED
    pin = f"{slurm_plugin.PLUGIN}>={low},<{high}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((REPO / "envs" / "prefinetune.yaml").read_text())["dependencies"]
    pip = next(d["pip"] for d in env if isinstance(d, dict))
    assert pin in project and pin in pip
    snakemake = [d for d in project if re.match(r"snakemake[<>=]", d)]
    assert snakemake == ["snakemake>=9.0,<10"] and snakemake[0] in pip


def test_a_plugin_outside_the_range_gets_one_line():
    assert slurm_plugin.unsupported("2.8.0") is None and slurm_plugin.unsupported("2.9.3") is None
    assert slurm_plugin.unsupported("2.8.0.post1") is None
    for old_or_new in ("2.7.1", "1.9.2", "3.0.0"):
        line = slurm_plugin.unsupported(old_or_new)
        assert line == (f"snakemake-executor-plugin-slurm {old_or_new} is installed, but slurm/config.yaml and this "
                        "workflow need >=2.8.0,<3: pip install 'snakemake-executor-plugin-slurm>=2.8.0,<3'")


def test_the_gpu_type_node_feature_and_qos_keys_of_the_profile_are_resources_the_plugin_reads():
    """The resource keys the profile offers, commented, under each GPU rule (gpu_model, constraint, qos) are ones
    the installed plugin turns into sbatch options: its source reads each with job.resources.get("<key>")."""
    import snakemake_executor_plugin_slurm

    text = (REPO / "slurm" / "config.yaml").read_text()
    offered = set(re.findall(r"^\s+# (gpu_model|constraint|qos): ", text, re.M))
    assert offered == {"gpu_model", "constraint", "qos"}
    for rule in ("prefinetune", "finetune", "finetune_baseline", "finetune_fraction", "finetune_fraction_baseline",
                 "finetune_reference"):
        block = text.split(f"\n  {rule}:", 1)[1].split("\n  finetune", 1)[0]
        assert all(f"# {key}: " in block for key in offered), rule
    source = "".join(p.read_text() for p in Path(snakemake_executor_plugin_slurm.__file__).parent.glob("*.py"))
    for key in offered:
        assert f'resources.get("{key}")' in source, key
