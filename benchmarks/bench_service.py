"""Throughput and latency of the rule service against the raw encoder ceiling.

Starts `ascl serve` on a free loopback port (or uses --url), then, in one
run on one machine:
1. times `SentenceTransformer.encode` on the same queries, one at a time and
   in batches of 8 and 32: the ceiling no server can beat without caching;
2. drives POST /v1/rules/search at each concurrency level with distinct
   queries, then with every query repeated 8 times (an RL group), repeating
   each level and quoting medians;
3. reads the server's resident memory after warm-up and after the run, and
   the time from process start to a 200 on /readyz.

The load comes from wrk (Debian package `wrk`) when it is installed: a Python
client on the same 2 cores takes CPU from the server and measures itself.
Prints a table and writes JSON (default benchmarks/results/bench_service.json).
Run: .venv/bin/python benchmarks/bench_service.py [--concurrency 1,8,32,64] [--repeats 3]
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rule_service.offline  # noqa: E402,F401

from rule_service.index import write_atomic  # noqa: E402


def load_queries() -> list[str]:
    lines = (ROOT / "corpus" / "eval" / "retrieval.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["query"] for line in lines if line.strip()]


def encoder_ceiling(queries: list[str], repeats: int) -> dict[str, float]:
    """Queries per second of raw encode calls: one query per call, then batches of 8 and 32."""
    from sentence_transformers import SentenceTransformer

    from rule_service.encoder import resolve_encoder

    model = SentenceTransformer(resolve_encoder(os.environ.get("ASCL_ENCODER", "")).path, device="cpu")
    # The server sees each query with a unique suffix, so the ceiling is timed on the same texts.
    queries = distinct_queries(queries, 256, 10**7)
    model.encode(queries[:32], normalize_embeddings=True)  # warm-up
    result = {}
    for batch in (1, 8, 32):
        rates, single_latencies = [], []
        for _ in range(repeats):
            sample = queries[: max(64, batch * 8)]
            started = time.perf_counter()
            for start in range(0, len(sample), batch):
                call_started = time.perf_counter()
                model.encode(sample[start : start + batch], normalize_embeddings=True, batch_size=batch)
                single_latencies.append(time.perf_counter() - call_started)
            rates.append(len(sample) / (time.perf_counter() - started))
        result[f"batch{batch}_qps"] = statistics.median(rates)
        if batch == 1:
            result["single_p50_ms"] = statistics.median(single_latencies) * 1000
    return result


def distinct_queries(queries: list[str], total: int, offset: int) -> list[str]:
    """`total` queries never sent before in this run, so the server's query cache cannot help."""
    return [f"{queries[n % len(queries)]} (case {offset + n})" for n in range(total)]


def repeated_queries(queries: list[str], total: int, offset: int, group: int = 8) -> list[str]:
    """Repeat each query `group` times in a row, as the G rollouts of one RL prompt do."""
    return [f"{queries[(n // group) % len(queries)]} (case {offset + n // group})" for n in range(total)]


async def drive(url: str, queries: list[str], concurrency: int, total: int, headers: dict[str, str]) -> dict[str, float]:
    """Send `queries[:total]` with `concurrency` workers; return rate, latency percentiles and errors."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for index in counter:
            body = {"query": queries[index], "top_k": 5}
            started = time.perf_counter()
            try:
                response = await client.post(f"{url}/v1/rules/search", json=body, headers=headers)
                if response.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "rps": total / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": errors,
    }


WRK_SCRIPT = """
local prefixes = {}
local sent = 0
init = function(args)
  for line in io.lines(QUERY_FILE) do table.insert(prefixes, line) end
