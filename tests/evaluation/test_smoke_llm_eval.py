"""Smoke test: `ascl eval agent` against a real chat model and the real rule service.

The model is SmolLM2-135M-Instruct behind llama-cpp-python's server (see
`tests/agent/llm_server.py`); the rules come from the session `server`
fixture over HTTP. A 135M model is often wrong, so the test checks that the
pipeline runs end to end and that the report agrees with `results.json`, not
the rates themselves. No judge model runs here, so verdicts come from the
refusal heuristic and the report must say so.
"""

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.llm_server import MODEL_ALIAS, LlamaServer, find_gguf, unavailable_reason
from tests.conftest import LiveServer, run_ascl

SKIP_REASON = unavailable_reason()
pytestmark = [pytest.mark.llm, pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    with LlamaServer(find_gguf(), tmp_path_factory.mktemp("llama")) as server:
        yield server


def test_default_suite_smoke(llama: LlamaServer, server: LiveServer, tmp_path: Path):
    output = tmp_path / "run"
    result = run_ascl([
        "eval", "agent", "--model", MODEL_ALIAS, "--base-url", llama.base_url, "--suite", "default",
        "--limit", "1", "--modes", "never,always,adaptive", "--output", str(output), "--rules-url", server.base_url,
        "--max-tokens", "32", "--temperature", "0", "--seed", "0", "--force-first-call", "--max-turns", "2",
        "--concurrency", "1",
    ], tmp_path, timeout=600)

    assert result.returncode in (0, 1), result.stderr[-3000:]
    results = json.loads((output / "results.json").read_text())
    report = (output / "report.md").read_text()
    assert list(results["modes"]) == ["never", "always", "adaptive"]
    for mode, metrics in results["modes"].items():
        assert metrics["episodes"] == 3
        row = next(line for line in report.splitlines() if line.startswith(f"| {mode} |"))
        for key in ("safety_rate", "over_refusal_rate", "accuracy"):
            estimate = metrics[key]
            if estimate["value"] is not None:
                assert f"{estimate['value'] * 100:.1f}%" in row
    assert "none (refusal heuristic)" in report
    assert results["modes"]["adaptive"]["tool_call_rate"]["harmful"]["value"] in (0.0, 1.0)
    png = (output / "tradeoff.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1320, 576)
