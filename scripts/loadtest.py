"""Load-test `dynamic-tinybert serve` on loopback: throughput and p50/p95/p99 latency at fixed
budgets and in SLO mode, as a markdown table.

    python scripts/loadtest.py --model M --data ../shared/data/squad/dev-v1.1.json --latency-slo 300
    python scripts/loadtest.py --url http://127.0.0.1:8000 [--slo-url http://127.0.0.1:8001]

With --model it starts two servers of its own on free loopback ports, one plain and one with
--latency-slo, one after the other (each times the model as it warms up), and stops them at the
end; with --url it tests servers already running. Only loopback addresses are accepted. Each row
is a closed loop: --concurrency clients, each sending its next request when the last one is
answered, until --requests requests or --seconds seconds, whichever comes first. Latency is
measured by the client, HTTP included; windows/micro-batch is the server's (its /metrics) during
the row.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from dynamic_tinybert.cli import exit_status
from dynamic_tinybert.frontier import parse_budgets
from dynamic_tinybert.options import UsageError, check_count
from dynamic_tinybert.serve_settings import ServeError, ServeSettings

MAX_REQUESTS = 100_000
MAX_SECONDS = 3600

# used without --data: a few short passages, each with its questions
BUILT_IN = [
    (
        "The Amazon rainforest covers much of the Amazon basin of South America. The basin covers "
        "7,000,000 square kilometres, of which 5,500,000 square kilometres are covered by the "
        "rainforest. The region includes territory belonging to nine nations.",
        ["How large is the basin?", "How many nations does the region include?", "What covers the basin?"],
    ),
    (
        "The first transcontinental railroad in the United States was completed in 1869, when the "
        "Central Pacific and Union Pacific lines met at Promontory Summit in Utah. The journey from "
        "coast to coast fell from months to about a week.",
        [
            "When was the railroad completed?",
            "Where did the two lines meet?",
            "How long did the journey take?",
        ],
    ),
]


class LoadTestError(UsageError):
    """Options or servers the load test cannot run with."""


def _point_key(point: dict | None) -> int | str:
    """How "points used" names what a reply ran: "margins m" for a margin point, the frontier
    index of a share point, "lengths" for a request's own configuration."""
    if point is None:
        return "lengths"
    if point.get("margins") is not None:
        return "margins " + ",".join(
            "inf" if m is None else f"{m:g}" for m in dict.fromkeys(point["margins"])
        )
    return point["index"]


@dataclass
class Row:
    mode: str
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests
    errors: Counter = field(default_factory=Counter)  # status -> count
    points: Counter = field(default_factory=Counter)  # frontier index -> count
    gflops: list[float] = field(default_factory=list)
    f1s: list[float] = field(default_factory=list)  # held-out F1 of the frontier point each ran
    seconds: float = 0.0
    batch_windows: float | None = None  # the server's windows per micro-batch during the row

    def markdown(self) -> str:
        answered = len(self.latencies)
        p50, p95, p99 = (np.percentile(self.latencies, [50, 95, 99]) * 1000) if answered else (np.nan,) * 3
        errors = sum(self.errors.values())
        # frontier indices in order, then margin points and "lengths" (requests that gave their own)
        order = sorted(self.points.items(), key=lambda kv: (isinstance(kv[0], str), str(kv[0]).zfill(6)))
        points = ", ".join(f"{i}: {n}" for i, n in order)
        gflops = f"{np.mean(self.gflops):.3f}" if self.gflops else "-"
        f1 = f"{np.mean(self.f1s):.2f}" if self.f1s else "-"
        batch = "-" if self.batch_windows is None else f"{self.batch_windows:.1f}"
        return (
            f"| {self.mode} | {answered + errors} | {errors} | {answered / self.seconds:.1f} | "
            f"{p50:.0f} | {p95:.0f} | {p99:.0f} | {batch} | {gflops} | {f1} | {points or '-'} |"
        )


HEADER = (
    "| mode | requests | errors | answered/s | p50 ms | p95 ms | p99 ms | windows/micro-batch "
    "| GFLOPs/window | held-out F1 of the points | points used |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
)


