"""The queue and micro-batching of `dynamic-tinybert serve`, and the load-adaptive SLO controller.

    request (server.py) -> Batcher.submit -> queue -> micro-batch -> model thread -> Outcome

A request is cut into windows (384-token slices of its contexts) before it joins the queue, and
windows, not requests, are the unit of work. Requests wait in one queue on the event loop. One
worker task forms micro-batches of up to `max_batch` windows, once that many wait or the oldest
request has waited `max_wait_ms`, taking the queued requests' next windows in turn (`fair_shares`):
a small request that arrives behind a big one runs in the next micro-batch, not after the whole
big one. Windows that run the same length configuration go through the model together, in a
single model thread: the event loop never runs the model. A request leaves the queue when its
last window has been handed out, or when it times out or its client goes away: its remaining
windows never run. Its answers are ranked once all its windows have run. With `latency_slo`,
`SloController` picks the point of each request on a ladder (the frontier's shares, or with
`slo_margin_points` its shares and margin points together) from the queue it sees when the
request's first window runs (all its windows run there); a request's own budget is a ceiling it
never exceeds.

`Metrics` holds the server's Prometheus series: the batcher updates the queue, batch and
frontier-point ones, server.py's middleware the request counts and latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .answers import Answer
from .frontier import Point
from .lengths import Lengths, Margins, mean_gflops
from .reader import QuestionAnswerer, measured_gflops
from .tokenizer import Window

# The controller aims below the target: its predictions leave out HTTP time and noise, and the
# target is a 95th percentile rather than a mean.
DOWN_AT = 0.8  # move down to a point whose predicted latency is under this share of the SLO
UP_AT = 0.6  # move one point up only when that point predicts under this share
RECENT_BATCHES = 32  # the slowdown is a high percentile over this many micro-batches
SLOWDOWN_PERCENTILE = 90
# the percentile over the queued requests of their predicted latency that the controller keeps
# under the target. Not the worst one: under steady load that was usually a request of several
# windows, which round-robin made wait a round per window, and chasing it sent every request to
# the cheapest point (training/logs/slo-controller-avx2.txt)
QUEUE_PERCENTILE = 75

logger = logging.getLogger(__name__)

WARMUP_QUESTION = "How many tokens does each layer keep?"
# about 340 tokens with the question, near a full window: costs per character measured on long
# inputs overestimate shorter ones', so the SLO controller starts on the safe side, and the
# slowdown it measures on real requests then corrects it
WARMUP_PARAGRAPH = (
    "A length configuration says, for every layer of the encoder, which share of the input's "
    "tokens that layer keeps and passes on to the next one. The first layers usually keep almost "
    "every token, and later layers keep fewer, because the question and the words around the "
    "answer draw most of the attention by then. Tokens that a layer drops keep the hidden state "
    "they had when they entered it, and all of them are restored before the output layer, so "
    "every token of the passage still receives a start and an end score."
)
WARMUP_CONTEXT = " ".join([WARMUP_PARAGRAPH] * 3)
WARMUP_PAIRS = 8


def fair_shares(left: Sequence[int], capacity: int) -> list[int]:
    """How many windows each queued request (oldest first) gets in a micro-batch of `capacity`:
    one window each in turn, so that every request moves on while any has work left.

    >>> fair_shares([100, 2, 50], 16)
    [7, 2, 7]
    >>> fair_shares([3, 0, 40], 16)
    [3, 0, 13]
    """
    shares = [0] * len(left)
    remaining = capacity
    while remaining > 0 and any(s < n for s, n in zip(shares, left, strict=True)):
        for i, n in enumerate(left):
            if remaining > 0 and shares[i] < n:
                shares[i] += 1
                remaining -= 1
    return shares


def finishing_first(shares: Sequence[int], left: Sequence[int]) -> list[int]:
    """The shares of the requests this micro-batch would finish, where it would also carry windows
    of requests it would not: the short ones run alone rather than topped up with a long one's
    windows (which would make them wait for those too); None where there is nothing to split.

    >>> finishing_first([7, 1], [100, 1])
    [0, 1]
    >>> finishing_first([2, 2], [2, 2]) is None, finishing_first([8], [100]) is None
    (True, True)
    """
    done = [n > 0 and n == k for n, k in zip(shares, left, strict=True)]
    if not any(done) or all(d or n == 0 for d, n in zip(done, shares, strict=True)):
        return None
    return [n if d else 0 for n, d in zip(shares, done, strict=True)]


def pack(windows: Sequence[int], max_batch: int) -> list[int]:
    """The micro-batch each queued request goes into, oldest first: whole requests, at most
    max_batch windows together, unless one request alone holds more (what the SLO controller
    predicts with: the same total work as the fair schedule, in coarser steps).

    >>> pack([4, 4, 8, 1, 20, 2], 8)
    [0, 0, 1, 2, 3, 4]
    """
    batch, filled, out = 0, 0, []
    for n in windows:
        if filled and filled + n > max_batch:
            batch, filled = batch + 1, 0
        filled += n
        out.append(batch)
    return out


@dataclass(frozen=True)
class QueuedWork:
    """What the SLO controller sees of one queued request."""

    waited: float  # seconds in the queue so far
    windows: int  # windows still to run
    chars: int  # characters of questions and contexts still to run, the unit of work


class Cost(NamedTuple):
    """Model seconds of one micro-batch at a frontier point: per_batch + per_char * characters."""

    per_batch: float
    per_char: float


class SloController:
    """Chooses the frontier point of each micro-batch so that latency stays under a target.

    It predicts, for each point, when the queued requests would be answered if the whole queue
    ran at that point in FIFO micro-batches (each one's wait so far plus the model time of every
    batch up to its own; their QUEUE_PERCENTILE-th percentile), from the point's cost measured at
    warm-up times how much slower the machine runs now than then (a high percentile over the
    recent micro-batches, so that the slow ones count, not the typical one). It moves down at
    once to the most accurate point predicted under DOWN_AT of the target, and up one point at a
    time while the next one predicts under UP_AT: as load falls it climbs back, one micro-batch at
    a time.

    >>> c = SloController([Cost(0.0, 1e-4), Cost(0.0, 2e-4), Cost(0.0, 4e-4)], slo=1.0, max_batch=4)
    >>> c.choose([QueuedWork(0.0, 1, 1000)] * 8)  # 8000 characters: 3.2 s at full, 1.6 s, 0.8 s
    0
    >>> c.choose([QueuedWork(0.0, 1, 1000)]), c.choose([QueuedWork(0.0, 1, 1000)])
    (1, 2)
    """

    def __init__(self, costs: Sequence[Cost], slo: float, max_batch: int):
        # a more accurate point is never predicted to run faster than a cheaper one
        per_batch = np.maximum.accumulate([c.per_batch for c in costs])
        per_char = np.maximum.accumulate([c.per_char for c in costs])
        self.costs = [Cost(float(a), float(b)) for a, b in zip(per_batch, per_char, strict=True)]
        self.slo = slo  # seconds
        self.max_batch = max_batch
        self.level = len(costs) - 1  # the index of the point in use; starts at the full model
        self.recent: deque[float] = deque(maxlen=RECENT_BATCHES)  # model time against the prediction
        self.slowdown = 1.0

    def predict(self, level: int, queue: Sequence[QueuedWork]) -> float:
        """The latency of the queued requests at this point, from arrival to answer, in seconds:
        the QUEUE_PERCENTILE-th percentile over them."""
        if not queue:
            return 0.0
        batches = pack([w.windows for w in queue], self.max_batch)
        chars = np.bincount(batches, weights=[w.chars for w in queue])
        cost = self.costs[level]
        ends = np.cumsum(cost.per_batch + cost.per_char * chars) * self.slowdown  # seconds from now
        latencies = [w.waited + ends[b] for w, b in zip(queue, batches, strict=True)]
        return float(np.percentile(latencies, QUEUE_PERCENTILE))

    def choose(self, queue: Sequence[QueuedWork]) -> int:
        fits = [i for i in range(len(self.costs)) if self.predict(i, queue) <= DOWN_AT * self.slo]
        best = max(fits, default=0)
        if best < self.level:
            self.level = best
        elif best > self.level and self.predict(self.level + 1, queue) <= UP_AT * self.slo:
            self.level += 1
        return self.level

    def observe(self, level: int, chars: int, seconds: float) -> None:
        """A micro-batch ran at this point: follow how fast the machine runs now."""
        cost = self.costs[level]
        self.recent.append(seconds / max(cost.per_batch + cost.per_char * chars, 1e-9))
        self.slowdown = float(np.percentile(self.recent, SLOWDOWN_PERCENTILE))


@dataclass(eq=False)
class Job:
    """One request: its windows, which of them have run, and the configuration they run at."""

    questions: list[str]
    contexts: list[str]
    windows: list[list[Window]]  # per pair, cut by the model's tokenizer before the job is queued
    top_k: int
    max_answer_len: int
    lengths: Lengths | None  # the configuration to run (when `ceiling` is set: its point's, from start)
    ceiling: int | None  # else: the most costly frontier point allowed (a budget, or the full model)
    arrived: float
    future: asyncio.Future
    margins: Margins | None = None  # margins to run instead of lengths (as given, or its point's)
    picked: Point | None = None  # the margin point a budget picked, for the response
    point: int | None = None  # the frontier point it runs at, fixed when its first window runs
    started: bool = False
    handed_out: int = 0  # windows given to micro-batches so far
    turn: float = 0.0  # its place in the round: when it arrived, then when its last windows ran
    batch_size: int = 0  # windows in the largest micro-batch it ran in

    def __post_init__(self) -> None:
        self.turn = self.arrived
        self.flat = [w for pair in self.windows for w in pair]
        self.logits: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(self.flat)
        self.counts: list[list[int] | None] = [None] * len(self.flat)  # tokens kept, under margins
        self.ran = 0  # windows whose logits are in
        total = sum(map(len, self.questions)) + sum(map(len, self.contexts))
        self.chars_per_window = total / max(len(self.flat), 1)

    @functools.cached_property
    def tokens_per_window(self) -> float:
        return sum(map(len, self.flat)) / max(len(self.flat), 1)

    @property
    def pairs(self) -> int:
        return len(self.questions)

    @property
    def left(self) -> int:
        """Windows not yet handed out."""
        return len(self.flat) - self.handed_out

    @property
    def chars(self) -> int:
        """Characters still to run: the request's, in proportion to its windows left."""
        return round(self.chars_per_window * self.left)

    def start(self, level: int, points: Sequence[Point]) -> None:
        """Fix the configuration of all its windows: its own lengths, or the frontier point the
        controller chose, capped by its ceiling (its shares, or its margins). A ladder with
        margin points is ordered by speed, not FLOPs: below the ceiling, a point that costs more
        FLOPs than the ceiling (more than the request's budget) is passed over for a cheaper one."""
        if not self.started:
            self.started = True
            if self.ceiling is not None:
                self.point = min(level, self.ceiling)
                while self.point > 0 and points[self.point].flops_ratio > points[self.ceiling].flops_ratio:
                    self.point -= 1
                self.lengths, self.margins = points[self.point].config, points[self.point].margins


