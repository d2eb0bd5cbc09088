"""A long schemathesis run against a real `ascl serve`: every operation of its OpenAPI document, every check.

The test suite runs a bounded number of examples per operation so CI stays
fast; this script runs for a time budget instead. It starts `ascl serve` on
a free loopback port with the bundled corpus (or uses --url), runs
`schemathesis run URL/openapi.json --checks CHECKS --max-time SECONDS`, prints
schemathesis's report, and writes a JSON summary (default
benchmarks/results/fuzz_api.json). The exit status is schemathesis's: 0 when
no check failed.
Run: .venv/bin/python benchmarks/fuzz_api.py [--max-time 600] [--workers 2]
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_service import ROOT, start_server  # noqa: E402

from rule_service.index import write_atomic  # noqa: E402

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# No 5xx, and every response as documented: status, content type, headers and body schema. The other
# checks of `--checks all` also judge which invalid input a server rejects; limits such as "a query is
# not only whitespace" are not expressible in the OpenAPI document, so they report false positives.
DEFAULT_CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
                  "response_headers_conformance,response_schema_conformance")


def run_schemathesis(url: str, checks: str, max_time: int, workers: int, seed: int) -> tuple[int, str, float]:
    command = [str(SCHEMATHESIS), "run", f"{url}/openapi.json", "--checks", checks, "--max-time", str(max_time),
               "--workers", str(workers), "--seed", str(seed), "--url", url]
    started = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True, check=False)
    report = process.stdout + process.stderr
    return process.returncode, report, time.perf_counter() - started


def summarise(code: int, report: str, seconds: float, max_time: int, seed: int, checks: str) -> dict:
    """Pull the test-case count and failure lines out of schemathesis's text report."""
    cases = re.search(r"(\d+) generated", report)
    failures = [line.strip() for line in report.splitlines() if line.strip().startswith(("_", "- "))
                and ("Server error" in line or "schema" in line.lower() or "Undocumented" in line)]
    return {
        "exit_code": code, "seconds": round(seconds, 1), "max_time_s": max_time, "seed": seed, "checks": checks,
        "generated_cases": int(cases.group(1)) if cases else None, "failure_lines": failures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="Fuzz a running server instead of starting one.")
    parser.add_argument("--max-time", type=int, default=600, help="Time budget of the schemathesis run, in seconds.")
    parser.add_argument("--workers", type=int, default=2, help="Concurrent schemathesis workers.")
    parser.add_argument("--checks", default=DEFAULT_CHECKS, help="Comma-separated schemathesis checks, or 'all'.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the generated inputs, to replay a run.")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz_api.json")
    args = parser.parse_args()
    if args.max_time < 1 or args.workers < 1:
        parser.error(f"--max-time and --workers must be at least 1 (got {args.max_time} and {args.workers})")

    with tempfile.TemporaryDirectory() as index_dir:
        process = None
        url = args.url
        if url is None:
            process, url, _ = start_server(index_dir)
        try:
            code, report, seconds = run_schemathesis(url.rstrip("/"), args.checks, args.max_time, args.workers, args.seed)
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=30)

    print(report)
    summary = summarise(code, report, seconds, args.max_time, args.seed, args.checks)
    write_atomic(args.output, (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    print(f"schemathesis exit {code}; {summary['generated_cases']} generated cases in {seconds:.0f} s; "
          f"summary in {args.output}")
    return code


if __name__ == "__main__":
    sys.exit(main())
