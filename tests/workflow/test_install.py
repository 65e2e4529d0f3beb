"""The install for a cluster. The tested setup is the README's venv (the Slurm test checks that jobs run with the
Python that runs Snakemake). For --software-deployment-method conda, envs/prefinetune.yaml must install the
package itself: conda cannot run on the development machine, so its pip step is run here as conda runs it (the
pip entries in a requirements file in the folder of Snakemake's copy of the env file, pip started there), with the
variable the workflow sets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from workflow_helpers import REPO

ENV = REPO / "envs" / "prefinetune.yaml"


def pip_entries() -> list[str]:
    return next(d["pip"] for d in yaml.safe_load(ENV.read_text())["dependencies"] if isinstance(d, dict))


def test_the_conda_env_installs_this_repository_from_where_conda_runs_pip(tmp_path):
    """conda writes the pip entries to a requirements file beside the env file it was given (Snakemake's copy in
    <workdir>/.snakemake/conda/) and runs pip from there: the entry resolves to this repository, editable."""
    conda_dir = tmp_path / "work" / ".snakemake" / "conda"
    conda_dir.mkdir(parents=True)
    (conda_dir / "condaenv.test.requirements.txt").write_text("\n".join(pip_entries()) + "\n")
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation", "--no-index",
           "--quiet", "--report", str(report), "-r", "condaenv.test.requirements.txt"]
    result = subprocess.run(cmd, cwd=conda_dir, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PREFINETUNE_REPO": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    assert [i["metadata"]["name"] for i in installs] == ["prefinetune"]
    assert installs[0]["download_info"] == {"url": REPO.as_uri(), "dir_info": {"editable": True}}
    # without the variable the entry names no folder: the workflow must set it (next test)
    unset = {k: v for k, v in os.environ.items() if k != "PREFINETUNE_REPO"}
    assert subprocess.run(cmd, cwd=conda_dir, capture_output=True, text=True, timeout=300, env=unset).returncode != 0


def test_the_workflow_tells_pip_where_the_repository_is(tmp_path):
    """Building the DAG (what Snakemake does before it creates conda environments) sets PREFINETUNE_REPO to the
    repository of the Snakefile, in the process whose children create the environments."""
    (tmp_path / "config.yaml").write_text((REPO / "demo" / "config.yaml").read_text())
    code = ("import os; from pathlib import Path; from snakemake.api import SnakemakeApi; "
            "from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings, "
            "StorageSettings\n"
            "with SnakemakeApi(OutputSettings()) as api:\n"
            f"    api.workflow(resource_settings=ResourceSettings(), config_settings=ConfigSettings(), "
            f"storage_settings=StorageSettings(), snakefile=Path({str(REPO / 'Snakefile')!r}), "
            f"workdir=Path({str(tmp_path)!r})).dag(dag_settings=DAGSettings())\n"
            "    print('PREFINETUNE_REPO=' + os.environ['PREFINETUNE_REPO'])\n")
    env = {k: v for k, v in os.environ.items() if k != "PREFINETUNE_REPO"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"PREFINETUNE_REPO={REPO}" in result.stdout.splitlines()


def test_the_conda_env_has_every_dependency_of_the_package():
    """pyproject.toml's dependencies, each from conda (under its conda name) or, for Snakemake and its Slurm
    plugin, from pip when it installs the package; nothing else the package does not need."""
    conda = {re.split(r"[<>=]", d)[0] for d in yaml.safe_load(ENV.read_text())["dependencies"] if isinstance(d, str)}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    needed = {re.split(r"[<>=\s]", d)[0] for d in project}
    conda_name = {"torch": "pytorch", "matplotlib": "matplotlib-base"}
    from_pip = {"snakemake", "snakemake-executor-plugin-slurm"}
    assert {conda_name.get(n, n) for n in needed - from_pip} == conda - {"python", "pip"}


def test_a_profile_setting_the_installed_plugin_lacks_stops_snakemake_before_the_workflow(tmp_path):
    """What an older plugin does with a newer setting of slurm/config.yaml (for example
    slurm-disable-memory-fudge, which 2.8.0 brought): Snakemake refuses the whole profile while it parses its
    arguments, before the workflow's own code runs, with its usage and one line naming the setting. The pins of
    pyproject.toml keep an older plugin out."""
    (tmp_path / "profile").mkdir()
    profile = (REPO / "slurm" / "config.yaml").read_text() + "slurm-not-a-setting: true\n"
    (tmp_path / "profile" / "config.yaml").write_text(profile)
    result = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"),
                             "--directory", str(REPO / "demo"), "--profile", str(tmp_path / "profile"), "-n"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == "snakemake: error: unrecognized arguments: --slurm-not-a-setting=True"
