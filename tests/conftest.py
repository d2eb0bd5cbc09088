"""Shared fixtures: the real encoder, the bundled rule service and live HTTP servers on loopback.

The encoder takes a few seconds to load, so one `Encoder` and one server over
the bundled corpus are shared by the whole session. Tests that need another
corpus or other settings build a small service that reuses the loaded encoder.
Every index is written under a pytest temporary folder, never under ~/.cache.
"""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

# Settings read ASCL_* variables, so a developer's shell must not change what the tests see.
for _name in [name for name in os.environ if name.startswith("ASCL_")]:
    del os.environ[_name]

import rule_service.offline  # noqa: E402,F401  (switches Hugging Face libraries to offline mode)
from rule_service.app import create_app  # noqa: E402
from rule_service.encoder import Encoder, resolve_encoder  # noqa: E402
from rule_service.service import RuleService  # noqa: E402
from rule_service.settings import Settings, bundled_corpus_root  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
ASCL_BIN = Path(sys.executable).parent / "ascl"
SERVER_START_TIMEOUT_S = 120.0


class LiveServer:
    """A uvicorn server for one app, running in a daemon thread on a free loopback port."""

    def __init__(self, app: FastAPI) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)
        self.base_url = ""

    def start(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the test server stopped before it started; see the log above")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test server did not start within {SERVER_START_TIMEOUT_S} s")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.base_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=60.0, **kwargs)  # type: ignore[arg-type]


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago, for a server started as a subprocess."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli_env(tmp_dir: Path, columns: int = 200) -> dict[str, str]:
    """Environment for an `ascl` subprocess: no ASCL_* variables, offline, caches under `tmp_dir`.

    A wide COLUMNS keeps rich from shortening table cells; tests of line
    wrapping pass a narrow value.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith("ASCL_")}
    env.update({
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "XDG_CACHE_HOME": str(tmp_dir / "xdg-cache"),
        "COLUMNS": str(columns),
        "NO_COLOR": "1",
    })
    return env


def run_ascl(args: list[str], tmp_dir: Path, columns: int = 200, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the installed `ascl` command and capture its output."""
    return subprocess.run(
        [str(ASCL_BIN), *args], cwd=REPO_ROOT, env=cli_env(tmp_dir, columns),
        capture_output=True, text=True, timeout=timeout, check=False,
    )


@pytest.fixture(scope="session")
def encoder(bundled_settings: Settings) -> Encoder:
    """The bundled all-MiniLM-L6-v2 encoder on the default backend, loaded once."""
    return Encoder.from_settings(bundled_settings)


@pytest.fixture(scope="session")
def torch_encoder() -> Encoder:
    """The bundled all-MiniLM-L6-v2 encoder run by sentence-transformers on torch, loaded once."""
    return Encoder(resolve_encoder(""))


@pytest.fixture(scope="session")
def bundled_corpus_dir() -> Path:
    return bundled_corpus_root() / "rulesets"


@pytest.fixture(scope="session")
def bundled_index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundled-index")


@pytest.fixture(scope="session")
def bundled_settings(bundled_corpus_dir: Path, bundled_index_dir: Path) -> Settings:
    return Settings(corpus_dir=bundled_corpus_dir, index_dir=bundled_index_dir)


@pytest.fixture(scope="session")
def bundled_service(bundled_settings: Settings, encoder: Encoder) -> RuleService:
    """The bundled corpus with its index built in `bundled_index_dir`."""
    return RuleService.load(bundled_settings, encoder=encoder)


@pytest.fixture(scope="session")
def server(bundled_settings: Settings, bundled_service: RuleService) -> Iterator[LiveServer]:
    """One live server over the bundled corpus, shared by every read-only HTTP test."""
    live = LiveServer(create_app(bundled_settings, bundled_service)).start()
    yield live
    live.stop()


@pytest.fixture(scope="session")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


@pytest.fixture
def start_server() -> Iterator[Callable[[FastAPI], LiveServer]]:
    """Start live servers for apps built inside a test; all are stopped when the test ends."""
    started: list[LiveServer] = []

    def start(app: FastAPI) -> LiveServer:
        live = LiveServer(app).start()
        started.append(live)
        return live

    yield start
    for live in started:
        live.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Report how many schemathesis cases ran, above pytest's closing line."""
    module = sys.modules.get("tests.rule_service.test_schemathesis")
    count = getattr(module, "CASES_RUN", {}).get("count", 0)
    if count:
        terminalreporter.write_line(f"schemathesis cases run: {count}")


def _mount(target: Path, options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                          capture_output=True, text=True, check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs standing in for a full disk; skipped where this process may not mount one (it needs root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and the mount command")
    target = tmp_path / "small-disk"
    target.mkdir()
    mounted = _mount(target, "size=64k")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield target
    subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)
