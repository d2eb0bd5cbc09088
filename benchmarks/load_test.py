"""Sustained load on POST /v1/rules/search: errors, latency and memory growth of the server.

Starts `ascl serve` on a free loopback port with the default settings (or
uses --url), then sends --requests searches (10,000 by default) with
--concurrency workers (64 by default). Each request is, with probability
--repeat-share, one of the labelled queries of corpus/eval/retrieval.jsonl
sent verbatim (so it repeats, and the query cache serves it after its first
use), else that query with a suffix never sent before (a cache miss).

It reads the server's resident memory after every 1,000 requests. Growth is
measured from the first reading, which comes after the server has seen the
batch shapes of the workload, to the last.
Prints a table, writes JSON (default benchmarks/results/load_test.json), and
exits 1 when any request failed or memory grew by more than --max-growth.
Run: .venv/bin/python benchmarks/load_test.py [--requests 10000] [--concurrency 64]
"""

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_service import ROOT, load_queries, resident_mib, start_server  # noqa: E402

from rule_service.index import write_atomic  # noqa: E402

READING_EVERY = 1000


@dataclass
class Tally:
    """What the workers saw: one latency per request, and failures by HTTP status or exception name."""

    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)


def plan_queries(queries: list[str], total: int, repeat_share: float, seed: int) -> list[str]:
    """Return `total` queries: a `repeat_share` of verbatim labelled queries, the rest unique."""
    rng = random.Random(seed)
    planned = []
    for number in range(total):
        base = rng.choice(queries)
        planned.append(base if rng.random() < repeat_share else f"{base} (load {seed}-{number})")
    return planned


async def send_all(client: httpx.AsyncClient, url: str, queries: list[str], concurrency: int, tally: Tally,
                   headers: dict[str, str]) -> float:
    """Send every query with `concurrency` workers; return the seconds taken."""
    jobs = iter(queries)

    async def worker() -> None:
        for query in jobs:  # one shared iterator: each query is sent by exactly one worker
            started = time.perf_counter()
            try:
                response = await client.post(f"{url}/v1/rules/search", json={"query": query, "top_k": 5},
                                             headers=headers)
                status = str(response.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            tally.latencies.append(time.perf_counter() - started)
            tally.statuses[status] += 1
            if status != "200":
                tally.failures[status] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def run_load(url: str, queries: list[str], concurrency: int, pid: int | None,
                   headers: dict[str, str]) -> tuple[Tally, float, dict]:
    """Send the queries in slices of 1,000 and read the server's memory after each slice.

    The readings show whether memory levels off (allocator pools, the query
    cache filling up) or keeps climbing (a leak).
    """
    tally = Tally()
    samples: list[tuple[int, float]] = []
    seconds = 0.0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        for start in range(0, len(queries), READING_EVERY):
            chunk = queries[start:start + READING_EVERY]
            seconds += await send_all(client, url, chunk, concurrency, tally, headers)
            if pid is not None:
                samples.append((start + len(chunk), resident_mib(pid)))
    if pid is None:
        return tally, seconds, {}
    first, last = samples[0][1], samples[-1][1]
    memory = {"after_first_mib": first, "after_run_mib": last, "growth": last / first - 1,
              "samples": [{"requests": count, "rss_mib": mib} for count, mib in samples]}
    return tally, seconds, memory


def summarise(tally: Tally, seconds: float, memory: dict, args: argparse.Namespace) -> dict:
    ms = np.array(tally.latencies) * 1000
    total = len(tally.latencies)
    return {
        "requests": total,
        "concurrency": args.concurrency,
        "repeat_share": args.repeat_share,
        "errors": sum(tally.failures.values()),
        "errors_by_status": dict(tally.failures),
        "statuses": dict(tally.statuses),
        "seconds": seconds,
        "rps": total / seconds,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "memory": memory,
        "max_growth": args.max_growth,
        "client": "python httpx",
        "cpus": os.cpu_count(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def print_report(result: dict) -> None:
    errors = ", ".join(f"{status}: {count}" for status, count in sorted(result["errors_by_status"].items())) or "none"
    memory = result["memory"]
    rows = [
        ("requests", f"{result['requests']}"),
        ("concurrency", f"{result['concurrency']}"),
        ("repeated share", f"{result['repeat_share']:.0%}"),
        ("errors", f"{result['errors']} ({errors})"),
        ("req/s", f"{result['rps']:.1f}"),
        ("p50 / p95 / p99 ms", f"{result['p50_ms']:.1f} / {result['p95_ms']:.1f} / {result['p99_ms']:.1f}"),
    ]
    if memory:
        rows += [
            (f"server RSS after {READING_EVERY} requests", f"{memory['after_first_mib']:.0f} MiB"),
            ("server RSS after the run", f"{memory['after_run_mib']:.0f} MiB"),
            ("RSS growth", f"{memory['growth']:+.1%} (limit {result['max_growth']:.0%})"),
            ("RSS every 1000 requests", " ".join(f"{sample['rss_mib']:.0f}" for sample in memory["samples"])),
        ]
    else:
        rows.append(("server RSS", "not measured: pass --pid with --url"))
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def verdict(result: dict) -> list[str]:
    """Return the reasons the run failed, if any."""
    problems = []
    if result["errors"]:
        problems.append(f"{result['errors']} request(s) failed: {result['errors_by_status']}")
    growth = result["memory"].get("growth")
    if growth is not None and growth > result["max_growth"]:
        problems.append(f"server memory grew by {growth:.1%}, more than the limit of {result['max_growth']:.0%}")
    return problems


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="Load a running server instead of starting one.")
    parser.add_argument("--pid", type=int, help="Process id of the server given by --url, to read its memory.")
    parser.add_argument("--requests", type=int, default=10_000, help="Requests in all (at least 1,001).")
    parser.add_argument("--concurrency", type=int, default=64, help="Requests in flight at once.")
    parser.add_argument("--repeat-share", type=float, default=0.5,
                        help="Share of requests that repeat a labelled query verbatim, 0 to 1.")
    parser.add_argument("--max-growth", type=float, default=0.10,
                        help="Largest accepted RSS growth after the first 1,000 requests, as a fraction.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the query mix.")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "load_test.json")
    args = parser.parse_args()
    if args.requests <= READING_EVERY:
        parser.error(f"--requests must be more than {READING_EVERY} (got {args.requests})")
    if args.concurrency < 1:
        parser.error(f"--concurrency must be at least 1 (got {args.concurrency})")
    if not 0 <= args.repeat_share <= 1:
        parser.error(f"--repeat-share must be between 0 and 1 (got {args.repeat_share})")
    return args


def main() -> int:
    args = parse_args()
    queries = plan_queries(load_queries(), args.requests, args.repeat_share, args.seed)
    headers = {"Authorization": f"Bearer {os.environ['ASCL_API_KEY']}"} if os.environ.get("ASCL_API_KEY") else {}
    print("note: the Python client shares the CPU with the server; compare req/s only with runs of this script",
          file=sys.stderr)
    with tempfile.TemporaryDirectory() as index_dir:
        process, url, pid = None, args.url, args.pid
        if url is None:
            process, url, _ = start_server(index_dir)
            pid = process.pid
        try:
            tally, seconds, memory = asyncio.run(run_load(url, queries, args.concurrency, pid, headers))
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
    result = summarise(tally, seconds, memory, args)
    print_report(result)
    write_atomic(args.output, json.dumps(result, indent=2).encode("utf-8"))
    print(f"JSON written to {args.output}")
    problems = verdict(result)
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
