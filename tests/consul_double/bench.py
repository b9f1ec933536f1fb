"""Throughput benchmark of the Consul stand-in: it must never be the bottleneck.

    python -m tests.consul_double.bench [--duration 5] [--clients 2] [--blocking 200] [--json]

Starts the stand-in as its own process (`python -m tests.consul_double`), then:

1. Simple requests: `--clients` processes, each with one keep-alive connection, cycle
   through `GET /v1/kv/<key>`, `PUT /v1/session/renew/<id>` and
   `GET /v1/agent/service/<id>` for `--duration` seconds; the figure is answered
   requests per second, all clients together.
2. Blocking queries: `--blocking` threads, each on its own connection, block on one KV
   key. The control API's `GET /blocked` must count them all; an unrelated write must
   end none; one write to the key must end all of them, each answering the new value.

Prints a small table (or one JSON object with `--json`) and exits 1 when a figure misses
its bar (`--min-rps`, default 1000; every blocking query held and woken exactly once).
The blocking probe is also used in-process by tests/conformance/test_capacity.py.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH_KEY = "bench/value"
WATCHED_KEY = "bench/watched"
UNRELATED_KEY = "bench/unrelated"
SERVICE_ID = "bench-service"
HTTP_TIMEOUT = 30.0
BLOCKING_WAIT = "120s"


# -- a tiny keep-alive HTTP client ---------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection: request → (status, body, headers)."""

    def __init__(self, base_url: str, timeout: float = HTTP_TIMEOUT) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"need an http://host:port address, got {base_url!r}")
        self._connection = http.client.HTTPConnection(parts.hostname, parts.port,
                                                      timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None
                ) -> tuple[int, bytes, http.client.HTTPMessage]:
        self._connection.request(method, path, body=body)
        response = self._connection.getresponse()
        return response.status, response.read(), response.headers

    def json(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded JSON answer; `body` bytes go out raw (KV values), anything else as JSON."""
        payload = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        status, data, _ = self.request(method, path, payload)
        if status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {data[:200]!r}")
        return json.loads(data) if data else None

    def close(self) -> None:
        self._connection.close()


# -- the stand-in as a separate process ------------------------------------------------------


@dataclass(frozen=True)
class Addresses:
    node: str
    control: str


@contextmanager
def double_process(nodes: str = "n1") -> Iterator[Addresses]:
    """`python -m tests.consul_double` on ephemeral ports; stopped (SIGTERM) on exit."""
    command = [sys.executable, "-m", "tests.consul_double", "--nodes", nodes, "--port", "0",
               "--control-port", "0", "--session-ttl-min", "1s"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the stand-in exited with {process.wait()} before starting")
        announced = json.loads(line)
        first = nodes.split(",")[0]
        yield Addresses(announced["nodes"][first], announced["control"])
    finally:
        process.terminate()
        try:
            process.wait(timeout=HTTP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- 1. simple requests per second -------------------------------------------------------------


@dataclass(frozen=True)
class Fixture:
    """What the simple requests read and renew."""

    session_id: str

    def requests(self) -> list[tuple[str, str, str]]:
        """(name, method, path) of each simple request, in the order a client cycles them."""
        return [
            ("kv get", "GET", f"/v1/kv/{BENCH_KEY}"),
            ("session renew", "PUT", f"/v1/session/renew/{self.session_id}"),
            ("agent service", "GET", f"/v1/agent/service/{SERVICE_ID}"),
        ]


def prepare(node_url: str) -> Fixture:
    connection = Connection(node_url)
    try:
        connection.json("PUT", f"/v1/kv/{BENCH_KEY}", b"benchmark value")
        session = connection.json("PUT", "/v1/session/create", {"TTL": "60s"})
        connection.json("PUT", "/v1/agent/service/register",
                        {"ID": SERVICE_ID, "Name": "bench", "Tags": ["replica"],
                         "Check": {"TTL": "10m", "Status": "passing"}})
        return Fixture(session["ID"])
    finally:
        connection.close()


def _client_loop(node_url: str, plan: list[tuple[str, str, str]], start_at: float,
                 duration: float, results: Any) -> None:
    """One client process: wait for the common start, then cycle `plan` until time is up."""
    counts: Counter[str] = Counter()
    connection = Connection(node_url)
    try:
        while time.monotonic() < start_at:
            time.sleep(0.001)
        stop_at = start_at + duration
        while time.monotonic() < stop_at:
            for name, method, path in plan:
                status, _, _ = connection.request(method, path)
                counts[name if status == 200 else "errors"] += 1
    finally:
        connection.close()
        # The last cycle runs past stop_at: report the time really spent.
        results.put((dict(counts), time.monotonic() - start_at))


@dataclass
class Throughput:
    clients: int
    seconds: float
    requests: int
    errors: int
    per_request: dict[str, int] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def measure_throughput(node_url: str, fixture: Fixture, clients: int,
                       duration: float) -> Throughput:
    """`clients` processes (monotonic is system-wide, so they share one start instant)."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.monotonic() + 1.0 + 0.2 * clients  # lets every process spawn first
    workers = [
        context.Process(target=_client_loop,
                        args=(node_url, fixture.requests(), start_at, duration, results))
        for _ in range(clients)
    ]
    for worker in workers:
        worker.start()
    totals: Counter[str] = Counter()
    elapsed = duration
    for _ in workers:
        counts, spent = results.get(timeout=duration + 60)
        totals.update(counts)
        elapsed = max(elapsed, spent)
    for worker in workers:
        worker.join(timeout=HTTP_TIMEOUT)
    errors = totals.pop("errors", 0)
    return Throughput(clients, round(elapsed, 3), sum(totals.values()), errors, dict(totals))


# -- 2. concurrent blocking queries ------------------------------------------------------------


@dataclass
class BlockingOutcome:
    queries: int
    held: bool  # all were counted as blocked before any write
    returned_early: int  # answered without the new value: ended before the write to the key
    woken_by_write: int  # answered with the new value
    wake_seconds: float  # from the write to the last answer
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.held and self.returned_early == 0 and self.woken_by_write == self.queries
                and not self.failures)


