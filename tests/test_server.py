"""The HTTP server, started for real on loopback: the schema, every bad input, limits, timeouts,
health and metrics, concurrent clients, SLO mode and a graceful SIGTERM."""

from __future__ import annotations

import dataclasses
import http.client
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from dynamic_tinybert import QuestionAnswerer, batching
from dynamic_tinybert.batching import Cost, QueuedWork, SloController
from dynamic_tinybert.cli import main
from dynamic_tinybert.frontier import Frontier, Point, flops_ratio
from dynamic_tinybert.lengths import geometric_lengths
from dynamic_tinybert.server import ServeSettings, create_app, listen

from .conftest import CONTEXT
from .test_tokenizer import LONG_CONTEXT

QUESTION = "How large is the basin?"
CHEAP, MIDDLE = geometric_lengths(0.5, 4), geometric_lengths(0.8, 4)


class Client:
    """One keep-alive HTTP connection to a server on loopback."""

    def __init__(self, url: str, timeout: float = 60):
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        self.connection.request(method, path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        return response.status, response.read(), response.getheader("content-type", "")

    def answer(self, body) -> tuple[int, dict]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, data, _ = self.request("POST", "/v1/answer", raw, {"Content-Type": "application/json"})
        return status, json.loads(data)

    def close(self) -> None:
        self.connection.close()


def get(url: str, path: str) -> tuple[int, bytes, str]:
    client = Client(url)
    try:
        return client.request("GET", path)
    finally:
        client.close()


def post(url: str, body) -> tuple[int, dict]:
    client = Client(url)
    try:
        return client.answer(body)
    finally:
        client.close()


def wait_ready(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if get(url, "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} was not ready within {seconds} s")


def wait_listening(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            get(url, "/healthz")
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {seconds} s")


@contextmanager
def running(qa: QuestionAnswerer, wait: bool = True, **options):
    """A real uvicorn server on a free loopback port, in a thread; yields its URL (once ready)."""
    settings = ServeSettings(host="127.0.0.1", port=0, **options)
    uvicorn_server, sock = listen(create_app(qa, settings), settings)
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        if wait:
            wait_ready(url)
        else:
            wait_listening(url)
        yield url
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=30)


def metric(url: str, name: str) -> float:
    """One sample of /metrics, e.g. 'dynamic_tinybert_requests_total{code="200"}' (0 when absent)."""
    text = get(url, "/metrics")[1].decode()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def alone(qa, question, context, top_k=1, lengths=None) -> list[dict]:
    [answers] = qa.answer([question], [context], top_k, lengths=lengths)
    return [a.to_dict() for a in answers]


def assert_same_answers(got: list[dict], expected: list[dict]) -> None:
    assert [(a["answer"], a["start"], a["end"]) for a in got] == [
        (a["answer"], a["start"], a["end"]) for a in expected
    ]
    assert [a["score"] for a in got] == pytest.approx([a["score"] for a in expected], abs=1e-4)


@pytest.fixture(scope="module")
def qa(tiny_model):
    return QuestionAnswerer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def frontier_qa(tiny_model, tmp_path_factory):
    """The tiny model with a frontier of three points: cheap, middle, full."""
    folder = tmp_path_factory.mktemp("tiny-frontier") / "model"
    shutil.copytree(tiny_model, folder)
    config = QuestionAnswerer.from_pretrained(folder).model.config
    points = [
        Point(lengths or (1.0,) * 4, flops_ratio(config, lengths), 0.0, 0.0, em, f1)
        for lengths, em, f1 in [(CHEAP, 50.0, 60.0), (MIDDLE, 60.0, 70.0), (None, 70.0, 80.0)]
    ]
    Frontier(points).save(folder)
    return QuestionAnswerer.from_pretrained(folder)


@pytest.fixture(scope="module")
def plain(qa):
    """A model without a frontier, default settings."""
    with running(qa) as url:
        yield url


@pytest.fixture(scope="module")
def budgeted(frontier_qa):
    with running(frontier_qa) as url:
        yield url


# --- the schema --------------------------------------------------------------------------------


def test_one_input_gets_a_list_of_answers_and_what_ran(plain, qa):
    status, body = post(plain, {"inputs": {"question": QUESTION, "context": CONTEXT}})
    assert status == 200
    assert set(body) == {
        "answers",
        "lengths",
        "margins",
        "gflops_per_window",
        "frontier_point",
        "seconds",
        "batch_size",
        "warnings",
    }
    assert body["warnings"] == []
    assert_same_answers(body["answers"], alone(qa, QUESTION, CONTEXT))
    assert set(body["answers"][0]) == {"answer", "score", "start", "end"}
    assert body["lengths"] == [1.0] * 4 and body["frontier_point"] is None and body["margins"] is None
    assert body["gflops_per_window"] > 0 and 0 < body["seconds"] < 30 and body["batch_size"] >= 1

    status, body = post(
        plain, {"inputs": {"question": QUESTION, "context": CONTEXT}, "parameters": {"top_k": 3}}
    )
    assert status == 200 and len(body["answers"]) == 3
    assert_same_answers(body["answers"], alone(qa, QUESTION, CONTEXT, top_k=3))
    for a in body["answers"]:
        assert CONTEXT[a["start"] : a["end"]] == a["answer"]


def test_a_list_of_inputs_gets_a_list_of_answer_lists(plain, qa):
    pairs = [(QUESTION, CONTEXT), ("How long is the 12th river?", LONG_CONTEXT)]
    status, body = post(
        plain,
        {
            "inputs": [{"question": q, "context": c} for q, c in pairs],
            "parameters": {"top_k": 2, "max_answer_len": 5},
        },
    )
    assert status == 200 and len(body["answers"]) == 2
    for (q, c), got in zip(pairs, body["answers"], strict=True):
        [expected] = qa.answer([q], [c], top_k=2, max_answer_len=5)
        assert_same_answers(got, [a.to_dict() for a in expected])


def test_a_question_cut_to_fit_its_windows_is_told_in_the_response(plain):
    long = "why " * 200 + "?"
    status, body = post(plain, {"inputs": {"question": long, "context": CONTEXT}})
    assert status == 200 and len(body["warnings"]) == 1
    assert re.fullmatch(r"a question of \d+ tokens was cut to its first 190, .*", body["warnings"][0])
    pairs = [{"question": QUESTION, "context": CONTEXT}, {"question": long, "context": CONTEXT}]
    status, body = post(plain, {"inputs": pairs})
    assert status == 200 and [w.split(":")[0] for w in body["warnings"]] == ["inputs[1]"]  # the second


def test_explicit_lengths_run_as_given_and_cost_less(plain, qa):
    full = post(plain, {"inputs": {"question": QUESTION, "context": CONTEXT}})[1]
    status, body = post(
        plain, {"inputs": {"question": QUESTION, "context": CONTEXT}, "parameters": {"lengths": list(CHEAP)}}
    )
    assert status == 200 and body["lengths"] == list(CHEAP)
    assert body["gflops_per_window"] < full["gflops_per_window"]
    assert_same_answers(body["answers"], alone(qa, QUESTION, CONTEXT, lengths=CHEAP))


@pytest.mark.parametrize(
    ("parameters", "index"),
    [({}, 2), ({"budget": 1}, 2), ({"budget": 0.7}, 1), ({"budget": 0.5}, 0), ({"speedup": 1.2}, 1)],
)
def test_a_budget_runs_the_most_accurate_frontier_point_within_it(budgeted, frontier_qa, parameters, index):
    status, body = post(
        budgeted, {"inputs": {"question": QUESTION, "context": CONTEXT}, "parameters": parameters}
    )
    assert status == 200
    point = frontier_qa.frontier.points[index]
    assert body["frontier_point"]["index"] == index
    assert body["frontier_point"]["flops_ratio"] == pytest.approx(point.flops_ratio)
    assert body["lengths"] == list(point.lengths)
    assert_same_answers(body["answers"], alone(frontier_qa, QUESTION, CONTEXT, lengths=point.config))


def test_openapi_documents_the_schema(plain):
    status, raw, _ = get(plain, "/openapi.json")
    schema = json.loads(raw)
    assert status == 200 and "/v1/answer" in schema["paths"]
    parameters = schema["components"]["schemas"]["Parameters"]["properties"]
    assert {"top_k", "max_answer_len", "budget", "speedup", "lengths"} <= set(parameters)
    assert {"answers", "lengths", "gflops_per_window", "seconds"} <= set(
        schema["components"]["schemas"]["AnswerResponse"]["properties"]
    )
    assert get(plain, "/docs")[0] == 200


def test_the_schema_builds_without_warnings(qa):
    """HEAD on the status routes is served, and kept out of the schema, where it repeated GET's
    operation ids: three warnings in the server's log at every schema build."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        schema = create_app(qa, ServeSettings()).openapi()
    assert {"/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    assert all(set(schema["paths"][p]) == {"get"} for p in ("/healthz", "/readyz", "/metrics"))


# --- bad input ---------------------------------------------------------------------------------

GOOD = {"question": QUESTION, "context": CONTEXT}

BAD = {
    "invalid JSON": (b'{"inputs": {"question": "q", ', 400, "invalid JSON"),
    "not JSON at all": (b"question=q&context=c", 400, "invalid JSON"),
    "nested too deeply": (b"[" * 100_000 + b"]" * 100_000, 400, "invalid JSON: nested too deeply"),
    "empty body": (b"", 422, "body"),
    "a list instead of an object": ([GOOD], 422, 'body: should be an object {"inputs": '),
    "not UTF-8": (
        b'{"inputs": {"question": "q\xff", "context": "c"}}',
        400,
        "not UTF-8 (byte 0xff at position 26)",
    ),
    "no inputs": ({"parameters": {}}, 422, "inputs"),
    "inputs a string": ({"inputs": "q"}, 422, 'inputs: should be an object {"question"'),
    "an input a number": ({"inputs": [GOOD, 3]}, 422, 'inputs[1]: should be an object {"question"'),
    "inputs an empty list": ({"inputs": []}, 422, "inputs"),
    "missing question": ({"inputs": {"context": CONTEXT}}, 422, "inputs.question"),
    "missing context": ({"inputs": [GOOD, {"question": "q"}]}, 422, "inputs[1].context"),
    "empty question": ({"inputs": {"question": "", "context": CONTEXT}}, 422, "inputs.question"),
    "blank context": ({"inputs": {"question": "q", "context": " \n"}}, 422, "inputs.context"),
    "question a number": ({"inputs": {"question": 3, "context": CONTEXT}}, 422, "inputs.question"),
    "context null": ({"inputs": {"question": "q", "context": None}}, 422, "inputs.context"),
    "an unknown input field": ({"inputs": GOOD | {"title": "x"}}, 422, "inputs.title"),
    "top_k 0": ({"inputs": GOOD, "parameters": {"top_k": 0}}, 422, "parameters.top_k"),
    "top_k 21": ({"inputs": GOOD, "parameters": {"top_k": 21}}, 422, "parameters.top_k"),
    "top_k a string": ({"inputs": GOOD, "parameters": {"top_k": "3"}}, 422, "parameters.top_k"),
    "top_k a fraction": ({"inputs": GOOD, "parameters": {"top_k": 2.5}}, 422, "parameters.top_k"),
    "top_k true": ({"inputs": GOOD, "parameters": {"top_k": True}}, 422, "parameters.top_k"),
    "max_answer_len 0": (
        {"inputs": GOOD, "parameters": {"max_answer_len": 0}},
        422,
        "parameters.max_answer_len",
    ),
    "parameters a list": ({"inputs": GOOD, "parameters": [1]}, 422, "parameters: should be an object"),
    "margins a string": (
        {"inputs": GOOD, "parameters": {"margins": "3"}},
        422,
        "parameters.margins: should be a number, or a list of numbers and nulls (one per layer)",
    ),
    "an unknown parameter": ({"inputs": GOOD, "parameters": {"topk": 2}}, 422, "parameters.topk"),
    "budget 0": ({"inputs": GOOD, "parameters": {"budget": 0}}, 422, "parameters.budget"),
    "budget above 1": ({"inputs": GOOD, "parameters": {"budget": 1.5}}, 422, "parameters.budget"),
    "budget negative": ({"inputs": GOOD, "parameters": {"budget": -0.5}}, 422, "parameters.budget"),
    "budget a string": ({"inputs": GOOD, "parameters": {"budget": "0.5"}}, 422, "parameters.budget"),
    "budget NaN": (
        b'{"inputs": {"question": "q", "context": "c"}, "parameters": {"budget": NaN}}',
        422,
        "budget",
    ),
    "speedup below 1": ({"inputs": GOOD, "parameters": {"speedup": 0.5}}, 422, "parameters.speedup"),
    "budget and speedup": ({"inputs": GOOD, "parameters": {"budget": 0.5, "speedup": 2}}, 422, "at most one"),
    "lengths of the wrong count": ({"inputs": GOOD, "parameters": {"lengths": [1, 0.5]}}, 400, "4 layers"),
    "lengths increasing": ({"inputs": GOOD, "parameters": {"lengths": [1, 0.5, 0.7, 0.2]}}, 400, "increase"),
    "lengths above 1": ({"inputs": GOOD, "parameters": {"lengths": [2, 1, 1, 1]}}, 400, "outside (0, 1]"),
    "a budget without a frontier": ({"inputs": GOOD, "parameters": {"budget": 0.5}}, 400, "no frontier"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_its_4xx_and_says_what_is_wrong(plain, case):
    body, expected, words = BAD[case]
    status, reply = post(plain, body)
    assert status == expected, reply
    assert words in reply["error"]


def test_bad_input_with_a_frontier(budgeted):
    status, reply = post(budgeted, {"inputs": GOOD, "parameters": {"budget": 0.1}})
    assert status == 400 and "beyond the cheapest frontier point" in reply["error"]
    status, reply = post(budgeted, {"inputs": GOOD, "parameters": {"speedup": 100}})
    assert status == 400 and "speedup 100" in reply["error"]


def test_wrong_method_and_path_are_4xx(plain):
    assert get(plain, "/v1/answer")[0] == 405
    assert get(plain, "/v2/answer")[0] == 404


def test_a_body_over_the_size_limit_gets_413(plain):
    big = json.dumps({"inputs": {"question": "q", "context": "x " * 600_000}}).encode()
    status, reply = post(plain, big)
    assert status == 413 and "1000000 bytes" in reply["error"]
    # without a Content-Length, counted as it arrives
    client = Client(plain)
    try:
        client.connection.putrequest("POST", "/v1/answer")
        client.connection.putheader("Transfer-Encoding", "chunked")
        client.connection.endheaders()
        for start in range(0, len(big), 65536):
            chunk = big[start : start + 65536]
            client.connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        client.connection.send(b"0\r\n\r\n")
        response = client.connection.getresponse()
        assert response.status == 413
    finally:
        client.close()
    assert post(plain, {"inputs": GOOD})[0] == 200


def test_a_context_over_the_limit_and_too_many_inputs_get_413(plain):
    status, reply = post(plain, {"inputs": {"question": "q", "context": "word " * 10_001}})
    assert status == 413 and "50000" in reply["error"]
    status, reply = post(plain, {"inputs": [GOOD] * 65})
    assert status == 413 and "65 inputs" in reply["error"]


def test_a_request_that_times_out_gets_503_and_leaves_the_queue(qa):
    with running(qa, request_timeout=0.1, max_wait_ms=600) as url:
        status, reply = post(url, {"inputs": GOOD})
        assert status == 503 and "timeout" in reply["error"]
        assert metric(url, "dynamic_tinybert_queue_size") == 0
        time.sleep(0.7)  # past the batch window that request was waiting for
        assert metric(url, "dynamic_tinybert_batch_size_count") == 0  # it never ran
        assert metric(url, 'dynamic_tinybert_errors_total{code="503"}') == 1


def test_a_request_needing_too_many_windows_gets_413(plain):
    pairs = [{"question": QUESTION, "context": "word " * 9_000}] * 8  # 36 windows each
    status, reply = post(plain, {"inputs": pairs})
    assert status == 413 and "more than the limit of 256" in reply["error"]
    assert re.search(r"needs \d+ windows", reply["error"])


@contextmanager
def slow_model(qa, seconds_per_call: float):
    """Every call of the model takes at least this long, a stand-in for a big model; yields the
    list of the windows each call ran."""
    original, calls = qa.window_logits, []

    def slow(windows, *args, **kwargs):
        time.sleep(seconds_per_call)
        calls.append(len(windows))
        return original(windows, *args, **kwargs)

    qa.window_logits = slow
    try:
        yield calls
    finally:
        del qa.window_logits


HEAVY = {"inputs": [{"question": QUESTION, "context": "word " * 9_000}] * 5}  # 180 windows


def test_a_heavy_request_does_not_hold_up_a_small_one_sent_just_after_it(qa):
    small = {"inputs": {"question": QUESTION, "context": CONTEXT}}
    with slow_model(qa, 0.05), running(qa, max_batch=16, max_wait_ms=2) as url:
        alone_seconds = []
        for _ in range(3):
            began = time.perf_counter()
            assert post(url, small)[0] == 200
            alone_seconds.append(time.perf_counter() - began)
        with ThreadPoolExecutor(2) as pool:
            heavy = pool.submit(post, url, HEAVY)
            time.sleep(0.2)  # the heavy request is running
            began = time.perf_counter()
            status, body = post(url, small)
            small_seconds = time.perf_counter() - began
            heavy_running = not heavy.done()
            heavy_status, heavy_body = heavy.result(timeout=60)
    assert status == 200 and heavy_status == 200
    assert_same_answers(body["answers"], alone(qa, QUESTION, CONTEXT))
    assert len(heavy_body["answers"]) == 5
    # answered while the heavy one still ran (12 micro-batches, 0.6 s or more), within about the
    # micro-batch in progress and its own: before windows were scheduled in turn it waited for
    # the whole heavy request
    assert heavy_running
    assert small_seconds < 3 * sorted(alone_seconds)[1] + 0.15


class Schedule:
    """A batcher's queue worked by hand: jobs of so many windows, named, and micro-batches taken
    as if they then ran."""

    def __init__(self, qa: QuestionAnswerer, max_batch: int, slice_ms: float | None = None):
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.batcher = batching.Batcher(
            qa, batching.Metrics(), max_batch=max_batch, max_wait_ms=0, slice_ms=slice_ms
        )
        self.names: dict[batching.Job, str] = {}

    def job(self, name: str, windows: int, tokens: int = 1) -> batching.Job:
        """A request of one pair, cut into that many windows of that many tokens."""
        flat = [[None] * tokens] * windows
        job = batching.Job(
            ["q"], ["c"], [flat], 1, 30, None, None, time.perf_counter(), self.loop.create_future()
        )
        self.names[job] = name
        return job

    def take(self) -> list[tuple[str, int]]:
        slices = self.batcher._take(-1)
        self.batcher._requeue(slices)  # as once they have run
        return [(self.names[s.job], s.stop - s.first) for s in slices]


def test_short_requests_run_alone_but_never_twice_in_a_row_past_a_long_one(qa):
    """No long request's windows top up a micro-batch that finishes short ones (they would wait for
    them), and the long request still moves on at least every other micro-batch."""
    schedule = Schedule(qa, max_batch=4)
    batcher, job, take = schedule.batcher, schedule.job, schedule.take
    heavy, small1, small2, small3, small4 = (
        job("heavy", 20),
        job("s1", 1),
        job("s2", 1),
        job("s3", 1),
        job("s4", 2),
    )
    batcher.queue.extend([heavy, small1])
    assert take() == [("s1", 1)]  # alone, not with 3 of the heavy one's windows
    assert take() == [("heavy", 4)]
    batcher.queue.extend([small2, small3])
    assert take() == [("s2", 1), ("s3", 1)]
    batcher.queue.append(small4)
    assert take() == [("s4", 2), ("heavy", 2)]  # the heavy one moves: it was left out last time
    # a micro-batch of one window reaches a request that arrived behind a long one next time
    batcher.max_batch = 1
    running = batcher._take(-1)
    assert [schedule.names[s.job] for s in running] == ["heavy"]
    batcher.queue.append(job("s5", 1))  # arrives while the heavy one's window runs
    batcher._requeue(running)
    assert take() == [("s5", 1)]
    assert take() == [("heavy", 1)]
    schedule.loop.close()


def test_a_request_the_next_micro_batch_can_finish_keeps_its_place_in_the_round(qa):
    """Only a request with more windows left than a micro-batch holds goes behind the ones that
    arrived meanwhile: a request of two windows gets its second one in the next micro-batch, not
    a whole round of the queue later."""
    schedule = Schedule(qa, max_batch=2)
    batcher, job, take = schedule.batcher, schedule.job, schedule.take
    two, long = job("two", 2), job("long", 9)
    ones = [job(f"one{i}", 1) for i in range(6)]
    batcher.queue.extend([two, *ones[:4]])
    assert take() == [("one0", 1)]  # alone: the first window of two would not finish it
    assert take() == [("two", 1), ("one1", 1)]
    assert take() == [("two", 1), ("one2", 1)]  # its second window (sent behind, it waited for one3)
    batcher.queue.extend([long, *ones[4:]])
    assert take() == [("one3", 1)]  # alone: long's window would not finish it
    assert take() == [("long", 1), ("one4", 1)]
    assert long.turn > ones[5].arrived  # a long one still goes behind those that came after it
    schedule.loop.close()


def test_a_slice_holds_the_windows_its_time_runs_by_their_tokens(qa):
    """With a long request queued, a micro-batch holds the windows the full model runs in the
    slice, counted by their tokens: many short windows together, full ones one at a time."""
    schedule = Schedule(qa, max_batch=16, slice_ms=100)
    batcher = schedule.batcher
    batcher.slice_tokens = 500.0  # as if timed at start-up: 500 tokens of the full model in 100 ms

    def job(windows: int, tokens: int) -> batching.Job:
        return schedule.job(f"{windows} of {tokens} tokens", windows, tokens)

    short, full, middle = job(64, 20), job(10, 384), job(20, 100)
    assert batcher._cap([short], -1) == 16  # 25 windows of 20 tokens fit in the slice: max_batch
    assert batcher._cap([full], -1) == 1
    assert batcher._cap([middle], -1) == 5
    # as costly as the costliest queued, but a window for each queued request (up to max_batch):
    # they run one window each in turn anyway
    assert batcher._cap([short, full], -1) == 2
    assert batcher._cap([middle] + [job(1, 100) for _ in range(9)], -1) == 10
    assert batcher._cap([full] + [job(1, 384) for _ in range(30)], -1) == 16
    # a margin point a budget picked costs its held-out share of the full model's FLOPs
    full.picked = Point((1.0, 1.0), 0.5, None, 1.0, 70.0, 80.0, margins=(3.0, 3.0))
    assert batcher._cap([full], -1) == 2
    schedule.loop.close()


def test_a_timed_out_request_stops_costing_model_time(qa):
    with (
        slow_model(qa, 0.05) as calls,
        running(qa, max_batch=16, max_wait_ms=2, request_timeout=0.3) as url,
    ):
        calls.clear()  # the warm-up's
        status, reply = post(url, HEAVY)
        assert status == 503 and "timeout" in reply["error"]
        time.sleep(0.2)  # the micro-batch in progress ends
        ran = sum(calls)
        time.sleep(0.5)
        assert sum(calls) == ran  # and nothing more runs
        assert ran <= 16 * 9  # of its 180 windows, only those of the micro-batches before the timeout
        assert metric(url, "dynamic_tinybert_queue_size") == 0


def test_a_request_whose_client_goes_away_stops_costing_model_time(qa):
    with slow_model(qa, 0.05) as calls, running(qa, max_batch=16, max_wait_ms=2) as url:
        calls.clear()  # the warm-up's
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps(HEAVY).encode()
        with socket.create_connection((host, int(port))) as client:
            head = f"POST /v1/answer HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n\r\n"
            client.sendall(head.encode() + body)
            time.sleep(0.3)  # some of its 180 windows run, then the client leaves
        time.sleep(0.3)  # the micro-batch in progress ends
        ran = sum(calls)
        time.sleep(0.5)
        assert 0 < ran < 180 and sum(calls) == ran  # nothing more runs
        assert metric(url, "dynamic_tinybert_queue_size") == 0
        assert metric(url, 'dynamic_tinybert_requests_total{code="499"}') == 1
        assert post(url, {"inputs": GOOD})[0] == 200


def test_a_client_that_leaves_in_the_middle_of_its_body_counts_as_499_not_500(plain):
    def count(code: str) -> float:
        return metric(plain, f'dynamic_tinybert_requests_total{{code="{code}"}}')

    before = count("499"), count("500")
    host, port = plain.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as client:
        client.sendall(b'POST /v1/answer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"inputs":')
    deadline = time.monotonic() + 10
    while count("499") == before[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (count("499"), count("500")) == (before[0] + 1, before[1])


def test_a_client_that_stops_sending_its_body_gets_408_within_the_request_timeout(qa):
    with running(qa, request_timeout=1.0) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as client:
            client.sendall(b'POST /v1/answer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"inp')
            began, reply = time.monotonic(), b""
            while not reply.endswith(b"}") and (chunk := client.recv(4096)):  # the head, then the body
                reply += chunk
        reply = reply.decode()
        assert reply.startswith("HTTP/1.1 408") and time.monotonic() - began < 5
        assert '"error":"the request body did not arrive within the request timeout of 1 s"' in reply
        assert metric(url, 'dynamic_tinybert_requests_total{code="408"}') == 1


def test_a_request_sent_during_warm_up_does_not_drive_the_slo_controller_down(frontier_qa, monkeypatch):
    """It waited on the warm-up, not on the model: its wait counts from when the model was ready
    (before, the 1 s warm-up against a 0.5 s target sent it to the cheapest point)."""
    release = threading.Event()
    warm_up = batching.Batcher._warm_up
    monkeypatch.setattr(batching.Batcher, "_warm_up", lambda self: release.wait(30) and warm_up(self))
    with running(frontier_qa, wait=False, latency_slo=500) as url, ThreadPoolExecutor(1) as pool:
        early = pool.submit(post, url, {"inputs": GOOD})
        time.sleep(1.0)
        release.set()
        status, reply = early.result(timeout=30)
    assert status == 200 and reply["frontier_point"]["index"] == 2  # the full model, as when idle


# --- health, metrics ---------------------------------------------------------------------------


def test_ready_only_once_warmed_up_and_requests_before_then_wait(qa, monkeypatch):
    release = threading.Event()
    warm_up = batching.Batcher._warm_up
    monkeypatch.setattr(batching.Batcher, "_warm_up", lambda self: release.wait(30) and warm_up(self))
    with running(qa, wait=False) as url, ThreadPoolExecutor(1) as pool:
        assert get(url, "/healthz")[0] == 200
        status, raw, _ = get(url, "/readyz")
        assert status == 503 and json.loads(raw)["ready"] is False
        early = pool.submit(post, url, {"inputs": GOOD})
        time.sleep(0.2)
        assert not early.done()
        release.set()
        assert early.result(timeout=30)[0] == 200
        assert get(url, "/readyz")[0] == 200


def test_a_stopped_model_worker_shows_in_healthz_and_requests_get_503(qa, monkeypatch):
    def broken(self):
        raise RuntimeError("the model could not run")

    monkeypatch.setattr(batching.Batcher, "_warm_up", broken)
    with running(qa, wait=False) as url:
        deadline = time.monotonic() + 10
        while get(url, "/healthz")[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get(url, "/healthz")[0] == 503 and get(url, "/readyz")[0] == 503
        status, reply = post(url, {"inputs": GOOD})
        assert status == 503 and "worker has stopped" in reply["error"]


def test_health_readiness_and_metrics(plain):
    assert get(plain, "/healthz")[0] == 200
    for path in ("/healthz", "/readyz", "/metrics"):  # health checkers that send HEAD
        connection = http.client.HTTPConnection(*plain.removeprefix("http://").split(":"), timeout=10)
        connection.request("HEAD", path)
        assert connection.getresponse().status == 200
        connection.close()
    status, raw, _ = get(plain, "/readyz")
    assert status == 200 and json.loads(raw)["ready"] is True
    post(plain, {"inputs": GOOD})
    post(plain, {"inputs": "bad"})
    status, raw, content_type = get(plain, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    text = raw.decode()
    for series in (
        'dynamic_tinybert_requests_total{code="200"}',
        'dynamic_tinybert_requests_total{code="422"}',
        'dynamic_tinybert_errors_total{code="422"}',
        "dynamic_tinybert_request_seconds_bucket",
        "dynamic_tinybert_batch_size_bucket",
        "dynamic_tinybert_queue_size",
        "dynamic_tinybert_frontier_point -1.0",
    ):
        assert series in text
    assert "dynamic_tinybert_slowdown" not in text  # the SLO controller's, and there is none


# --- concurrency -------------------------------------------------------------------------------


def test_32_concurrent_clients_get_the_answers_of_each_question_alone(qa):
    questions = [QUESTION, "How many nations?", "Which forest?", "How long is the 12th river?", "What is 42?"]
    cases = [
        (q, c, top_k, lengths)
        for q in questions
        for c, top_k, lengths in [
            (CONTEXT, 1, None),
            (LONG_CONTEXT, 2, None),
            (CONTEXT, 3, MIDDLE),
            (CONTEXT, 1, CHEAP),
        ]
    ]
    expected = [alone(qa, q, c, top_k, lengths) for q, c, top_k, lengths in cases]

    def client(number: int) -> list[tuple[int, int, dict]]:
        connection, replies = Client(url), []
        try:
            for i in range(20):
                case = (number * 7 + i) % len(cases)
                q, c, top_k, lengths = cases[case]
                parameters = {"top_k": top_k} | ({"lengths": list(lengths)} if lengths else {})
                status, body = connection.answer(
                    {"inputs": {"question": q, "context": c}, "parameters": parameters}
                )
                replies.append((case, status, body))
        finally:
            connection.close()
        return replies

    with running(qa, max_batch=16, max_wait_ms=2) as url:
        with ThreadPoolExecutor(32) as pool:
            replies = [r for rs in pool.map(client, range(32)) for r in rs]
        batches = metric(url, "dynamic_tinybert_batch_size_count")
        assert metric(url, 'dynamic_tinybert_requests_total{code="200"}') == 640
    assert len(replies) == 640
    for case, status, body in replies:
        assert status == 200, body
        assert_same_answers(body["answers"], expected[case])
    assert batches < 640  # requests were batched together
    assert max(body["batch_size"] for _, _, body in replies) > 1


# --- SLO mode ----------------------------------------------------------------------------------


def test_slo_controller_moves_down_at_once_and_back_up_one_point_at_a_time():
    # target 0.1 s: down to what predicts under 0.08 s, up one point to what predicts under 0.06 s
    costs = [Cost(0.001, 1e-5), Cost(0.001, 2e-5), Cost(0.001, 4e-5)]
    controller = SloController(costs, slo=0.1, max_batch=8)
    request = QueuedWork(waited=0.0, windows=1, chars=200)
    assert controller.choose([request]) == 2  # 9 ms at the full model
    assert controller.choose([request] * 24) == 0  # 3 batches: 0.195 s at full, 0.099 s, 0.051 s
    assert controller.choose([request] * 12) == 1  # 2 batches: 0.098 s at full, 0.050 s at the middle
    assert controller.choose([request] * 9) == 1  # full at 0.065 s fits under 0.08 s but not 0.06 s: it stays
    assert controller.choose([request] * 2) == 2  # 0.017 s
    assert controller.choose([QueuedWork(0.09, 1, 200)]) == 0  # waited past the target already
    controller.observe(0, chars=200, seconds=0.003 * 10)  # the machine runs 10 times slower
    assert controller.slowdown == pytest.approx(10)
    assert controller.choose([request] * 9) == 0  # the middle point's 0.033 s is now 0.33 s


def test_slo_controller_follows_most_queued_requests_not_the_one_most_late():
    """One request already late (a request of several windows waits a round per window) does not
    send the whole queue to the cheapest point; most of the queue late does."""
    controller = SloController([Cost(0.001, 1e-5), Cost(0.001, 4e-5)], slo=0.1, max_batch=8)
    fresh, late = QueuedWork(0.0, 1, 200), QueuedWork(0.09, 1, 200)
    assert controller.choose([late, *[fresh] * 7]) == 1  # at full: 0.065 s each, the late one 0.155 s
    assert controller.choose([late] * 4 + [fresh] * 4) == 0  # at the cheapest point: 0.107 s for half


def test_slo_mode_moves_down_the_frontier_under_load(frontier_qa):
    body = {"inputs": {"question": QUESTION, "context": LONG_CONTEXT}}
    with running(frontier_qa, latency_slo=0.001, max_wait_ms=1) as url:  # a target no point can meet
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda _: post(url, body), range(16)))
        assert all(status == 200 for status, _ in replies)
        assert {reply["frontier_point"]["index"] for _, reply in replies} == {0}
        assert metric(url, "dynamic_tinybert_frontier_point") == 0
        assert metric(url, "dynamic_tinybert_frontier_point_flops_ratio") == pytest.approx(
            frontier_qa.frontier.points[0].flops_ratio
        )


def test_slo_mode_runs_the_full_model_when_idle_and_never_exceeds_a_budget(frontier_qa):
    with running(frontier_qa, latency_slo=60_000) as url:
        assert post(url, {"inputs": GOOD})[1]["frontier_point"]["index"] == 2
        status, reply = post(url, {"inputs": GOOD, "parameters": {"budget": 0.7}})
        assert status == 200 and reply["frontier_point"]["index"] == 1
        assert metric(url, "dynamic_tinybert_frontier_point") == 2
        assert metric(url, "dynamic_tinybert_slowdown") > 0  # 1 until micro-batches are timed


def test_the_slo_ladder_orders_shares_and_margins_by_speed_and_keeps_budgets():
    def point(shares, flops, f1, throughput, margins=None):
        return Point((shares,) * 2, flops, None, 1.0, f1, f1, 10.0, throughput, margins=margins)

    a, b, full = point(0.3, 0.3, 50.0, 300.0), point(0.5, 0.5, 60.0, 200.0), point(1.0, 1.0, 80.0, 100.0)
    m = point(1.0, 0.4, 70.0, 150.0, margins=(2.0, 2.0))  # fewer FLOPs than b, but slower
    frontier = Frontier([a, b, full], margin_points=[m])
    ladder = frontier.ladder()
    assert ladder == [a, b, m, full]  # by FLOPs alone, b would fall out
    untimed = [dataclasses.replace(p, throughput_batch32=None) for p in (a, b, full, m)]
    by_flops = Frontier(untimed[:3], margin_points=untimed[3:]).ladder()
    assert [p.heldout_f1 for p in by_flops] == [50.0, 70.0, 80.0]  # without timings: by FLOPs
    ceiling = frontier.pick(budget=0.45, among=ladder)
    assert ceiling is m
    job = batching.Job(["q"], ["c"], [[]], 1, 30, None, ladder.index(m), 0.0, None)
    job.start(1, ladder)  # the controller is at b: 0.5 of the FLOPs, over the budget
    assert job.point == 0 and job.lengths == a.config and job.margins is None
    loaded = batching.Job(["q"], ["c"], [[]], 1, 30, None, ladder.index(m), 0.0, None)
    loaded.start(3, ladder)  # idle: the ceiling itself, with its margins
    assert loaded.point == 2 and loaded.margins == (2.0, 2.0)


def test_the_loadtest_names_what_each_reply_ran():
    from .conftest import load_script

    key = load_script("loadtest")._point_key
    assert key(None) == "lengths" and key({"index": 3, "margins": None}) == 3
    assert key({"index": 1, "margins": [2.0, 2.0, None]}) == "margins 2,inf"  # --slo-margin-points' ladder
    assert key({"index": None, "margins": [3.25] * 6}) == "margins 3.25"  # a budget's, outside SLO mode


def test_the_loadtest_runs_the_slo_row_alone_with_no_budgets(frontier_qa, budgeted, capsys):
    """`--budgets ''`: no fixed-budget rows (training/slo_margin_points.sh compares SLO rows only)."""
    from .conftest import load_script

    loadtest = load_script("loadtest")
    with running(frontier_qa, latency_slo=60_000) as slo_url:
        argv = ["--url", budgeted, "--slo-url", slo_url, "--budgets", "", "--concurrency", "2"]
        code = loadtest.main([*argv, "--requests", "4"])
    out = capsys.readouterr().out
    header = loadtest.HEADER.splitlines()
    rows = [line for line in out.splitlines() if line.startswith("| ") and line not in header]
    assert code == 0 and [row.split(" | ")[0] for row in rows] == ["| SLO mode"], out
    cells = dict(zip(header[0].split(" | "), rows[0].split(" | "), strict=True))
    assert cells["requests"] == "4"
    # the server's micro-batches during the row, from its /metrics: 4 requests of one window
    assert 1 <= float(cells["windows/micro-batch"]) <= 4


def test_the_loadtest_starts_its_second_server_once_the_first_is_ready(tiny_model, monkeypatch, capsys):
    """Each server times the model while it warms up: the SLO server starts only once the plain
    one is ready, and both are ready before the first row runs."""
    from .conftest import load_script

    loadtest = load_script("loadtest")
    events = []

    def start_server(model, extra):
        name = "slo" if "--latency-slo" in extra else "plain"
        events.append(f"start {name}")
        return name, f"http://127.0.0.1:{1 if name == 'plain' else 2}"

    def wait_ready(url, seconds=300):
        events.append("ready " + ("plain" if url.endswith(":1") else "slo"))
        return {"frontier_points": 3}

    def run_row(url, mode, *args):
        events.append(f"row {mode}")
        return loadtest.Row(mode, latencies=[0.1], seconds=1.0)

    monkeypatch.setattr(loadtest, "start_server", start_server)
    monkeypatch.setattr(loadtest, "wait_ready", wait_ready)
    monkeypatch.setattr(loadtest, "run_row", run_row)
    monkeypatch.setattr(loadtest, "stop_server", lambda process: events.append(f"stop {process}"))
    argv = ["--model", str(tiny_model), "--latency-slo", "500", "--budgets", "1"]
    assert loadtest.main(argv) == 0, capsys.readouterr()
    assert events[:5] == ["start plain", "ready plain", "start slo", "ready slo", "row full model"]
    assert [e for e in events if e.startswith("row")] == ["row full model", "row SLO 500 ms"]
    assert events.count("ready slo") == 1  # started here, it is waited for once
    assert events[-2:] == ["stop plain", "stop slo"]
    events.clear()  # the heavy probe asks the plain server alone
    monkeypatch.setattr(loadtest, "heavy_probe", lambda url, pairs, contexts: events.append("probe") or "")
    assert loadtest.main([*argv, "--heavy", "2"]) == 0
    assert events == ["start plain", "ready plain", "probe", "stop plain"]


def test_the_heavy_probe_says_to_send_fewer_contexts_when_they_take_longer_than_the_timeout(qa):
    """On a slow machine `--heavy 8` outlasts the server's request timeout: the error says so and
    what to change, not "try again"."""
    from .conftest import load_script

    loadtest = load_script("loadtest")
    with (
        slow_model(qa, 0.05),
        running(qa, max_batch=16, max_wait_ms=2, request_timeout=0.4) as url,
        pytest.raises(loadtest.LoadTestError, match=r"503.*timeout.*try a smaller --heavy"),
    ):
        loadtest.heavy_probe(url, [(QUESTION, CONTEXT)], 3, repeats=1)


def test_slo_mode_needs_a_frontier(qa):
    with pytest.raises(ValueError, match="has none"):
        create_app(qa, ServeSettings(latency_slo=100))
    with pytest.raises(ValueError, match="--latency-slo"):
        create_app(qa, ServeSettings(slo_margin_points=True))


def test_settings_from_code_are_checked_as_the_command_line_checks_them(qa):
    from dynamic_tinybert.serve_settings import ServeError

    for bad, message in (
        ({"max_batch": 0}, "--max-batch must be at least 1"),
        ({"slice_ms": -1}, "--slice-ms"),
    ):
        with pytest.raises(ServeError, match=message):
            create_app(qa, ServeSettings(**bad))
    assert main(["serve", "--model", str(qa.folder), "--slice-ms", "-5"]) == 2


# --- the command -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--model", "no/such/folder"], "no/such/folder"),
        (["--max-batch", "0"], "--max-batch"),
        (["--latency-slo", "-5"], "--latency-slo"),
        (["--port", "70000"], "--port"),
        (["--latency-slo", "100"], "frontier"),
        (["--request-timeout", "inf"], "--request-timeout must be a finite number"),
        (["--max-wait-ms", "inf"], "--max-wait-ms must be a finite number"),
    ],
)
def test_serve_command_errors_exit_2_with_one_line(tiny_model, capsys, argv, words):
    model = [] if "--model" in argv else ["--model", str(tiny_model)]
    assert main(["serve", *model, *argv]) == 2
    # besides the progress line of the model loading, one line
    err = [line for line in capsys.readouterr().err.strip().splitlines() if ": loading " not in line]
    assert len(err) == 1 and err[0].startswith("dynamic-tinybert serve: error:") and words in err[0]


def test_sigterm_lets_requests_in_flight_finish_then_exits_0(tiny_model):
    process = subprocess.Popen(
        [sys.executable, "-m", "dynamic_tinybert", "serve", "--model", str(tiny_model), "--port", "0"]
        + ["--max-wait-ms", "1500"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "loading" in process.stderr.readline()
        line = process.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        wait_ready(url)
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(post, url, {"inputs": GOOD})
            time.sleep(0.5)  # the request now waits in the queue for its batch window
            process.send_signal(signal.SIGTERM)
            status, reply = in_flight.result(timeout=30)
        assert status == 200 and reply["answers"]
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()


def test_sigterm_while_the_model_loads_exits_0(tiny_model):
    process = subprocess.Popen(
        [sys.executable, "-m", "dynamic_tinybert", "serve", "--model", str(tiny_model), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "loading" in process.stderr.readline()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
