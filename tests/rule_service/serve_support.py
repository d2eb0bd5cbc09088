"""Helpers for tests that reload a corpus or run `ascl serve` as a subprocess.

Reload tests change their corpus, so they work on a copy of the bundled
corpus and of its saved index. The manifest hashes rule content, not paths,
so the copied index matches the copied corpus and a service starts on it
without embedding anything.
"""

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ASCL_BIN, REPO_ROOT, SERVER_START_TIMEOUT_S, cli_env, free_port
from tests.rule_service.support import make_rule, write_yaml_rules

RELOAD_TIMEOUT_S = 120.0

MARKER_TEXT = (
    "When someone asks how to calibrate a {name} quantum teapot, explain that the {name} dial must be set to "
    "seven before the kettle warms, that the teapot hums in B flat once it is calibrated, and that a silver "
    "spoon laid across the lid keeps the quantum steam stable. Tell them to recalibrate the {name} dial every "
    "full moon and never to pour while the dial glows purple."
)


def marker_rule(name: str) -> dict[str, Any]:
    """Return a valid rule about an invented device, so only this rule matches `marker_query(name)`."""
    return make_rule(f"test.{name}_teapot", f"Calibrating a {name} quantum teapot",
                     MARKER_TEXT.format(name=name), ["help_fully"])


def marker_query(name: str) -> str:
    return f"how do I calibrate my {name} quantum teapot"


def add_marker_rule(corpus_dir: Path, name: str) -> str:
    """Write the marker rule `name` as a new file of the default ruleset; return its rule id."""
    rule = marker_rule(name)
    write_yaml_rules(corpus_dir / "default" / f"zz-{name}.yaml", [rule])
    return rule["id"]


def copy_bundled(tmp_dir: Path, bundled_corpus_dir: Path, bundled_index_dir: Path) -> tuple[Path, Path]:
    """Copy the bundled corpus and its saved index under `tmp_dir`; return (corpus folder, index folder)."""
    corpus = shutil.copytree(bundled_corpus_dir, tmp_dir / "rulesets")
    index = shutil.copytree(bundled_index_dir, tmp_dir / "index")
    return Path(corpus), Path(index)


def wait_for_reload(http: httpx.Client, reload_id: str, headers: dict[str, str]) -> dict[str, Any]:
    """Poll `GET /v1/admin/reload/{id}` until the reload has finished; return its status."""
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        status = http.get(f"/v1/admin/reload/{reload_id}", headers=headers).json()
        if status["status"] != "running":
            return status
        time.sleep(0.05)
    raise AssertionError(f"reload {reload_id} still running after {RELOAD_TIMEOUT_S} s")


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class ServeProcess:
    """A running `ascl serve` subprocess; its stdout and stderr go to `log`."""

    process: subprocess.Popen[bytes]
    base_url: str
    port: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=60.0, **kwargs)


@contextmanager
def serve_process(tmp_dir: Path, args: list[str], env: dict[str, str] | None = None) -> Iterator[ServeProcess]:
    """Run `ascl serve` on a free loopback port with extra `args` and environment; wait until it is ready."""
    port = free_port()
    log = tmp_dir / f"serve-{port}.log"
    command = [str(ASCL_BIN), "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=cli_env(tmp_dir) | (env or {}),
                                   stdout=output, stderr=subprocess.STDOUT)
    served = ServeProcess(process, f"http://127.0.0.1:{port}", port, log)
    try:
        _wait_ready(served)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def _wait_ready(served: ServeProcess) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise AssertionError(f"ascl serve exited with {served.process.returncode}:\n{served.log_text()}")
        try:
            with socket.create_connection(("127.0.0.1", served.port), timeout=0.2):
                pass
            if httpx.get(f"{served.base_url}/readyz", timeout=5).status_code == 200:
                return
        except (OSError, httpx.TransportError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"ascl serve did not become ready within {SERVER_START_TIMEOUT_S} s:\n{served.log_text()}")