end
request = function()
  local index = sent
  if GROUP > 1 then index = math.floor(sent / GROUP) end
  sent = sent + 1
  local body = '{"query": ' .. prefixes[(index % #prefixes) + 1] .. ' (case ' .. (OFFSET + index) .. ')", "top_k": 5}'
  return wrk.format("POST", "/v1/rules/search", HEADERS, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKJSON {\\"requests\\": %d, \\"duration_us\\": %d, \\"errors\\": %d, \\"p50\\": %d, \\"p95\\": %d, \\"p99\\": %d}\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def drive_wrk(url: str, queries: list[str], concurrency: int, seconds: float, offset: int, group: int,
              headers: dict[str, str], workdir: Path) -> dict[str, float]:
    """Load the server with wrk, a C load generator that costs far less CPU than a Python client.

    Every request carries a query suffix unique in this run (shared by `group`
    consecutive requests), so the query cache helps only where `group` > 1.
    """
    prefixes = workdir / "queries.txt"
    # Each line is a JSON string literal without its closing quote; the script appends the suffix and the quote.
    prefixes.write_text("\n".join(json.dumps(q)[:-1] for q in queries) + "\n", encoding="utf-8")
    lua_headers = ", ".join(f'["{k}"] = "{v}"' for k, v in ({"Content-Type": "application/json"} | headers).items())
    script = workdir / "search.lua"
    script.write_text(
        f'QUERY_FILE = "{prefixes}"\nOFFSET = {offset}\nGROUP = {group}\nHEADERS = {{{lua_headers}}}\n' + WRK_SCRIPT,
        encoding="utf-8",
    )
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script), url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("WRKJSON "))
    data = json.loads(line.removeprefix("WRKJSON "))
    return {
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "p50_ms": data["p50"] / 1000,
        "p95_ms": data["p95"] / 1000,
        "p99_ms": data["p99"] / 1000,
        "errors": data["errors"],
        "requests": data["requests"],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resident_mib(pid: int) -> float:
    """Resident set size of a process in MiB, from /proc (Linux only)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS line for process {pid}")


def start_server(index_dir: str) -> tuple[subprocess.Popen, str, float]:
    """Start `ascl serve`; return the process, its URL and the seconds from start to a 200 on /readyz."""
    started = time.perf_counter()
    port = free_port()
    env = os.environ | {"ASCL_PORT": str(port), "ASCL_HOST": "127.0.0.1", "ASCL_INDEX_DIR": index_dir, "ASCL_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([sys.executable, "-m", "ascl", "serve"], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"ascl serve exited with code {process.returncode}")
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError("ascl serve did not become ready in 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="Benchmark a running server instead of starting one.")
    parser.add_argument("--concurrency", default="1,8,32,64", help="Comma-separated client concurrency levels.")
    parser.add_argument("--requests", type=int, default=320, help="Requests per level and repeat (Python client only).")
    parser.add_argument("--seconds", type=int, default=8, help="Duration of each level and repeat, in seconds (wrk only).")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="Load generator: wrk when installed (auto), or the slower in-process Python client.")
    parser.add_argument("--repeated-concurrency", type=int, default=32,
                        help="Concurrency of the workload in which every query repeats 8 times.")
    parser.add_argument("--repeats", type=int, default=3, help="Repeats per level; medians are reported.")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "bench_service.json")
    args = parser.parse_args()

    queries = load_queries()
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk") is not None)
    if not use_wrk:
        print("note: the Python client competes with the server for CPU; install wrk for server-bound numbers",
              file=sys.stderr)
    levels = [int(level) for level in args.concurrency.split(",")]
    headers = {"Authorization": f"Bearer {os.environ['ASCL_API_KEY']}"} if os.environ.get("ASCL_API_KEY") else {}

    ceiling = encoder_ceiling(queries, args.repeats)
    process = None
    with tempfile.TemporaryDirectory() as index_dir:
        url = args.url
        ready_seconds = None
        if url is None:
            # The first start builds the index; the second, timed one loads it as a restart would.
            process, url, _ = start_server(index_dir)
            process.terminate()
            process.wait(timeout=30)
            process, url, ready_seconds = start_server(index_dir)
        try:
            offset = 0

            def run_once(workload: str, level: int) -> dict[str, float]:
                nonlocal offset
                group = 1 if workload == "distinct" else 8
                if use_wrk:
                    result = drive_wrk(url, queries, level, args.seconds, offset, group, headers, Path(index_dir))
                    offset += int(result["requests"]) + 1
                    return result
                make = distinct_queries if workload == "distinct" else repeated_queries
                batch = make(queries, args.requests, offset)
                offset += args.requests
                return asyncio.run(drive(url, batch, level, args.requests, headers))

            def run_level(workload: str, level: int) -> dict[str, float]:
                runs = [run_once(workload, level) for _ in range(args.repeats)]
                row = {key: statistics.median(run[key] for run in runs) for key in ("rps", "p50_ms", "p95_ms", "p99_ms")}
                row |= {"workload": workload, "concurrency": level, "errors": sum(run["errors"] for run in runs)}
                row["rps_vs_batch32"] = row["rps"] / ceiling["batch32_qps"]
                row["p50_vs_single_encode"] = row["p50_ms"] / ceiling["single_p50_ms"]
                return row

            # Warm-up covers every level once, so that the allocators have seen the
            # batch shapes of the run before the first memory reading.
            for level in levels:
                if use_wrk:
                    drive_wrk(url, queries, level, 3, 10**8 + level * 10**6, 1, headers, Path(index_dir))
                else:
                    asyncio.run(drive(url, distinct_queries(queries, 64, 10**8 + level * 10**6), level, 64, headers))
            memory = {"after_warmup_mib": resident_mib(process.pid)} if process else {}
            rows = [run_level("distinct", level) for level in levels]
            rows.append(run_level("repeat8", args.repeated_concurrency))
            if process:
                memory["after_run_mib"] = resident_mib(process.pid)
                memory["growth"] = memory["after_run_mib"] / memory["after_warmup_mib"] - 1
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=30)

    print(f"\nLoad generator: {'wrk' if use_wrk else 'Python httpx'}")
    print(f"Encoder ceiling: 1 query/call {ceiling['batch1_qps']:.0f} q/s (p50 {ceiling['single_p50_ms']:.1f} ms), "
          f"batch 8 {ceiling['batch8_qps']:.0f} q/s, batch 32 {ceiling['batch32_qps']:.0f} q/s")
    print(f"{'workload':>9} {'conc':>5} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7} {'rps/b32':>8} {'p50/enc':>8}")
    for row in rows:
        print(f"{row['workload']:>9} {row['concurrency']:>5} {row['rps']:>8.1f} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['p99_ms']:>8.1f} "
              f"{row['errors']:>7} {row['rps_vs_batch32']:>8.2f} {row['p50_vs_single_encode']:>8.2f}")
    if ready_seconds is not None:
        print(f"Process start to /readyz (index loaded from disk): {ready_seconds:.2f} s")
    if memory:
        print(f"Server RSS: {memory['after_warmup_mib']:.0f} MiB after warm-up, {memory['after_run_mib']:.0f} MiB "
              f"after the run ({memory['growth']:+.1%})")
    payload = {"client": "wrk" if use_wrk else "python", "ceiling": ceiling, "levels": rows, "ready_seconds": ready_seconds, "memory": memory, "requests_per_level": args.requests, "repeats": args.repeats,
               "cpus": os.cpu_count(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_atomic(args.output, json.dumps(payload, indent=2).encode("utf-8"))
    print(f"JSON written to {args.output}")


if __name__ == "__main__":
    main()
