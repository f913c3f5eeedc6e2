"""train: Ctrl-C or SIGTERM (a scheduler taking the machine back) stops a run at the end of its
current optimizer step, with its state saved there, so the same command resumes with no step lost.
A second Ctrl-C stops at once, back to the state saved last. (On several processes each one gets
Ctrl-C twice, from the terminal and from torchrun, so there the second one is not counted;
torchrun stops them by SIGKILL if they have not stopped within 30 s.)"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .processes import Processes

NAMES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
NOTICE = "stopping after this step, to save the state there (the same command then resumes from it)"


class Stopped(KeyboardInterrupt):
    """A run stopped between two steps by a signal, its state saved; `status` is what a shell
    reports for that signal (130, 143)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.status = 128 + signum


class StopRequests:
    """The signal that asked the run to stop, if any; set by the handlers, read between steps."""

    def __init__(self, procs: Processes):
        self.procs = procs
        self.signum = 0

    def handle(self, signum: int, frame) -> None:
        again = signum == signal.SIGINT and self.procs.world == 1
        if self.signum:
            if again and self.signum == signal.SIGINT:
                raise KeyboardInterrupt  # the second Ctrl-C: the user will not wait for the step
            return
        self.signum = signum
        if self.procs.main:
            # os.write: a print here could land inside a print the handler interrupted; at a
            # terminal, below the progress bar's line
            said = NOTICE.replace(")", "; Ctrl-C again stops at once)") if again else NOTICE
            os.write(2, ("\n" if os.isatty(2) else "").encode() + said.encode() + b"\n")

    def agreed(self) -> int:
        """The stopping signal of any process (0: none), in every process, so that all of them
        save the same step and stop together."""
        if self.procs.world == 1:
            return self.signum
        import torch
        import torch.distributed as dist

        flag = torch.tensor([self.signum], dtype=torch.long, device=self.procs.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())


@contextmanager
def stop_requests(procs: Processes) -> Iterator[StopRequests]:
    """Ctrl-C and SIGTERM recorded instead of raised while the block runs. Signal handlers exist
    only in the main thread: elsewhere (train() called from a thread) nothing changes."""
    requests = StopRequests(procs)
    if threading.current_thread() is not threading.main_thread():
        yield requests
        return
    previous = {signum: signal.signal(signum, requests.handle) for signum in NAMES}
    try:
        yield requests
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stopped(signum: int, step: int, where: str) -> Stopped:
    said = f"{NAMES[signum]} after step {step}, its state saved in {where}"
    return Stopped(signum, f"{said}: the same command resumes from there")
