"""The queue and micro-batching of `dynamic-tinybert serve`, and the load-adaptive SLO controller.

    request (server.py) -> Batcher.submit -> queue -> micro-batch -> model thread -> Outcome

Requests wait in one queue on the event loop. One worker task takes the oldest of them, up to
`max_batch` questions or until the oldest has waited `max_wait_ms`, groups those that run the
same length configuration, and answers each group with one `QuestionAnswerer.answer_windows` call
in a single model thread: the event loop never runs the model. With `latency_slo`, `SloController`
picks the frontier point of each micro-batch from the queue it sees; a request's own budget is a
ceiling it never exceeds.

`Metrics` holds the server's Prometheus series: the batcher updates the queue, batch and
frontier-point ones, server.py's middleware the request counts and latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .answers import Answer
from .frontier import Point
from .lengths import Lengths, encoder_gflops
from .reader import QuestionAnswerer

if TYPE_CHECKING:  # for annotations only: server.py imports this module, not the other way round
    from .server import Parameters, ServeSettings

# The controller aims below the target: its predictions leave out HTTP time and noise, and the
# target is a 95th percentile rather than a mean.
DOWN_AT = 0.8  # move down to a point whose predicted latency is under this share of the SLO
UP_AT = 0.6  # move one point up only when that point predicts under this share
RECENT_BATCHES = 32  # the slowdown is a high percentile over this many micro-batches
SLOWDOWN_PERCENTILE = 90

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


def pack(pairs: Sequence[int], max_batch: int) -> list[int]:
    """The micro-batch each queued request goes into, oldest first: whole requests, at most
    max_batch questions together, unless one request alone holds more.

    >>> pack([4, 4, 8, 1, 20, 2], 8)
    [0, 0, 1, 2, 3, 4]
    """
    batch, filled, out = 0, 0, []
    for n in pairs:
        if filled and filled + n > max_batch:
            batch, filled = batch + 1, 0
        filled += n
        out.append(batch)
    return out


@dataclass(frozen=True)
class QueuedWork:
    """What the SLO controller sees of one queued request."""

    waited: float  # seconds in the queue so far
    pairs: int  # (question, context) pairs
    chars: int  # characters of questions and contexts, the unit of work


class Cost(NamedTuple):
    """Model seconds of one micro-batch at a frontier point: per_batch + per_char * characters."""

    per_batch: float
    per_char: float


class SloController:
    """Chooses the frontier point of each micro-batch so that latency stays under a target.

    It predicts, for each point, when the last of the queued requests would be answered if the
    whole queue ran at that point in FIFO micro-batches: that request's wait so far plus the
    model time of every batch up to its own, from the point's cost measured at warm-up times how
    much slower the machine runs now than then (a high percentile over the recent micro-batches,
    so that the slow ones count, not the typical one). It moves down at once to the most accurate point
    predicted under DOWN_AT of the target, and up one point at a time while the next one predicts
    under UP_AT: as load falls it climbs back, one micro-batch at a time.

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
        """Seconds until the last of the queued requests would be answered at this point."""
        batches = pack([w.pairs for w in queue], self.max_batch)
        chars = np.bincount(batches, weights=[w.chars for w in queue]) if queue else np.zeros(0)
        cost = self.costs[level]
        ends = np.cumsum(cost.per_batch + cost.per_char * chars) * self.slowdown  # seconds from now
        return max((w.waited + ends[b] for w, b in zip(queue, batches, strict=True)), default=0.0)

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
    """One request in the queue."""

    questions: list[str]
    contexts: list[str]
    top_k: int
    max_answer_len: int
    lengths: Lengths | None  # the configuration to run when `ceiling` is None
    ceiling: int | None  # else: the most costly frontier point allowed (a budget, or the full model)
    arrived: float
    future: asyncio.Future

    @property
    def pairs(self) -> int:
        return len(self.questions)

    @property
    def chars(self) -> int:
        return sum(map(len, self.questions)) + sum(map(len, self.contexts))


