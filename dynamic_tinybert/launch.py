"""The `dynamic-tinybert` command's entry point. It imports the command (torch, the model code)
inside, so that Ctrl-C or SIGTERM while those load ends the way it does later: one line, exit
status 130 or 143 (`serve`: a clean stop, 0)."""

from __future__ import annotations

import signal
import sys

# the signals held while the command imports, where nobody set a handler of their own
_DEFAULT = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


def main() -> int:
    # a signal during the imports is held until they end: a KeyboardInterrupt raised inside a C++
    # extension's start-up (torch's) aborts the interpreter ("terminate called ...", status -6)
    # instead of reaching the except below, and SIGTERM would end it without a word (-15)
    received: list[int] = []
    held = {sig: default for sig, default in _DEFAULT.items() if signal.getsignal(sig) is default}
    for sig in held:
        signal.signal(sig, lambda signum, _: received.append(signum))
    try:
        from .cli import main as command
    except KeyboardInterrupt:  # a handler of the caller's raised it
        received.append(signal.SIGINT)
    finally:
        for sig, default in held.items():
            signal.signal(sig, default)
    if signal.SIGINT in received:
        print("interrupted", file=sys.stderr)
        return 130
    if received:
        if sys.argv[1:2] == ["serve"]:  # as SIGTERM while the model loads: nothing was in flight
            # the line server._exit_cleanly gives (it cannot be imported from there: torch)
            print("dynamic-tinybert serve: stopped before it started serving", file=sys.stderr)
            return 0
        print("terminated", file=sys.stderr)
        return 143
    return command()
