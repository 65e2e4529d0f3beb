"""Atomic outputs: a killed job never leaves a file or folder that looks finished.

An output is written into a temporary sibling (``.<name>.<random>.tmp``), its files and folders are fsynced,
and only then is it renamed into place, and the folder holding it fsynced: after a node crash the name points
at complete bytes, never at a short file. A folder that already exists is renamed aside (``.<name>.old``) before
the new one takes its name, so that at every instant one of the two exists; a checkpoint folder is removed the
same way (:func:`remove_tree`). A writer first removes the temporaries a killed writer of the same path left
behind.

Outputs get the permissions the umask gives any new file or folder (tempfile's own 0700 is undone), so a
lab sharing a project directory can read each other's datasets and models.
"""

from __future__ import annotations

import contextlib
import glob
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

    The temporary lives in the same folder, so the final rename is atomic on POSIX file systems; what was
    written is on disk (fsync) before it gets the name. A directory target that already exists (e.g. created
    empty by Snakemake) is replaced as a whole, without an instant in which neither exists.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it 0700; a folder output gets what mkdir would give
    target = tmp if is_dir else tmp / path.name
    try:
        yield target
        sync_tree(target)
        if is_dir:
            replace_tree(tmp, path)
        else:
            os.replace(target, path)
            fsync(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def sync_tree(path: Path) -> None:
    """fsync a file, or every file and folder under a folder: what was written is on disk, not only cached."""
    for p in [path] if path.is_file() else [*(p for p in path.rglob("*") if not p.is_symlink()), path]:
        fsync(p)


def fsync(path: Path) -> None:
    """fsync one file or folder (a folder: its entries, so a rename into it survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def aside(path: Path) -> Path:
    """Where a folder waits while it is replaced or removed: ``.<name>.old`` beside it."""
    return path.with_name(f".{path.name}.old")


def replace_tree(new: Path, path: Path) -> None:
    """Give folder ``new`` the name ``path``: an existing ``path`` is renamed aside first and deleted last."""
    old = aside(path)
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        os.rename(path, old)
    os.replace(new, path)
    fsync(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def remove_tree(path: Path) -> None:
    """Delete a folder: renamed aside at once, so that a kill during the deletion leaves it whole (a checkpoint
    folder: ``checkpoint.recover`` takes its checkpoint back)."""
    path, old = Path(path), aside(Path(path))
    if not path.exists():
        return
    if old.exists():
        shutil.rmtree(old)
    os.rename(path, old)
    fsync(path.parent)
    shutil.rmtree(old)


def remove_temporaries(path: Path) -> None:
    """Delete what a killed writer of ``path`` left: its temporary siblings ``.<name>.<random>.tmp``."""
    for tmp in Path(path).parent.glob(f".{glob.escape(Path(path).name)}.*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


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
