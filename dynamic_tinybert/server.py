"""The HTTP server, `dynamic-tinybert serve`: a thin adapter over reader.py.

    POST /v1/answer -> validate (4xx) -> queue -> micro-batch -> model thread -> answers
       (this file)                       (batching.py)

POST /v1/answer takes the question-answering schema of the Hugging Face inference API:

    {"inputs": {"question": "...", "context": "..."},            (or a list of such objects)
     "parameters": {"top_k": 1, "max_answer_len": 30, "budget": 0.5}}

and answers {"answers": [{"answer", "score", "start", "end"}, ...] (a list of such lists for a
list of inputs), "lengths", "margins", "gflops_per_window", "frontier_point", "seconds",
"batch_size"}.

Here: the settings, the request and response schema, the app with its middleware and error
handlers, and the command. The queue, the micro-batches, the model thread, the SLO controller and
`Metrics`, the Prometheus series (most of them updated by the batcher), are in batching.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Annotated

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from starlette.exceptions import HTTPException

from .answers import ANSWERS, N_BEST
from .batching import Batcher, Job, Metrics
from .data import has_text
from .devices import resolve_device
from .frontier import BudgetError, Point
from .lengths import LengthsError, margins_from_json, margins_to_json
from .options import UsageError, settings_from
from .precision import DtypeError, check_dtype
from .reader import QuestionAnswerer
from .selector import SelectorError
from .serve_settings import ServeError, ServeSettings

# --- the schema --------------------------------------------------------------------------------


class QAInput(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    question: str = Field(min_length=1, description="the question")
    context: str = Field(min_length=1, description="the passage to find the answer in")

    @field_validator("question", "context")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not has_text(text):
            raise ValueError("must not be blank (white space, controls, invisible or combining marks only)")
        return text


class Parameters(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    top_k: int = Field(ANSWERS.top_k, ge=1, le=N_BEST, description="answers per input, best first")
    max_answer_len: int = Field(ANSWERS.max_answer_len, ge=1, le=512, description="longest answer in tokens")
    budget: float | None = Field(
        None,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="the most accurate frontier point within this share of the full model's FLOPs",
    )
    speedup: float | None = Field(
        None,
        ge=1,
        allow_inf_nan=False,
        description="the most accurate frontier point at least this much faster than the full model",
    )
    lengths: list[float] | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="an explicit length configuration: per layer, the share of tokens it keeps",
    )
    margins: float | list[float | None] | None = Field(
        None,
        description="explicit margins (the learned selector): one for every layer or one per layer; "
        "each window keeps the tokens scored within the margin of its best one; null: keep all",
    )
    shares_only: bool = Field(
        False,
        description="with budget or speedup: pick among the frontier's shares alone, which hold the "
        "budget in every window (a margin point's FLOPs are a mean: short or hard windows cost more)",
    )

    @model_validator(mode="after")
    def _one_cost(self) -> Parameters:
        given = (self.budget, self.speedup, self.lengths, self.margins)
        if sum(value is not None for value in given) > 1:
            raise ValueError("give at most one of budget, speedup, lengths and margins")
        if self.shares_only and self.budget is None and self.speedup is None:
            raise ValueError("shares_only chooses how a budget or speedup is met: give one of them")
        return self

    def margin_values(self) -> float | list[float] | None:
        """The margins as the model takes them (null: infinite)."""
        return margins_from_json(self.margins) if isinstance(self.margins, list) else self.margins


def _kind(inputs: object) -> str:
    return "list" if isinstance(inputs, list) else "object"


class AnswerRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    inputs: Annotated[
        Annotated[QAInput, Tag("object")] | Annotated[list[QAInput], Field(min_length=1), Tag("list")],
        Discriminator(_kind),
    ] = Field(description="one question and its context, or a list of them")
    parameters: Parameters = Field(default_factory=Parameters)
    options: dict | None = Field(
        None, description="accepted for compatibility with the inference API; unused"
    )


class AnswerOut(BaseModel):
    answer: str
    score: float = Field(description="probability among the input's 20 best candidate spans")
    start: int = Field(description="character offsets in the context: context[start:end] == answer")
    end: int


class PointOut(BaseModel):
    index: int | None = Field(
        description="position in the model's frontier (in SLO mode, its ladder), 0 the cheapest; null "
        "for a margin point a budget picked outside SLO mode"
    )
    lengths: list[float]
    margins: list[float | None] | None = Field(None, description="a margin point's margins (null: keeps all)")
    flops_ratio: float = Field(description="of the full model's FLOPs; for a margin point the held-out mean")
    heldout_f1: float
    heldout_exact_match: float


class AnswerResponse(BaseModel):
    answers: list[AnswerOut] | list[list[AnswerOut]] = Field(
        description="for one input, its answers best first; for a list of inputs, a list of those "
        "(empty where no span qualifies)"
    )
    lengths: list[float] | None = Field(
        description="the length configuration that ran; all ones is the full model; null under margins"
    )
    margins: list[float | None] | None = Field(None, description="the margins that ran (null: keeps all)")
    gflops_per_window: float = Field(description="encoder GFLOPs per window of this request, mean")
    frontier_point: PointOut | None = Field(
        description="the frontier point that ran; null for explicit lengths or a model without a frontier"
    )
    seconds: float = Field(description="time from arrival to answer, in the queue and in the model")
    batch_size: int = Field(description="windows in the largest micro-batch this request ran in")
    warnings: list[str] = Field(
        [], description="what the answers should be read with: a question cut to fit its windows"
    )


class ErrorOut(BaseModel):
    error: str


# --- the app -----------------------------------------------------------------------------------


def create_app(qa: QuestionAnswerer, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving one model; the worker starts with the app's lifespan."""
    settings = settings or ServeSettings()
    settings.check()
    if settings.latency_slo is not None and qa.frontier is None:
        raise BudgetError(
            f"--latency-slo moves along the model's frontier, and {qa.folder} has none (frontier.json); "
            "run `dynamic-tinybert search` on it first"
        )
    metrics = Metrics(slo=settings.latency_slo is not None)
    batcher = Batcher(
        qa,
        metrics,
        settings.max_batch,
        settings.max_wait_ms,
        settings.latency_slo,
        settings.slice_ms,
        settings.slo_margin_points,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="Dynamic-TinyBERT",
        description="Extractive question answering at a per-request compute budget.",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.add_middleware(_JsonBody, limit=settings.max_body_bytes, timeout=settings.request_timeout)
    app.add_middleware(_CountRequests, metrics=metrics)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    errors = {code: {"model": ErrorOut} for code in (400, 413, 422, 503)}

    app.post("/v1/answer", response_model=AnswerResponse, responses=errors)(
        _answer_endpoint(qa, settings, batcher)
    )
    _add_status_routes(app, qa, batcher, metrics)
    return app


def _check_size(inputs: Sequence[QAInput], settings: ServeSettings) -> None:
    """413 for more inputs, or a longer context, than the limits allow."""
    if len(inputs) > settings.max_inputs:
        raise HTTPException(413, f"{len(inputs)} inputs is more than the limit of {settings.max_inputs}")
    for i, pair in enumerate(inputs):
        if len(pair.context) > settings.max_context_chars:
            raise HTTPException(
                413,
                f"context {i} has {len(pair.context)} characters, more than the limit of "
                f"{settings.max_context_chars}",
            )


def _answer_endpoint(qa: QuestionAnswerer, settings: ServeSettings, batcher: Batcher):
    """POST /v1/answer: limits (413), routing (400), then the queue; 503 on timeout."""

    async def answer(request: AnswerRequest, raw: Request) -> AnswerResponse:
        """Answer one question about a context, or a list of them."""
        arrived = time.perf_counter()
        if not batcher.healthy:
            raise HTTPException(503, "the model worker has stopped; see the server's log")
        single = isinstance(request.inputs, QAInput)
        inputs = [request.inputs] if single else request.inputs
        _check_size(inputs, settings)
        parameters = request.parameters
        route = _route(batcher, parameters)
        questions, contexts = [p.question for p in inputs], [p.context for p in inputs]
        # off the event loop, and outside the model thread: a long request is cut into windows
        # while others run
        cuts: list[tuple[int, str]] = []
        windows = await asyncio.to_thread(qa.tokenizer.encode_windows, questions, contexts, cuts)
        count = sum(map(len, windows))
        if count > settings.max_windows:
            raise HTTPException(
                413,
                f"this request needs {count} windows of up to {qa.tokenizer.settings.max_length} tokens, "
                f"more than the limit of {settings.max_windows}; send fewer or shorter contexts",
            )
        job = Job(
            questions,
            contexts,
            windows,
            parameters.top_k,
            parameters.max_answer_len,
            route.lengths,
            route.ceiling,
            arrived,
            asyncio.get_running_loop().create_future(),
            route.margins,
            route.picked,
        )
        try:
            outcome = await _unless_gone(raw, batcher.submit(job, settings.request_timeout))
        except asyncio.TimeoutError:
            raise HTTPException(
                503, f"not answered within the request timeout of {settings.request_timeout:g} s; try again"
            ) from None
        answers = [[AnswerOut(**a.to_dict()) for a in pair] for pair in outcome.answers]
        return AnswerResponse(
            answers=answers[0] if single else answers,
            lengths=None if outcome.margins else list(outcome.lengths or (1.0,) * qa.num_layers),
            margins=margins_to_json(outcome.margins),
            gflops_per_window=outcome.gflops_per_window,
            frontier_point=_point_out(batcher.points, outcome.point, outcome.picked),
            seconds=time.perf_counter() - arrived,
            batch_size=outcome.batch_size,
            # one of a list named as error messages name it
            warnings=[message if single else f"inputs[{i}]: {message}" for i, message in cuts],
        )

    return answer


def _route(batcher: Batcher, parameters: Parameters):
    """How a request runs (Batcher.route); what cannot run is a 400."""
    try:
        return batcher.route(
            parameters.lengths,
            parameters.budget,
            parameters.speedup,
            parameters.margin_values(),
            parameters.shares_only,
        )
    except (BudgetError, LengthsError, SelectorError) as error:
        raise HTTPException(400, str(error)) from None


async def _unless_gone(request: Request, work):
    """The result of `work`, a coroutine, unless the client goes away first: then the work is
    cancelled (a job leaves the queue, its windows not yet run never run) and the reply is 499,
    which the client never reads but the request metrics count."""
    done = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        finished, _ = await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this request itself is cancelled (the server stopping)
        gone.cancel()
        if not done.done():
            done.cancel()
    if done not in finished:
        raise HTTPException(499, "the client closed the connection before its answer")
    return done.result()


async def _disconnected(request: Request) -> None:
    """Returns once the client has closed its connection (the body has been read: the server's
    next message on this request is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _add_status_routes(app: FastAPI, qa: QuestionAnswerer, batcher: Batcher, metrics: Metrics) -> None:
    """GET /healthz, /readyz and /metrics (HEAD too, for health checkers that send it)."""

    def get_and_head(path: str):
        # HEAD out of the schema: there it would repeat GET's operation id (a warning per schema build)
        def register(endpoint):
            app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
            return app.get(path)(endpoint)

        return register

    @get_and_head("/healthz")
    async def healthz() -> JSONResponse:
        """The process is up and its worker runs."""
        return JSONResponse(
            {"status": "ok" if batcher.healthy else "worker stopped"}, 200 if batcher.healthy else 503
        )

    @get_and_head("/readyz")
    async def readyz() -> JSONResponse:
        """Ready once the model is loaded and warmed up."""
        ready = batcher.ready and batcher.healthy
        body = {
            "ready": ready,
            "model": str(qa.folder),
            "dtype": qa.dtype,
            "frontier_points": len(batcher.points),
        }
        return JSONResponse(body, 200 if ready else 503)

    @get_and_head("/metrics")
    async def prometheus() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _point_out(points: Sequence[Point], index: int | None, picked: Point | None = None) -> PointOut | None:
    """The frontier point that ran: a share point by its index, or the margin point a budget picked."""
    if index is None and picked is None:
        return None
    p = points[index] if picked is None else picked
    return PointOut(
        index=index,
        lengths=list(p.lengths),
        margins=margins_to_json(p.margins),
        flops_ratio=p.flops_ratio,
        heldout_f1=p.heldout_f1,
        heldout_exact_match=p.heldout_exact_match,
    )


async def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    """Invalid JSON is a 400; JSON that does not fit the schema a 422 naming each problem."""
    problems = error.errors()
    for problem in problems:
        if problem["type"] == "json_invalid":
            reason = problem.get("ctx", {}).get("error", problem["msg"])
            return JSONResponse({"error": f"invalid JSON: {reason}"}, 400)
    messages = dict.fromkeys(_problem(p) for p in problems)  # a union's branches say the same: once
    return JSONResponse({"error": "; ".join(messages)}, 422)


# what a field holds, where pydantic's words would name a Python class or a union's branches
_QA_INPUT = 'an object {"question": "...", "context": "..."}'
_EXPECTED = {
    "body": 'an object {"inputs": {"question": "...", "context": "..."}, "parameters": {...}}',
    "inputs": f"{_QA_INPUT}, or a list of them",
    "parameters": 'an object such as {"top_k": 3, "budget": 0.5}',
    "parameters.margins": "a number, or a list of numbers and nulls (one per layer)",
}


def _problem(problem: dict) -> str:
    """One way a body does not fit the schema, as "where: what is wrong"."""
    place = _where(problem["loc"])
    if place.startswith("parameters.margins") and problem["type"] in ("float_type", "list_type"):
        place = "parameters.margins"  # either branch of its union: say what the union takes
    elif problem["type"] not in ("model_type", "model_attributes_type"):
        return f"{place}: {problem['msg'].removeprefix('Value error, ')}"
    return f"{place}: should be {_EXPECTED.get(place, _QA_INPUT)}"


def _where(loc: Sequence[str | int]) -> str:
    """A readable place in the body: ("body", "inputs", "list", 0, "question") -> inputs[0].question."""
    parts = [p for p in loc if p not in ("body", "object", "list")]
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
    return text or "body"


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    detail = str(error.detail)
    if isinstance(error.__cause__, RecursionError):  # FastAPI's "There was an error parsing the body"
        detail = "invalid JSON: nested too deeply"
    return JSONResponse({"error": detail}, error.status_code, headers=error.headers)


class _JsonBody:
    """ASGI middleware: a body over the limit gets 413 before the app reads it, one that does not
    arrive within the request timeout 408, and every body is read as JSON, whatever its content
    type says (curl -d labels JSON as a form)."""

    def __init__(self, app, limit: int, timeout: float):
        self.app = app
        self.limit, self.timeout = limit, timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        declared = dict(headers).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(scope, receive, send)
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.timeout):  # a client that stops sending does not hold on
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # the client went away
                        return
                    chunks.append(message.get("body", b""))
                    size += len(chunks[-1])
                    if size > self.limit:
                        return await self._too_large(scope, receive, send)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            message = f"the request body did not arrive within the request timeout of {self.timeout:g} s"
            return await JSONResponse({"error": message}, 408)(scope, receive, send)
        body, replayed = b"".join(chunks), False
        try:
            body.decode()
        except UnicodeDecodeError as error:
            message = (
                f"the request body is not UTF-8 (byte 0x{body[error.start]:02x} at position {error.start}); "
                "send JSON encoded as UTF-8"
            )
            return await JSONResponse({"error": message}, 400)(scope, receive, send)

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        scope = scope | {"headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send) -> None:
        message = f"the request body is larger than the limit of {self.limit} bytes"
        await JSONResponse({"error": message}, 413)(scope, receive, send)


class _CountRequests:
    """ASGI middleware: requests, errors and latency of POST /v1/answer."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/answer":
            return await self.app(scope, receive, send)
        began, status = time.perf_counter(), None

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except BaseException:
            status = status or 500
            raise
        finally:
            status = status or 499  # nothing sent, nothing raised: the client went away (mid-body)
            self.metrics.requests.labels(code=str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(code=str(status)).inc()
            else:
                self.metrics.latency.observe(time.perf_counter() - began)


# --- the command -------------------------------------------------------------------------------


def listen(app: FastAPI, settings: ServeSettings) -> tuple[uvicorn.Server, socket.socket]:
    """A uvicorn server for the app and the socket it will serve on, bound now: a port in use is
    an error here, and port 0 has its number."""
    host, port = settings.host, settings.port
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as error:
        raise ServeError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        # requests in flight end within their timeout; shutdown waits for them and no longer
        timeout_graceful_shutdown=int(settings.request_timeout) + 5,
    )
    return uvicorn.Server(config), sock


def _exit_cleanly(signum, frame) -> None:
    print("dynamic-tinybert serve: stopped before it started serving", file=sys.stderr, flush=True)
    sys.exit(0)


def run_serve(args: argparse.Namespace) -> None:
    try:
        settings = settings_from(args, ServeSettings)
    except ServeError as error:
        raise UsageError(str(error)) from None
    try:
        if settings.dtype is not None:
            check_dtype(settings.dtype, resolve_device(settings.device))  # before the model loads
    except DtypeError as error:
        raise UsageError(str(error)) from None
    # SIGTERM while the model loads (nothing in flight yet) is a clean stop too
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    print(
        f"dynamic-tinybert serve: loading {settings.model or 'the default model'}",
        file=sys.stderr,
        flush=True,
    )
    try:
        qa = QuestionAnswerer.from_pretrained(settings.model, device=settings.device, dtype=settings.dtype)
        server, sock = listen(create_app(qa, settings), settings)
    except ServeError as error:
        raise UsageError(str(error)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    print(
        f"dynamic-tinybert serve: {qa.folder} in {qa.dtype} on {url} "
        "(GET /readyz answers 200 once warmed up)",
        file=sys.stderr,
        flush=True,
    )
    # uvicorn finishes the requests in flight on SIGTERM, then raises the signal again with the
    # handler found at start: a no-op, so that a graceful shutdown exits with status 0
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
