"""The settings of `dynamic-tinybert serve`, apart from the server, so that the command line
builds without the web framework (a training machine need not have it installed)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .options import option
from .precision import DTYPES


class ServeError(ValueError):
    """Server settings that cannot work."""


@dataclass
class ServeSettings:
    """Every setting of `dynamic-tinybert serve`; the command line is built from these fields."""

    model: str | None = option(
        "model folder, or a Hugging Face Hub id (default: the model that ships with the package)"
    )
    host: str = option("address to listen on; loopback unless you mean to expose it", default="127.0.0.1")
    port: int = option("port to listen on; 0 picks a free one", default=8000)
    device: str = option("torch device, e.g. cpu or cuda", default="cpu")
    dtype: str | None = option(
        "precision: fp32, bf16 (CPUs with AVX512-BF16 or AMX, and CUDA) or int8 (CPU) "
        "(default: the model's, from its frontier.json)",
        choices=DTYPES,
    )
    max_batch: int = option(
        "most windows (384-token slices of the contexts) run in one micro-batch", default=16
    )
    slice_ms: float = option(
        "longest a micro-batch should run while a long request is queued, in milliseconds: it "
        "holds the windows the full model runs in that time (timed at start-up; at least one per "
        "queued request), so that a request behind a long one waits about this long; 0: "
        "--max-batch alone",
        default=100.0,
    )
    max_wait_ms: float = option("how long the oldest queued request waits for others to join it", default=5.0)
    latency_slo: float | None = option(
        "target p95 latency in milliseconds: under load, move down the model's frontier to meet it"
    )
    slo_margin_points: bool = option(
        "with --latency-slo: move along the frontier's shares and margin points together (ordered by "
        "the throughput measured in the search) rather than the shares alone; measured on 2 CPU cores "
        "in fp32, it did not serve more accurate answers under load (README, Serving)",
        default=False,
    )
    request_timeout: float = option("seconds before a request gets 503 and leaves the queue", default=30.0)
    max_body_bytes: int = option("largest request body; larger ones get 413", default=1_000_000)
    max_context_chars: int = option("longest context in characters; longer ones get 413", default=50_000)
    max_inputs: int = option("most (question, context) pairs in one request; more get 413", default=64)
    max_windows: int = option(
        "most windows one request may need (a window holds up to 384 tokens); more get 413", default=256
    )

    def check(self) -> None:
        for name in ("max_batch", "max_body_bytes", "max_context_chars", "max_inputs", "max_windows"):
            if getattr(self, name) < 1:
                raise ServeError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise ServeError(f"--port must be between 0 and 65535, got {self.port}")
        if not self.max_wait_ms >= 0:
            raise ServeError(f"--max-wait-ms must not be negative, got {self.max_wait_ms}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ServeError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.slice_ms is None or not self.slice_ms >= 0:
            raise ServeError(f"--slice-ms must be 0 (off) or positive milliseconds, got {self.slice_ms}")
        if not self.request_timeout > 0:
            raise ServeError(f"--request-timeout must be positive, got {self.request_timeout}")
        if self.latency_slo is not None and not self.latency_slo > 0:
            raise ServeError(f"--latency-slo must be positive milliseconds, got {self.latency_slo}")
        for name in ("slice_ms", "max_wait_ms", "request_timeout", "latency_slo"):
            if getattr(self, name) is not None and math.isinf(getattr(self, name)):
                raise ServeError(f"--{name.replace('_', '-')} must be a finite number, got inf")
        if self.slo_margin_points and self.latency_slo is None:
            raise ServeError("--slo-margin-points changes the SLO mode's ladder: give --latency-slo too")
