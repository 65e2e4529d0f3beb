"""Every `snakemake ...` command of the README and docs/ runs as written, from the root of a fresh clone.

The plan and the clean-up of checkpoints run for real (offline, seconds). Every other command runs as a dry run
(`-n`), the cluster ones through the Slurm profile they name, with `--quiet` (the DAG is built, the job listing is
not printed: test_dag.py checks what the jobs ask for). Report options are left out of the dry runs: a report
needs the run's outputs (the end-to-end test makes the demo's). Commands that differ only in their targets share
one dry run; a group that fails is run again command by command, so that a failure names each file and line whose
command does not run.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

from snakemake.cli import get_argument_parser

from workflow_helpers import REPO, SNAKEMAKE

DOCUMENTS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")), "results/README.md"]
REPORT_OPTIONS = {"--report": 1, "--report-after-run": 0}  # option: how many values follow it
DRY = ["-n", "--quiet", "all"]


def documented_commands() -> dict[str, list[str]]:
    """{command: [file:line, ...]} for every `snakemake ...` line of a fenced block (without its comment) and every
    inline code span that holds one, in DOCUMENTS."""
    found: dict[str, list[str]] = {}
    for name in DOCUMENTS:
        lines = (REPO / name).read_text().splitlines()
        fenced, prose = False, []
        for number, line in enumerate(lines, 1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
                prose.append("")
            elif fenced:
                command = line.split(" #")[0].strip()
                if command.startswith("snakemake "):
                    found.setdefault(" ".join(command.split()), []).append(f"{name}:{number}")
                prose.append("")
            else:
                prose.append(line)
        text = "\n".join(prose)  # inline code spans may wrap onto the next line
        for match in re.finditer(r"(?<!`)`(snakemake\s[^`]+)`", text):
            number = text.count("\n", 0, match.start()) + 1
            found.setdefault(" ".join(match[1].split()), []).append(f"{name}:{number}")
    order = {name: i for i, name in enumerate(DOCUMENTS)}
    place = lambda p: (order[p.rsplit(":", 1)[0]], int(p.rsplit(":", 1)[1]))  # noqa: E731
    return {command: sorted(places, key=place) for command, places in found.items()}


def split(command: str) -> tuple[list[str], list[str]]:
    """(options, targets) of a documented command, as Snakemake's own parser reads it; the targets trail."""
    words = shlex.split(command)[1:]
    targets = get_argument_parser().parse_args(words).targets or []
    if targets and words[-len(targets):] != list(targets):
        raise ValueError(f"{command}: its targets do not come last")
    return words[: len(words) - len(targets)], list(targets)


def dry_run_options(options: list[str]) -> tuple[str, ...]:
    """A command's options for its dry run: without the report options and the dry-run flag (DRY adds it)."""
    out, skip = [], 0
    for word in options:
        if skip:
            skip -= 1
        elif word in REPORT_OPTIONS:
            skip = REPORT_OPTIONS[word]
        elif word not in ("-n", "--dry-run", "--dryrun"):
            out.append(word)
    return tuple(out)


def run(clone: Path, words: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([SNAKEMAKE, *words], capture_output=True, text=True, timeout=600, cwd=clone)


def last_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {result.returncode}"


def test_every_documented_snakemake_command_runs_as_written(tmp_path):
    clone = tmp_path / "clone"  # the repository's files as a fresh clone has them (tracked and not ignored)
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, clone / name)
    commands = documented_commands()
    assert any("--profile slurm" in c for c in commands) and any(c.endswith(" plan") for c in commands)
    failures, groups = [], {}
    for command, places in commands.items():
        try:
            options, targets = split(command)
        except (SystemExit, ValueError) as error:  # argparse exits on an option Snakemake does not know
            failures.append(f"{', '.join(places)}: {command}: Snakemake does not read it ({error})")
            continue
        if targets in (["plan"], ["clean_checkpoints"]):  # the bill, and a clean-up with nothing to clean: for real
            result = run(clone, shlex.split(command)[1:])
            if result.returncode != 0:
                failures.append(f"{', '.join(places)}: {command}: {last_error(result)}")
            continue
        key = dry_run_options(options)
        groups.setdefault(key, []).append((command, places, targets or ["all"]))  # all: the default target
    for options, members in groups.items():
        targets = list(dict.fromkeys(t for _, _, ts in members for t in ts))
        if run(clone, [*targets, *options, *DRY]).returncode == 0:
            continue
        for command, places, own in members:
            result = run(clone, [*own, *options, *DRY])
            if result.returncode != 0:
                failures.append(f"{', '.join(places)}: {command}: {last_error(result)}")
    assert not failures, "documented commands that do not run:\n" + "\n".join(failures)