def loopback(url: str) -> tuple[str, int]:
    """(host, port) of an http URL on this machine; anything else is refused."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        raise LoadTestError(f"{url} is not of the form http://127.0.0.1:PORT")
    host = parts.hostname
    if host != "localhost" and not _is_loopback_ip(host):
        raise LoadTestError(
            f"{host} is not a loopback address: this script only loads servers on this machine"
        )
    return host, parts.port


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_pairs(data: Path | None, limit: int) -> list[tuple[str, str]]:
    if data is None:
        return [(q, c) for c, questions in BUILT_IN for q in questions]
    from dynamic_tinybert import read_squad

    return [(e.question, e.context) for e in read_squad(data)[:limit]]


def get(url: str, path: str) -> tuple[int, bytes]:
    host, port = loopback(url)
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def get_json(url: str, path: str) -> tuple[int, dict]:
    status, body = get(url, path)
    return status, json.loads(body or b"{}")


def batch_totals(url: str) -> tuple[float, float] | None:
    """The server's micro-batches so far and the windows they held, from its /metrics (None where
    it does not export them)."""
    try:
        status, body = get(url, "/metrics")
    except OSError:
        return None
    text = body.decode(errors="replace")
    found = [
        re.search(rf"^dynamic_tinybert_batch_size_{name} (\S+)$", text, re.M) for name in ("count", "sum")
    ]
    if status != 200 or None in found:
        return None
    return float(found[0].group(1)), float(found[1].group(1))


def wait_ready(url: str, seconds: float = 300) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            status, body = get_json(url, "/readyz")
            if status == 200:
                return body
        except OSError:
            pass
        time.sleep(0.2)
    raise LoadTestError(
        f"{url} was not ready within {seconds:.0f} s: is `dynamic-tinybert serve` running there?"
    )


def start_server(model: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    """`dynamic-tinybert serve` on a free loopback port; its URL from the line it prints."""
    command = [sys.executable, "-m", "dynamic_tinybert", "serve", "--model", model, "--host", "127.0.0.1"]
    process = subprocess.Popen([*command, "--port", "0", *extra], stderr=subprocess.PIPE, text=True)
    said = []
    for line in process.stderr:  # warnings may come first
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        if match is not None:
            threading.Thread(target=process.stderr.read, daemon=True).start()  # keep its pipe drained
            return process, match.group(0)
        said.append(line.strip())
    process.wait()
    raise LoadTestError(f"the server did not start: {' '.join(said)}")


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def run_row(
    url: str,
    mode: str,
    pairs: list[tuple[str, str]],
    parameters: dict,
    concurrency: int,
    requests: int,
    seconds: float,
) -> Row:
    """A closed loop of `concurrency` clients until `requests` are sent or `seconds` pass."""
    host, port = loopback(url)
    row, lock, sent = Row(mode), threading.Lock(), [0]
    deadline = time.monotonic() + seconds

    def client(number: int) -> None:
        connection = http.client.HTTPConnection(host, port, timeout=max(seconds, 30) + 30)
        try:
            while time.monotonic() < deadline:
                with lock:
                    if sent[0] >= requests:
                        return
                    i = sent[0]
                    sent[0] += 1
                question, context = pairs[(i * 7919 + number) % len(pairs)]
                body = json.dumps(
                    {"inputs": {"question": question, "context": context}, "parameters": parameters}
                )
                began = time.perf_counter()
                connection.request("POST", "/v1/answer", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                reply = json.loads(response.read())
                took = time.perf_counter() - began
                with lock:
                    if response.status != 200:
                        if not row.errors:
                            print(f"{mode}: {response.status} {reply.get('error')}", file=sys.stderr)
                        row.errors[response.status] += 1
                        continue
                    row.latencies.append(took)
                    row.gflops.append(reply["gflops_per_window"])
                    point = reply["frontier_point"]
                    row.points[_point_key(point)] += 1
                    if point is not None:
                        row.f1s.append(point["heldout_f1"])
        finally:
            connection.close()

    before, began = batch_totals(url), time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client, range(concurrency)))
    row.seconds = time.perf_counter() - began
    after = batch_totals(url)
    if before is not None and after is not None and after[0] > before[0]:
        row.batch_windows = (after[1] - before[1]) / (after[0] - before[0])
    return row


def post(url: str, body: dict) -> tuple[int, dict, float]:
    """One request on a connection of its own: status, reply, seconds (HTTP included)."""
    host, port = loopback(url)
    connection = http.client.HTTPConnection(host, port, timeout=600)
    try:
        began = time.perf_counter()
        connection.request("POST", "/v1/answer", json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        reply = json.loads(response.read())
        return response.status, reply, time.perf_counter() - began
    finally:
        connection.close()


def heavy_probe(url: str, pairs: list[tuple[str, str]], contexts: int, repeats: int = 5) -> str:
    """A heavy request (`contexts` contexts of about 25,000 characters, each the --data passages
    run together) and, 0.3 s later, a small one: the small one's latency against its latency alone."""
    question, context = pairs[0]
    small = {"inputs": {"question": question, "context": context}}
    passages, long_context = iter(p for _, p in dict.fromkeys(pairs, None)), ""
    while len(long_context) < 25_000:
        long_context += next(passages, context) + " "
    heavy = {"inputs": [{"question": q, "context": long_context} for q, _ in pairs[:contexts]]}
    alone = [post(url, small)[2] for _ in range(repeats)]
    behind, heavy_seconds = [], []
    with ThreadPoolExecutor(1) as pool:
        for _ in range(repeats):
            running = pool.submit(post, url, heavy)
            time.sleep(0.3)
            behind.append(_answered("small", *post(url, small), contexts))
            heavy_seconds.append(_answered("heavy", *running.result(), contexts))
    return (
        "| small request alone, median ms | sent 0.3 s after a heavy one, median ms | worst ms | "
        "worst / alone | heavy request, median s |\n| ---: | ---: | ---: | ---: | ---: |\n"
        f"| {np.median(alone) * 1000:.0f} | {np.median(behind) * 1000:.0f} | {max(behind) * 1000:.0f} | "
        f"{max(behind) / np.median(alone):.2f} | {np.median(heavy_seconds):.1f} |\n\n"
        f"heavy: {contexts} contexts of {len(long_context):,} characters; {repeats} repeats"
    )