class Slice(NamedTuple):
    """Windows [first, stop) of one job in a micro-batch."""

    job: Job
    first: int
    stop: int


@dataclass
class Outcome:
    answers: list[list[Answer]]  # per pair, best first
    lengths: Lengths | None
    point: int | None  # the frontier index that ran
    gflops_per_window: float
    batch_size: int
    margins: Margins | None = None  # the margins that ran instead of lengths
    picked: Point | None = None  # the margin point a budget picked


class Route(NamedTuple):
    """How a request runs, decided before it joins the queue: `lengths` or `margins` as given
    (`ceiling` None), or up to the point `ceiling` of Batcher.points (a share, or in SLO mode a
    point of the ladder); `picked`, the margin point a budget picked outside SLO mode (then
    `margins` holds its margins)."""

    lengths: Lengths | None
    margins: Margins | None
    ceiling: int | None
    picked: Point | None


class Metrics:
    """The Prometheus series of one server, in a registry of its own."""

    def __init__(self, slo: bool = False) -> None:
        """slo: the server runs in SLO mode, and exports the controller's slowdown too."""
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "dynamic_tinybert_requests",
            "POST /v1/answer requests by status code",
            ["code"],
            registry=registry,
        )
        self.errors = Counter(
            "dynamic_tinybert_errors",
            "POST /v1/answer requests that failed, by status code",
            ["code"],
            registry=registry,
        )
        self.latency = Histogram(
            "dynamic_tinybert_request_seconds",
            "time to answer a POST /v1/answer request (answered ones)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.slice_windows = Gauge(
            "dynamic_tinybert_slice_windows",
            "full-model windows that run in --slice-ms (timed at start-up; 0: no slice)",
            registry=registry,
        )
        self.batch_size = Histogram(
            "dynamic_tinybert_batch_size",
            "windows per micro-batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "dynamic_tinybert_batch_seconds",
            "model time of one length configuration's share of a micro-batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.queued = Gauge(
            "dynamic_tinybert_queue_size", "questions waiting in the queue", registry=registry
        )
        self.point = Gauge(
            "dynamic_tinybert_frontier_point",
            "index of the frontier point that requests without their own budget run at (-1: no frontier)",
            registry=registry,
        )
        self.point_flops = Gauge(
            "dynamic_tinybert_frontier_point_flops_ratio",
            "FLOPs of that point against the full model's",
            registry=registry,
        )
        self.slowdown = None
        if slo:
            self.slowdown = Gauge(
                "dynamic_tinybert_slowdown",
                "model time now against at warm-up, 90th percentile of recent micro-batches",
                registry=registry,
            )
            self.slowdown.set(1.0)  # no correction until micro-batches have been timed


