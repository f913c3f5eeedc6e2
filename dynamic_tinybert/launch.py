"""The `dynamic-tinybert` command's entry point. It imports the command (torch, the model code)
inside, so that Ctrl-C while those load ends the way it does later: one line, exit status 130."""

from __future__ import annotations

import signal
import sys


def main() -> int:
    # Ctrl-C during the imports is held until they end: a KeyboardInterrupt raised inside a C++
    # extension's start-up (torch's) aborts the interpreter ("terminate called ...", status -6)
    # instead of reaching the except below
    interrupted = []
    hold = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if hold:
        signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        from .cli import main as command
    except KeyboardInterrupt:  # a handler of the caller's raised it
        interrupted.append(True)
    finally:
        if hold:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if interrupted:
        print("interrupted", file=sys.stderr)
        return 130
    return command()