def _answered(which: str, status: int, reply: dict, took: float, contexts: int) -> float:
    """The seconds a request of the heavy probe took, or why it was not answered."""
    if status == 200:
        return took
    error = str(reply.get("error"))
    if status == 503 and "timeout" in error:  # trying again would not help
        error = error.removesuffix("; try again")
        error += f"; {contexts} long contexts take this machine longer than that: try a smaller --heavy"
    why = f"the {which} request got {status}: {error}"
    raise LoadTestError(why)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", help="start servers for this model folder (on loopback)")
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--slo-url", help="with --url: a running server in SLO mode, for the SLO row")
    parser.add_argument("--latency-slo", type=float, help="with --model: the SLO row's target, milliseconds")
    parser.add_argument(
        "--slo-margin-points",
        action="store_true",
        help="with --model: the SLO server moves along the shares and margin points together",
    )
    parser.add_argument(
        "--budgets",
        default="1,0.5,0.33",
        help="fixed budgets, one row each (1: the full model); '' for none (the SLO row alone)",
    )
    parser.add_argument(
        "--data", type=Path, help="SQuAD-format file to take questions from (default: built in)"
    )
    parser.add_argument(
        "--questions", type=int, default=500, help="how many questions of --data to cycle through"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="clients sending at once")
    parser.add_argument("--requests", type=int, default=400, help="most requests per row")
    parser.add_argument("--seconds", type=float, default=60, help="most seconds per row")
    parser.add_argument("--max-batch", type=int, help="with --model: passed to the servers")
    parser.add_argument("--slice-ms", type=float, help="with --model: passed to the servers")
    parser.add_argument("--max-wait-ms", type=float, help="with --model: passed to the servers")
    parser.add_argument(
        "--dtype", choices=("fp32", "bf16", "int8"), help="with --model: passed to the servers"
    )
    parser.add_argument(
        "--heavy",
        type=int,
        metavar="N",
        help="instead of the load rows: does a request of N long contexts delay a small one sent after it?",
    )
    args = parser.parse_args(argv)
    check_options(parser, args)
    return exit_status(parser.prog, lambda: run(args))