class Batcher:
    """The queue, the worker task that forms micro-batches, and the model thread."""

    def __init__(
        self,
        qa: QuestionAnswerer,
        metrics: Metrics,
        max_batch: int,
        max_wait_ms: float,
        latency_slo: float | None = None,
        slice_ms: float | None = None,
        slo_margin_points: bool = False,
    ):
        """max_batch windows per micro-batch, the oldest request waiting at most max_wait_ms for
        others; latency_slo (milliseconds) turns on the SLO controller, whose ladder holds the
        frontier's shares, or with slo_margin_points its shares and margin points together
        (Frontier.ladder); slice_ms caps a micro-batch at the windows the full model runs in that
        time (measured at warm-up), so that a request arriving behind a long one waits about that
        long, not a whole max_batch."""
        self.qa = qa
        self.metrics = metrics
        self.max_batch = max_batch
        self.slice = slice_ms / 1000 if slice_ms else None
        self.deferred = False  # whether the last micro-batch left a started request's windows out
        self.cap = max_batch  # windows the last micro-batch could hold (see _cap)
        self.slice_tokens: float | None = None  # tokens the full model runs in slice_ms
        self.max_wait = max_wait_ms / 1000
        self.latency_slo = None if latency_slo is None else latency_slo / 1000
        # the points a request's frontier index names (the SLO controller's ladder): the shares,
        # or with slo_margin_points in SLO mode the shares and margin points by measured speed
        self.slo_margin_points = slo_margin_points and self.latency_slo is not None
        self.points: list[Point] = []
        if qa.frontier is not None:
            self.points = qa.frontier.ladder(qa.dtype) if self.slo_margin_points else qa.frontier.points
        # every request drops tokens by the selector the frontier was searched with
        self.selector = qa.frontier.selector if qa.frontier is not None else None
        self.queue: deque[Job] = deque()
        self.wakeup = asyncio.Event()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dynamic-tinybert-model")
        self.controller: SloController | None = None
        self.ready = False
        self.ready_at = 0.0  # time.perf_counter() when warmed up: no request waits on the model before
        self.task: asyncio.Task | None = None
        self._set_point(len(self.points) - 1)

    def route(
        self,
        lengths: Sequence[float] | None,
        budget: float | None,
        speedup: float | None,
        margins: Sequence[float] | float | None = None,
        shares_only: bool = False,
    ) -> Route:
        """How a request runs, checked before it joins the queue: explicit lengths or margins run
        as given; with a frontier, a budget picks a point: outside SLO mode a margin point where
        one is more accurate (unless shares_only), in SLO mode the point of its ladder it caps
        (the controller moves below it); no budget allows the full model."""
        in_ladder = (self.latency_slo is None or self.slo_margin_points) and not shares_only
        choice = self.qa.choose(lengths, budget, speedup, self.selector, margins, margin_points=in_ladder)
        if self.latency_slo is not None and choice.point is not None:
            among = [p for p in self.points if not (shares_only and p.margins is not None)]
            ceiling = self.qa.frontier.pick(budget, speedup, self.qa.dtype, among=among)
            return Route(None, None, self.points.index(ceiling), None)
        if choice.margins is not None:
            return Route(None, choice.margins, None, choice.point)
        if choice.point is not None:
            return Route(
                choice.lengths, None, next(i for i, p in enumerate(self.points) if p is choice.point), None
            )
        if lengths is None and margins is None and self.points:  # margins that keep all: explicit too
            return Route(None, None, len(self.points) - 1, None)
        return Route(choice.lengths, None, None, None)

    async def submit(self, job: Job, timeout: float) -> Outcome:
        """Queue a job and wait for its answers; on timeout (or cancellation) it leaves the queue
        and its windows not yet run never run."""
        self.queue.append(job)
        self._count_queue()
        self.wakeup.set()
        try:
            return await asyncio.wait_for(job.future, timeout)
        finally:
            if job in self.queue:
                self.queue.remove(job)
                self._count_queue()

    def start(self) -> None:
        self.task = asyncio.create_task(self._work())
        self.task.add_done_callback(_report_stop)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=False, cancel_futures=True)

    @property
    def healthy(self) -> bool:
        return self.task is not None and not self.task.done()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        costs, token_seconds = await loop.run_in_executor(self.executor, self._warm_up)
        if self.slice is not None:
            self.slice_tokens = self.slice / max(token_seconds, 1e-12)
            self.metrics.slice_windows.set(self.slice_tokens / self.qa.tokenizer.settings.max_length)
        if self.latency_slo is not None:
            self.controller = SloController(costs, self.latency_slo, self.max_batch)
        self.ready_at, self.ready = time.perf_counter(), True
        while True:
            await self._gather()
            level = self._choose_level()
            slices = self._take(level)
            size = sum(s.stop - s.first for s in slices)
            self.metrics.batch_size.observe(size)
            groups: dict[tuple, list[Slice]] = {}
            for piece in slices:
                piece.job.batch_size = max(piece.job.batch_size, size)
                groups.setdefault((piece.job.lengths, piece.job.margins, piece.job.point), []).append(piece)
            for (lengths, margins, point), group in groups.items():
                await self._run(group, lengths, point, margins)
            self._requeue(slices)

    def _cap(self, jobs: Sequence[Job], level: int) -> int:
        """Windows in the next micro-batch: max_batch; with slice_ms, while a long request is queued
        (more windows left than run in slice_ms), the windows that run in that time, each as
        costly as the queue's costliest (its tokens per window times its share of the full
        model's FLOPs), so that requests arriving behind it wait about that long. Without a long
        request, short ones batch up to max_batch. A slice never holds fewer windows than
        requests are queued (up to max_batch): those run one window each in turn anyway, and a
        request arriving behind them waits for them all; on a machine where the slice holds
        less than a window, a request of two windows made every micro-batch one window while it
        was queued (training/logs/slice-floor-avx2.txt)."""
        if self.slice_tokens is None:
            return self.max_batch
        costliest = max((self._flops(j, level) * j.tokens_per_window for j in jobs), default=1.0)
        sliced = max(1, min(self.max_batch, int(self.slice_tokens / costliest)))
        if not any(j.left > sliced for j in jobs):
            return self.max_batch
        return max(sliced, min(self.max_batch, len(jobs)))

    def _flops(self, job: Job, level: int) -> float:
        """A job's FLOPs against the full model's, at the point it runs or would run now (a margin
        point's held-out mean where a budget picked one; the full model's for explicit lengths or
        margins: an upper bound)."""
        if job.picked is not None:
            return job.picked.flops_ratio
        point = job.point if job.started else None if job.ceiling is None else min(level, job.ceiling)
        return self.points[point].flops_ratio if point is not None and point >= 0 else 1.0

    def _requeue(self, slices: list[Slice]) -> None:
        """Requests whose windows just ran go behind every request that arrived meanwhile, if they
        still have more windows left than a micro-batch holds: a long request cannot hold up
        the ones behind it, and one that the next micro-batch can finish keeps its place (sent
        to the back, a request of two windows waited a whole round for its second one)."""
        now = time.perf_counter()
        for piece in slices:
            if piece.job.left > self.cap:
                piece.job.turn = now

    async def _gather(self) -> None:
        """Wait for a request, then until max_batch windows wait or the oldest request has waited
        max_wait_ms (at once when a request is part-way through)."""
        while True:
            while not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            remaining = self.queue[0].arrived + self.max_wait - time.perf_counter()
            if sum(j.left for j in self.queue) >= self.max_batch or remaining <= 0:
                return
            self.wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), remaining)

    def _choose_level(self) -> int:
        """The frontier point for requests without their own budget (-1 without a frontier)."""
        if self.controller is None:
            return len(self.points) - 1
        now = time.perf_counter()
        # a request sent during warm-up has waited on the model only since it was ready: its wait
        # before then would drive the controller down to the cheapest point
        level = self.controller.choose(
            [QueuedWork(now - max(j.arrived, self.ready_at), j.left, j.chars) for j in self.queue]
        )
        self._set_point(level)
        return level

    def _take(self, level: int) -> list[Slice]:
        """The next micro-batch: the queued requests' next windows in turn, round-robin (see
        _requeue), so that a micro-batch smaller than the queue still reaches every request in
        turn. A request whose last window is handed out leaves the queue."""
        jobs = sorted(self.queue, key=lambda j: j.turn)
        left = [j.left for j in jobs]
        self.cap = self._cap(jobs, level)
        shares = fair_shares(left, self.cap)
        # short requests alone, but never twice running: the long one moves on every other batch
        alone = None if self.deferred else finishing_first(shares, left)
        self.deferred = alone is not None
        slices = []
        for job, n in zip(jobs, alone or shares, strict=True):
            if n:
                job.start(level, self.points)
                slices.append(Slice(job, job.handed_out, job.handed_out + n))
                job.handed_out += n
                if job.left == 0:
                    self.queue.remove(job)
        self._count_queue()
        return slices

    async def _run(
        self, slices: list[Slice], lengths: Lengths | None, point: int | None, margins: Margins | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        slices = [s for s in slices if not s.job.future.done()]  # timed out or cancelled meanwhile
        if not slices:
            return
        began = time.perf_counter()
        try:
            finished = await loop.run_in_executor(self.executor, self._answer, slices, lengths, margins)
        except Exception as error:  # a failure of the model fails its requests, not the server
            for piece in slices:
                if not piece.job.future.done():
                    piece.job.future.set_exception(error)
                if piece.job in self.queue:
                    self.queue.remove(piece.job)
            self._count_queue()
            return
        seconds = time.perf_counter() - began  # all it took, ranking and handing over included
        self.metrics.batch_seconds.observe(seconds)
        if self.controller is not None and point is not None:
            chars = sum(s.job.chars_per_window * (s.stop - s.first) for s in slices)
            self.controller.observe(point, round(chars), seconds)
            if self.metrics.slowdown is not None:
                self.metrics.slowdown.set(self.controller.slowdown)
        for job, (answers, gflops) in finished.items():
            if not job.future.done():
                outcome = Outcome(answers, lengths, point, gflops, job.batch_size, margins, job.picked)
                job.future.set_result(outcome)

    def _answer(
        self, slices: list[Slice], lengths: Lengths | None, margins: Margins | None = None
    ) -> dict[Job, tuple[list[list[Answer]], float]]:
        """In the model thread: run the windows of one micro-batch's group through the model; for
        each job whose last window this was, its answers and mean GFLOPs per window."""
        windows = [w for s in slices for w in s.job.flat[s.first : s.stop]]
        counts: list[list[int]] = []
        logits = self.qa.window_logits(
            windows, lengths, len(windows), selector=self.selector, margins=margins, token_counts=counts
        )
        i, finished = 0, {}
        for job, first, stop in slices:
            job.logits[first:stop] = logits[i : i + stop - first]
            job.counts[first:stop] = counts[i : i + stop - first]
            i += stop - first
            job.ran += stop - first
            if job.ran == len(job.flat):
                finished[job] = self._rank(job, lengths, margins)
        return finished

    def _rank(
        self, job: Job, lengths: Lengths | None, margins: Margins | None
    ) -> tuple[list[list[Answer]], float]:
        """A finished job's answers per pair, best first, and its mean GFLOPs per window (under
        margins, of the tokens each window kept)."""
        answers = self.qa.rank_windows(job.windows, job.contexts, job.logits, job.top_k, job.max_answer_len)
        config, scorer = self.qa.model.config, self.qa.scorer_macs(self.selector)
        if margins is not None:
            return answers, measured_gflops(config, job.counts, margins, scorer)
        return answers, mean_gflops(config, [len(w) for w in job.flat], lengths, scorer)

    def _warm_up(self) -> tuple[list[Cost], float]:
        """In the model thread, before the server reports ready: run the model once, then time
        the full model's seconds per token on full windows (for slice_ms: a full window's tokens
        cost the most each); in SLO mode measure each frontier point's cost on one warm-up pair
        and on WARMUP_PAIRS of them."""
        self.qa.answer([WARMUP_QUESTION] * WARMUP_PAIRS, [WARMUP_CONTEXT] * WARMUP_PAIRS)
        token_seconds = 0.0
        if self.slice is not None:
            questions, contexts = [WARMUP_QUESTION] * WARMUP_PAIRS, [WARMUP_CONTEXT * 4] * WARMUP_PAIRS
            windows = self.qa.tokenizer.encode_windows(questions, contexts)
            began = time.perf_counter()
            self.qa.answer_windows(windows, contexts)
            token_seconds = (time.perf_counter() - began) / sum(len(w) for ws in windows for w in ws)
        if self.latency_slo is None:
            return [], token_seconds
        chars = len(WARMUP_QUESTION) + len(WARMUP_CONTEXT)

        def seconds(point: Point, pairs: int) -> float:
            times = []
            for _ in range(3):
                began = time.perf_counter()
                self.qa.answer(
                    [WARMUP_QUESTION] * pairs,
                    [WARMUP_CONTEXT] * pairs,
                    lengths=point.config,
                    selector=self.selector,
                    margins=point.margins,
                )
                times.append(time.perf_counter() - began)
            return float(np.median(times))

        costs = []
        for point in self.points:
            one, many = seconds(point, 1), seconds(point, WARMUP_PAIRS)
            per_char = max(many - one, 1e-9) / ((WARMUP_PAIRS - 1) * chars)
            costs.append(Cost(max(one - per_char * chars, 0.0), per_char))
        return costs, token_seconds

    def _count_queue(self) -> None:
        self.metrics.queued.set(sum(j.pairs for j in self.queue))

    def _set_point(self, level: int) -> None:
        self.metrics.point.set(level)
        self.metrics.point_flops.set(self.points[level].flops_ratio if level >= 0 else 1.0)


def _report_stop(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the model worker stopped: %r", task.exception())
