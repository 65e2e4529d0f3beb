"""Atomic outputs: a killed job never leaves a file or folder that looks finished.

Outputs get the permissions the umask gives any new file or folder (tempfile's own 0700 is undone), so a
lab sharing a project directory can read each other's datasets and models.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary lives in the same folder, so the final ``os.replace`` is atomic on POSIX
    file systems. A directory target that already exists (e.g. created empty by Snakemake) is
    replaced as a whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it 0700; a folder output gets what mkdir would give
    target = tmp if is_dir else tmp / path.name
    try:
        yield target
        if is_dir:
            if path.is_dir():
                shutil.rmtree(path)
            os.replace(tmp, path)
        else:
            os.replace(target, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def current_umask() -> int:
    """The process's umask (os.umask can only be read by setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as pretty JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def digest(path: str | os.PathLike, skip: tuple[str, ...] = ("prefinetune.json", "state.json")) -> str:
    """A content hash of a file or folder (every file's relative path and bytes, in a fixed order): the identity
    of what a job read, so that a checkpoint is never resumed on other inputs. ``skip``: files that record how
    an output was made rather than what it holds (a model's training summary with its timings, the datasets
    library's state.json with its fingerprints), so that an output rebuilt to the same bytes keeps its identity."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in skip) if root.is_dir() else [root]
    h = hashlib.blake2b(digest_size=16)
    for file in files:
        h.update(str(file.relative_to(root) if root.is_dir() else file.name).encode() + b"\0")
        with open(file, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()
