"""Settings dataclasses as command-line options: one declaration of each setting, its help, its
default and its checks, read by argparse and by code alike.

Every settings class checks itself in one way: a `check()` method that raises its module's
error (a ValueError the CLI reports as one line, exit 2). `settings_from` calls it for the command
line; the functions that take settings from code (`train`, `search`, `create_app`,
`QuestionAnswerer.__call__`) call it on what they are given.

    @dataclass
    class SearchSettings:
        grid: float = option("step of the per-layer shares", default=0.05)

    add_dataclass_options(parser, SearchSettings)   # --grid GRID  step ... (default: 0.05)
    settings = settings_from(args, SearchSettings)
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Any


class UsageError(Exception):
    """Bad input from the command line; printed as one line, exit code 2."""


def check_count(value: int | None, option: str, least: int = 1, note: str = "") -> None:
    """A count from the command line (None: not given) is at least `least`: 0 questions leave
    nothing to do, and a negative one would slice off the last ones instead.

    >>> check_count(2, "--limit") is check_count(None, "--limit") is None
    True
    """
    if value is not None and value < least:
        raise UsageError(f"{option} must be at least {least}, got {value}{note}")


def check_output_folder(path: str | Path, option: str, error: type[Exception] = UsageError) -> None:
    """A folder the command will write in is refused now, not after the work, where a file is in
    its place or in the place of a folder above it.

    >>> import tempfile
    >>> file = Path(tempfile.mkstemp()[1])
    >>> check_output_folder(file / "model", "--out")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    dynamic_tinybert.options.UsageError: --out .../model: ... is a file, not a folder; give another path
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{option} {path} is a file; give a folder")
    above = next(p for p in path.absolute().parents if p.exists())  # the nearest that exists
    if not above.is_dir():
        raise error(f"{option} {path}: {above} is a file, not a folder; give another path")


def option(help: str, **metadata: Any):
    """A settings field that is also a command-line option: `help`, and optionally `default`,
    `required`, `choices` and `nargs`."""
    return field(default=metadata.pop("default", None), metadata={"help": help, **metadata})


def add_dataclass_options(parser: argparse.ArgumentParser, settings_class, names=None) -> None:
    """One option per dataclass field (or per field in `names`), named after it, with the help,
    choices and nargs of its metadata; the type follows the field's annotation, and the help
    shows the default."""
    for f in dataclasses.fields(settings_class):
        if names is not None and f.name not in names:
            continue
        meta = dict(f.metadata)
        flag = "--" + f.name.replace("_", "-")
        options = {"dest": f.name, "help": meta.get("help"), "required": meta.get("required", False)}
        if f.type == "bool":
            parser.add_argument(flag, action="store_true", **options)
            continue
        numeric = int if f.type.startswith(("int", "list[int]")) else float
        kind = numeric if f.type.startswith(("int", "list[int]", "float")) else str
        options.update(type=kind, default=None if options["required"] else f.default)
        if options["default"] is not None and "default" not in (options["help"] or ""):
            options["help"] = f"{options['help']} (default: {options['default']})"
        for key in ("choices", "nargs"):
            if key in meta:
                options[key] = meta[key]
        parser.add_argument(flag, **options)


def settings_from(args: argparse.Namespace, settings_class):
    """The settings dataclass filled from the options add_dataclass_options made, and checked."""
    names = {f.name for f in dataclasses.fields(settings_class)}
    settings = settings_class(**{k: v for k, v in vars(args).items() if k in names})
    if hasattr(settings, "check"):
        settings.check()
    return settings
