"""One training process, or one of several started by torchrun or `accelerate launch`."""

from __future__ import annotations

import gc
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from .devices import resolve_device


@dataclass
class Processes:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def from_main(self, value: int) -> int:
        """The main process's `value`, in every process (decisions that must agree)."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.long, device=self.device)
        dist.broadcast(tensor, 0)
        return int(tensor.item())

    def close(self) -> None:
        """Take the process group down before exit: left to the interpreter's shutdown, gloo's
        threads can abort the process ("terminate called without an active exception"). What
        still holds the group (a model wrapped for several processes, in a reference cycle) is
        collected first, so that nothing frees it during shutdown."""
        if self.world > 1 and dist.is_initialized():
            gc.collect()
            dist.destroy_process_group()


def start_processes(device: str) -> Processes:
    """One process, or one of several started by torchrun / accelerate launch (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device != "auto":
        device = resolve_device(device).type
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    target = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(target)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Processes(dist.get_rank() if world > 1 else 0, world, target)


def launch(processes: int, argv: list[str]) -> int:
    """The command `dynamic-tinybert ARGV` on `processes` processes of this machine, started by
    torchrun (each sees WORLD_SIZE, and runs as one of them); its exit status. Where a process
    fails it has said why: torchrun's own traceback and log lines are left out, and the first
    failure's exit status is returned."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    for name in list(logging.root.manager.loggerDict):  # each has its own level
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    # each process an equal share of the cores for its threads (torchrun would give each one)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // processes)))
    command = ["--standalone", "--nproc-per-node", str(processes), "-m", "dynamic_tinybert", *argv]
    try:
        run(parse_args(command))
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        if failure.exitcode < 0:  # ended by a signal
            print(f"process {rank} of {processes} was ended by signal {-failure.exitcode}", file=sys.stderr)
            return 128 - failure.exitcode
        return failure.exitcode
    except SignalException as stopped:  # Ctrl-C or SIGTERM, passed on to the processes: the first says so
        return 128 + int(stopped.sigval)  # 130, 143: as a shell reports it
    return 0


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split()}


def cpu_has_bf16() -> bool:
    """Whether the CPU multiplies bf16 natively (AVX512-BF16 or AMX): autocast then trains about
    1.5x faster than fp32 (measured on a Zen 4 core: 13 against 9 examples a second)."""
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_has_vnni() -> bool:
    """Whether the CPU multiplies int8 with 32-bit accumulation (AVX512-VNNI, AVX-VNNI or AMX),
    so activations may use all 8 bits without the 16-bit saturation of older AVX2 products."""
    return bool(_cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def check_ranks_agree(trainee: torch.nn.Module, procs: Processes, log) -> None:
    """Every process must end with the same weights; say so in the log."""
    if procs.world == 1:
        return
    total = torch.stack([p.detach().double().sum() for p in trainee.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(total) for _ in range(procs.world)]
    dist.all_gather(gathered, total)
    agree = all(torch.equal(g, gathered[0]) for g in gathered)
    log({"event": "ranks", "world": procs.world, "agree": agree, "checksums": [float(g) for g in gathered]})
    if not agree:
        raise RuntimeError(f"processes ended with different weights: {[float(g) for g in gathered]}")
