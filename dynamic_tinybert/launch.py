"""The `dynamic-tinybert` command's entry point. It imports the command (torch, the model code)
inside, so that Ctrl-C while those load ends the way it does later: one line, exit status 130."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from .cli import main as command
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return command()
