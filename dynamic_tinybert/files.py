"""Writing files and folders whole or not at all, the one way the package does it.

A process killed at any moment leaves either the old file (or folder) or the new one, never half
of one: the new one is made at a hidden path beside its target and renamed into place.

    atomic_write(folder / "frontier.json", lambda path: path.write_text(text))
    atomic_write(folder, lambda staging: fill(staging), folder=True)
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(target: Path, write: Callable[[Path], object], folder: bool = False) -> Path:
    """Make `target` by `write(staging)`, then rename the staging file (or, with folder=True,
    the staging folder, created empty for `write` to fill) over it, making the folders above it
    where they are missing. A failed write leaves the target as it was and no staging behind.
    A target that is neither a file nor a folder (a device, a pipe), or a symbolic link to a file,
    is written in place, through the link.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> atomic_write(root / "a.txt", lambda p: p.write_text("new")).read_text()
    'new'
    >>> atomic_write(root / "b" / "c.txt", lambda p: p.write_text("new")).read_text()
    'new'
    >>> sorted(p.name for p in root.iterdir())
    ['a.txt', 'b']
    """
    target = Path(target)
    if written_in_place(target, folder):
        write(target)
        return target
    check_target(target, folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if folder:
            staging.mkdir(parents=True)
        write(staging)
        replace(staging, target)
    finally:
        _remove(staging)
    return target


def written_in_place(target: Path, folder: bool = False) -> bool:
    """Whether atomic_write writes `target` in place, never replacing it: a device, a pipe, or (for
    a file) a symbolic link, whose replacement would replace the link, not its file (/dev/stdout)."""
    linked = target.is_symlink() and not folder
    return linked or (target.exists() and not (target.is_file() or target.is_dir()))


def check_target(target: Path, folder: bool = False) -> None:
    """Refuse to write a file where a folder is (it would be replaced, and all in it lost), or a
    folder where a file is: say so before any work is done.

    >>> import tempfile
    >>> check_target(Path(tempfile.mkdtemp()))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    IsADirectoryError: [Errno 21] is a folder, where a file is to be written; give a file path: '...'
    """
    target = Path(target)
    if not folder and target.is_dir():
        raise IsADirectoryError(
            errno.EISDIR, "is a folder, where a file is to be written; give a file path", str(target)
        )
    if folder and target.exists() and not target.is_dir():
        raise NotADirectoryError(
            errno.ENOTDIR, "is a file, where a folder is to be written; give another path", str(target)
        )


def check_writable(folder: Path) -> None:
    """Fail now, not after long work, where new files cannot be made in `folder` (read-only, not
    ours, a full disk)."""
    probe = Path(folder) / f".write-probe.{uuid.uuid4().hex[:8]}"
    try:
        probe.touch()
    except OSError as error:
        raise OSError(error.errno, f"cannot write in this folder ({error.strerror})", str(folder)) from None
    probe.unlink()


def saved_state(path: Path, key: dict) -> dict | None:
    """A search's state file, if it was written by a search of these settings (`key`, as saved
    in it under "settings"); None, with a note, for a state of other settings or an unreadable one.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "state.json"
    >>> _ = path.write_text(json.dumps({"settings": {"seed": 1}, "iteration": 3}))
    >>> saved_state(path, {"seed": 1})["iteration"], saved_state(path.with_name("none.json"), {})
    (3, None)
    """
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except ValueError:
        state = {}
    if state.get("settings") != json.loads(json.dumps(key)):
        print(f"{path} is from a search with other settings; starting afresh", file=sys.stderr)
        return None
    return state


def replace(staging: Path, target: Path) -> None:
    """Rename a finished file or folder over `target`; an existing target folder is moved aside
    first and removed after (a folder cannot be renamed over a full one)."""
    if not (target.is_dir() and not target.is_symlink()):
        os.replace(staging, target)
        return
    if not staging.is_dir():
        check_target(target)  # never a folder's contents lost to a file
    old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
    os.replace(target, old)
    os.replace(staging, target)
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