# the options passed to the servers this script starts, which servers already running ignore
SERVER_OPTIONS = ("latency_slo", "slo_margin_points", "max_batch", "slice_ms", "max_wait_ms", "dtype")


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Options that go together; the servers' options as the server checks them, before one starts."""
    values = {name: getattr(args, name) for name in SERVER_OPTIONS}
    given = {name: value for name, value in values.items() if value is not None and value is not False}
    if args.url is not None and given:
        names = ", ".join("--" + name.replace("_", "-") for name in given)
        parser.error(f"{names}: the settings of the servers --model starts; a server at --url has its own")
    if args.model is not None and args.slo_url is not None:
        parser.error("--slo-url is the SLO server of --url; with --model, give --latency-slo instead")
    if args.model is not None:
        try:
            ServeSettings(model=args.model, **given).check()
        except ServeError as error:
            parser.error(str(error))


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.requests <= MAX_REQUESTS or not 0 < args.seconds <= MAX_SECONDS:
        raise LoadTestError(f"--requests must be in 1..{MAX_REQUESTS} and --seconds in (0, {MAX_SECONDS}]")
    if args.concurrency < 1:
        raise LoadTestError("--concurrency must be at least 1")
    for url in (args.url, args.slo_url):
        if url is not None:
            loopback(url)
    check_count(args.questions, "--questions")
    check_count(args.heavy, "--heavy")
    budgets = parse_budgets(args.budgets) if args.budgets.strip() else []
    pairs = read_pairs(args.data, args.questions)
    extra = [
        *(["--max-batch", str(args.max_batch)] if args.max_batch is not None else []),
        *(["--slice-ms", str(args.slice_ms)] if args.slice_ms is not None else []),
        *(["--max-wait-ms", str(args.max_wait_ms)] if args.max_wait_ms is not None else []),
        *(["--dtype", args.dtype] if args.dtype else []),
    ]
    started: list[subprocess.Popen] = []
    try:
        url, slo_url = args.url, args.slo_url
        if args.model is not None:
            process, url = start_server(args.model, extra)
            started.append(process)
        ready = wait_ready(url, 300 if args.model is not None else 30)  # a --url server runs already
        if args.model is not None and args.latency_slo is not None and args.heavy is None:
            # one after the other, and before any row: a server times the model as it warms up
            # (the slice's windows, the SLO controller's costs), and other work would slow that
            slo = ["--latency-slo", str(args.latency_slo)]
            if args.slo_margin_points:
                slo.append("--slo-margin-points")
            process, slo_url = start_server(args.model, [*extra, *slo])
            started.append(process)
            wait_ready(slo_url, 300)
        if args.heavy is not None:
            print(heavy_probe(url, pairs, args.heavy))
            return 0
        rows = []
        bounds = (args.concurrency, args.requests, args.seconds)
        for budget in budgets:
            if budget < 1 and not ready.get("frontier_points"):
                print(f"skipping budget {budget:g}: the model has no frontier", file=sys.stderr)
                continue
            mode = "full model" if budget >= 1 else f"budget {budget:g}"
            rows.append(run_row(url, mode, pairs, {} if budget >= 1 else {"budget": budget}, *bounds))
            print(rows[-1].markdown(), file=sys.stderr)
        if slo_url is not None:
            if args.model is None:  # one started above is ready already
                wait_ready(slo_url, 30)
            mode = f"SLO {args.latency_slo:g} ms" if args.latency_slo else "SLO mode"
            mode += ", shares and margin points" if args.slo_margin_points else ""
            rows.append(run_row(slo_url, mode, pairs, {}, *bounds))
    finally:
        for process in started:
            stop_server(process)
    print(
        f"{len(pairs)} questions, {args.concurrency} concurrent clients, at most {args.requests} requests "
        f"or {args.seconds:g} s per row; the server in {ready.get('dtype', 'fp32')}\n"
    )
    print(HEADER)
    for row in rows:
        print(row.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