class BlockingProbe:
    """`count` threads, each with its own connection, blocked on one KV key.

    `blocked_count` tells how many requests the stand-in holds (in-process:
    `ConsulDouble.blocked_queries`; from outside: the control API's `GET /blocked`).
    """

    def __init__(self, node_url: str, count: int, blocked_count: Callable[[], int]) -> None:
        self._node_url = node_url
        self._count = count
        self._blocked_count = blocked_count
        self._answers: list[tuple[float, int, bytes] | None] = [None] * count
        self._failures: list[str] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def run(self, deadline: float = 20.0) -> BlockingOutcome:
        setup = Connection(self._node_url)
        try:
            setup.json("PUT", f"/v1/kv/{WATCHED_KEY}", b"before")
            _, _, headers = setup.request("GET", f"/v1/kv/{WATCHED_KEY}")
            index = int(headers["X-Consul-Index"])
            self._start_threads(index)
            held = self._wait_for(lambda: self._blocked_count() >= self._count, deadline)
            setup.json("PUT", f"/v1/kv/{UNRELATED_KEY}", b"noise")
            written_at = time.monotonic()
            setup.json("PUT", f"/v1/kv/{WATCHED_KEY}", b"after")
            self._wait_for(lambda: self._answered() == self._count, deadline)
        finally:
            setup.close()
            for thread in self._threads:
                thread.join(timeout=deadline)
        return self._outcome(held, written_at)

    def _start_threads(self, index: int) -> None:
        path = f"/v1/kv/{WATCHED_KEY}?index={index}&wait={BLOCKING_WAIT}"
        for position in range(self._count):
            thread = threading.Thread(target=self._query, args=(position, path),
                                      name=f"blocking-probe-{position}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _query(self, position: int, path: str) -> None:
        connection = Connection(self._node_url, timeout=180.0)
        try:
            status, body, _ = connection.request("GET", path)
            with self._lock:
                self._answers[position] = (time.monotonic(), status, body)
        except Exception as error:  # reported in the outcome, never raised in a thread
            with self._lock:
                self._failures.append(f"query {position}: {error!r}")
        finally:
            connection.close()

    def _answered(self) -> int:
        with self._lock:
            return sum(answer is not None for answer in self._answers) + len(self._failures)

    @staticmethod
    def _wait_for(condition: Callable[[], bool], deadline: float) -> bool:
        give_up = time.monotonic() + deadline
        while not condition():
            if time.monotonic() >= give_up:
                return False
            time.sleep(0.01)
        return True

    def _outcome(self, held: bool, written_at: float) -> BlockingOutcome:
        """Judged by what each query answered, so no verdict depends on timing."""
        with self._lock:
            answers = [answer for answer in self._answers if answer is not None]
            failures = list(self._failures)
        woken = [answer for answer in answers if answer[1] == 200 and _value(answer[2]) == b"after"]
        last = max((answer[0] for answer in woken), default=written_at)
        return BlockingOutcome(self._count, held, len(answers) - len(woken), len(woken),
                               max(0.0, last - written_at), failures)


def _value(body: bytes) -> bytes | None:
    """The decoded Value of a single-key KV answer (None when the body is not one)."""
    try:
        encoded = json.loads(body)[0]["Value"]
    except (ValueError, LookupError, TypeError):
        return None
    return base64.b64decode(encoded) if encoded else b""


def control_blocked_count(control_url: str) -> Callable[[], int]:
    def count() -> int:
        connection = Connection(control_url)
        try:
            return int(connection.json("GET", "/blocked")["blocked"])
        finally:
            connection.close()

    return count


# -- the command -------------------------------------------------------------------------------


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    with double_process() as addresses:
        fixture = prepare(addresses.node)
        throughput = measure_throughput(addresses.node, fixture, arguments.clients,
                                        arguments.duration)
        blocking = BlockingProbe(addresses.node, arguments.blocking,
                                 control_blocked_count(addresses.control)).run()
    return {
        "throughput": {**asdict(throughput), "per_second": round(throughput.per_second, 1)},
        "blocking": {**asdict(blocking), "ok": blocking.ok},
        "acceptance": {
            "min_rps": arguments.min_rps,
            "throughput_ok": throughput.per_second >= arguments.min_rps
            and throughput.errors == 0,
            "blocking_ok": blocking.ok,
        },
    }


def table(report: dict[str, Any]) -> str:
    throughput, blocking = report["throughput"], report["blocking"]
    acceptance = report["acceptance"]
    rows = [
        ("simple requests/s", f"{throughput['per_second']:.0f}",
         f">= {acceptance['min_rps']:g}", acceptance["throughput_ok"]),
        ("  clients x seconds", f"{throughput['clients']} x {throughput['seconds']:g}", "", None),
        *((f"  {name}", str(count), "", None)
          for name, count in sorted(throughput["per_request"].items())),
        ("  errors", str(throughput["errors"]), "0", throughput["errors"] == 0),
        ("blocking queries held", f"{blocking['queries'] if blocking['held'] else 'not all'}",
         f"{blocking['queries']}", blocking["held"]),
        ("  ended by unrelated write", str(blocking["returned_early"]), "0",
         blocking["returned_early"] == 0),
        ("  woken by one write", str(blocking["woken_by_write"]), f"{blocking['queries']}",
         blocking["woken_by_write"] == blocking["queries"]),
        ("  write → last answer", f"{blocking['wake_seconds'] * 1000:.0f} ms", "", None),
    ]
    width = max(len(row[0]) for row in rows)
    lines = [f"{'measure':<{width}}  {'value':>12}  {'bar':>8}  ok", "-" * (width + 30)]
    for name, value, bar, ok in rows:
        mark = "" if ok is None else ("yes" if ok else "NO")
        lines.append(f"{name:<{width}}  {value:>12}  {bar:>8}  {mark}")
    lines.extend(f"failure: {failure}" for failure in blocking["failures"])
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.consul_double.bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds of simple requests (default 5)")
    parser.add_argument("--clients", type=int, default=2,
                        help="client processes for simple requests (default 2)")
    parser.add_argument("--blocking", type=int, default=200,
                        help="concurrent blocking queries (default 200)")
    parser.add_argument("--min-rps", type=float, default=1000.0,
                        help="simple requests per second to pass (default 1000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    if arguments.clients < 1 or arguments.blocking < 1 or arguments.duration <= 0:
        print("bench: --clients, --blocking and --duration must be positive", file=sys.stderr)
        return 2
    report = run(arguments)
    print(json.dumps(report, indent=2) if arguments.json else table(report))
    acceptance = report["acceptance"]
    return 0 if acceptance["throughput_ok"] and acceptance["blocking_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