@dataclass
class Outcome:
    answers: list[list[Answer]]  # per pair, best first
    lengths: Lengths | None
    point: int | None  # the frontier index that ran
    gflops_per_window: float
    batch_size: int


class Metrics:
    """The Prometheus series of one server, in a registry of its own."""

    def __init__(self) -> None:
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
        self.batch_size = Histogram(
            "dynamic_tinybert_batch_size",
            "questions per micro-batch",
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
        self.slowdown = Gauge(
            "dynamic_tinybert_slowdown",
            "SLO mode: model time now against at warm-up, 90th percentile of recent micro-batches",
            registry=registry,
        )


class Batcher:
    """The queue, the worker task that forms micro-batches, and the model thread."""

    def __init__(self, qa: QuestionAnswerer, settings: ServeSettings, metrics: Metrics):
        self.qa = qa
        self.settings = settings
        self.metrics = metrics
        self.points: list[Point] = qa.frontier.points if qa.frontier is not None else []
        # every request drops tokens by the selector the frontier was searched with
        self.selector = qa.frontier.selector if qa.frontier is not None else None
        self.queue: deque[Job] = deque()
        self.wakeup = asyncio.Event()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dynamic-tinybert-model")
        self.controller: SloController | None = None
        self.ready = False
        self.task: asyncio.Task | None = None
        self._set_point(len(self.points) - 1)

    def route(self, parameters: Parameters) -> tuple[Lengths | None, int | None]:
        """(lengths, ceiling) of a request, checked before it joins the queue: explicit lengths
        run as given; with a frontier, a budget caps the point and no budget allows the full model."""
        lengths, point = self.qa.choose(
            parameters.lengths, parameters.budget, parameters.speedup, self.selector
        )
        if point is not None:
            return lengths, next(i for i, p in enumerate(self.points) if p is point)
        if parameters.lengths is None and self.points:
            return None, len(self.points) - 1
        return lengths, None

    async def submit(self, job: Job, timeout: float) -> Outcome:
        """Queue a job and wait for its answers; on timeout it leaves the queue."""
        self.queue.append(job)
        self._count_queue()
        self.wakeup.set()
        try:
            return await asyncio.wait_for(job.future, timeout)
        finally:
            if job in self.queue:  # timed out (or cancelled) before it ran
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
        costs = await loop.run_in_executor(self.executor, self._warm_up)
        if self.settings.latency_slo is not None:
            self.controller = SloController(costs, self.settings.latency_slo / 1000, self.settings.max_batch)
        self.ready = True
        while True:
            await self._gather()
            level = self._choose_level()
            jobs = self._take()
            self.metrics.batch_size.observe(sum(j.pairs for j in jobs))
            groups: dict[tuple, list[Job]] = {}
            for job in jobs:
                point = None if job.ceiling is None else min(level, job.ceiling)
                lengths = job.lengths if point is None else self.points[point].config
                groups.setdefault((lengths, point, job.max_answer_len), []).append(job)
            batch_size = sum(j.pairs for j in jobs)
            for (lengths, point, max_answer_len), group in groups.items():
                await self._run(group, lengths, point, max_answer_len, batch_size)

    async def _gather(self) -> None:
        """Wait for a request, then until max_batch questions wait or the oldest has waited max_wait_ms."""
        while True:
            while not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            remaining = self.queue[0].arrived + self.settings.max_wait_ms / 1000 - time.perf_counter()
            if sum(j.pairs for j in self.queue) >= self.settings.max_batch or remaining <= 0:
                return
            self.wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), remaining)

    def _choose_level(self) -> int:
        """The frontier point for requests without their own budget (-1 without a frontier)."""
        if self.controller is None:
            return len(self.points) - 1
        now = time.perf_counter()
        level = self.controller.choose([QueuedWork(now - j.arrived, j.pairs, j.chars) for j in self.queue])
        self._set_point(level)
        return level

    def _take(self) -> list[Job]:
        """The oldest requests, as many as fit one micro-batch."""
        first = pack([j.pairs for j in self.queue], self.settings.max_batch).count(0)
        jobs = [self.queue.popleft() for _ in range(first)]
        self._count_queue()
        return jobs

    async def _run(
        self,
        jobs: list[Job],
        lengths: Lengths | None,
        point: int | None,
        max_answer_len: int,
        batch_size: int,
    ) -> None:
        loop = asyncio.get_running_loop()
        jobs = [j for j in jobs if not j.future.done()]  # timed out while this batch ran
        if not jobs:
            return
        began = time.perf_counter()
        try:
            answers, gflops = await loop.run_in_executor(
                self.executor, self._answer, jobs, lengths, max_answer_len
            )
        except Exception as error:  # a failure of the model fails its group, not the server
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        seconds = time.perf_counter() - began  # all it took, tokenising and handing over included
        self.metrics.batch_seconds.observe(seconds)
        if self.controller is not None and point is not None:
            self.controller.observe(point, sum(j.chars for j in jobs), seconds)
            self.metrics.slowdown.set(self.controller.slowdown)
        for job, job_answers, job_gflops in zip(jobs, answers, gflops, strict=True):
            if not job.future.done():
                job.future.set_result(Outcome(job_answers, lengths, point, job_gflops, batch_size))

    def _answer(
        self, jobs: list[Job], lengths: Lengths | None, max_answer_len: int
    ) -> tuple[list[list[list[Answer]]], list[float]]:
        """In the model thread: one answer() call for a group; per job its answers and mean GFLOPs
        per window."""
        questions = [q for j in jobs for q in j.questions]
        contexts = [c for j in jobs for c in j.contexts]
        # top_k only cuts the ranked list (scores are taken over the 20 best spans whatever
        # top_k <= 20 is), so one call with the largest serves every job
        windows = self.qa.tokenizer.encode_windows(questions, contexts)
        answers = self.qa.answer_windows(
            windows, contexts, max(j.top_k for j in jobs), max_answer_len, lengths, selector=self.selector
        )
        config, scorer = self.qa.model.config, self.qa.scorer_macs(self.selector)
        per_job, per_gflops, i = [], [], 0
        for job in jobs:
            mine = slice(i, i + job.pairs)
            per_job.append([pair[: job.top_k] for pair in answers[mine]])
            costs = [encoder_gflops(config, len(w), lengths, scorer) for ws in windows[mine] for w in ws]
            per_gflops.append(float(np.mean(costs)))
            i += job.pairs
        return per_job, per_gflops

    def _warm_up(self) -> list[Cost]:
        """In the model thread, before the server reports ready: run the model once, and in SLO
        mode measure each frontier point's cost on one warm-up pair and on WARMUP_PAIRS of them."""
        self.qa.answer([WARMUP_QUESTION] * WARMUP_PAIRS, [WARMUP_CONTEXT] * WARMUP_PAIRS)
        if self.settings.latency_slo is None:
            return []
        chars = len(WARMUP_QUESTION) + len(WARMUP_CONTEXT)

        def seconds(lengths: Lengths | None, pairs: int) -> float:
            times = []
            for _ in range(3):
                began = time.perf_counter()
                self.qa.answer(
                    [WARMUP_QUESTION] * pairs,
                    [WARMUP_CONTEXT] * pairs,
                    lengths=lengths,
                    selector=self.selector,
                )
                times.append(time.perf_counter() - began)
            return float(np.median(times))

        costs = []
        for point in self.points:
            one, many = seconds(point.config, 1), seconds(point.config, WARMUP_PAIRS)
            per_char = max(many - one, 1e-9) / ((WARMUP_PAIRS - 1) * chars)
            costs.append(Cost(max(one - per_char * chars, 0.0), per_char))
        return costs

    def _count_queue(self) -> None:
        self.metrics.queued.set(sum(j.pairs for j in self.queue))

    def _set_point(self, level: int) -> None:
        self.metrics.point.set(level)
        self.metrics.point_flops.set(self.points[level].flops_ratio if level >= 0 else 1.0)


def _report_stop(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the model worker stopped: %r", task.exception())
