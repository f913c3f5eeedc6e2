"""Measured speed on this machine: latency of one window, throughput of batches of 32."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .data import batches_by_length, collate
from .lengths import Lengths
from .tokenizer import Window


def machine() -> str:
    """The processor, threads and library versions, for reports."""
    cpu = platform.processor() or platform.machine()
    try:
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    if torch.cuda.is_available():
        cpu += f"; {torch.cuda.get_device_name()}"
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def latency_ms(
    model, windows: Sequence[Window], lengths: Lengths | None, device: torch.device, **options
) -> float:
    """Median time of one forward pass on one window, over the given windows (milliseconds);
    options go to the model (selector=...)."""
    times = []
    with torch.inference_mode():
        model(**collate([windows[0]], device), lengths=lengths, **options)  # warm-up
        for window in windows:
            inputs = collate([window], device)
            _sync(device)
            began = time.perf_counter()
            model(**inputs, lengths=lengths, **options)
            _sync(device)
            times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def throughput(
    model,
    windows: Sequence[Window],
    lengths: Lengths | None,
    device: torch.device,
    batch_size: int = 32,
    **options,
) -> float:
    """Windows per second over all the windows, in batches sorted by length; options go to the
    model (selector=...)."""
    batches = [
        collate([windows[i] for i in b], device)
        for b in batches_by_length([len(w) for w in windows], batch_size)
    ]
    with torch.inference_mode():
        model(**batches[-1], lengths=lengths, **options)  # warm-up
        _sync(device)
        began = time.perf_counter()
        for batch in batches:
            model(**batch, lengths=lengths, **options)
        _sync(device)
    return len(windows) / (time.perf_counter() - began)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
