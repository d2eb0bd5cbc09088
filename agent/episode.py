"""Shared parts of the chat loop and the text-tag loop: settings, clients, step drivers and error texts.

An episode is written once, as a generator that yields the steps it needs
(a chat request, a completion request, a batch of rule lookups) and receives
their results. `drive` runs those steps with the sync clients and `adrive`
with the async ones, so `run_episode` and `arun_episode` cannot drift apart.
Both turn any exception into a failed trace; nothing raises out of an
episode except cancellation and KeyboardInterrupt.
"""

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import openai

from agent.backend import RuleBackend
from agent.trace import FINISH_ERROR, Labels, Mode, Sampling, TextSegment, ToolCallEvent, Trace, Usage
from rule_service.tool import RuleToolOutput

logger = logging.getLogger(__name__)

MODES = ("adaptive", "never", "always")
DUMMY_API_KEY = "EMPTY"  # what local OpenAI-compatible servers (vLLM, llama.cpp) accept when they check no key
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MAX_RETRIES = 4


@dataclass(frozen=True)
class EpisodeConfig:
    """How to run episodes: the model, the mode and the limits. The same config serves every mode.

    `max_turns` counts model requests that may call the tool; after that many
    rounds of tool calls the model is asked once more with tools disabled.
    `first_tool_choice` is sent as `tool_choice` on the first request only
    (e.g. "required", or the dict naming the tool); later requests use "auto".
    `send_reasoning` keeps `reasoning_content` in the messages sent back to the
    server; off by default because some servers reject it in requests.
    """

    model: str
    mode: Mode = "adaptive"
    max_turns: int = 4
    sampling: Sampling = field(default_factory=Sampling)
    system_prompt: str | None = None
    first_tool_choice: str | dict[str, Any] | None = None
    max_top_k: int | None = None
    always_query_chars: int = 1000
    send_reasoning: bool = False
    extra_body: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode: {self.mode!r} is not a mode; use one of {', '.join(MODES)}")
        if self.max_turns < 1:
            raise ValueError(f"max_turns: must be at least 1 (got {self.max_turns})")
        if not self.model:
            raise ValueError("model: must not be empty")
        if self.always_query_chars < 1:
            raise ValueError(f"always_query_chars: must be at least 1 (got {self.always_query_chars})")

    def sampling_kwargs(self) -> dict[str, Any]:
        """Return the sampling settings that are set, as request arguments."""
        values = self.sampling.model_dump(exclude_none=True)
        if self.extra_body:
            values["extra_body"] = dict(self.extra_body)
        return values


@dataclass
class EpisodeMeta:
    """Identity of an episode: its prompt, its group of samples and its labels."""

    prompt_id: str = "prompt"
    group_id: str | None = None
    sample_index: int = 0
    labels: Labels = field(default_factory=Labels)
    trace_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def resolve_api_key(api_key: str | None = None, env_var: str = "OPENAI_API_KEY") -> str:
    """Return the explicit key, else the environment variable, else a placeholder for local servers."""
    return api_key or os.environ.get(env_var) or DUMMY_API_KEY


def make_client(base_url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                max_retries: int = DEFAULT_MAX_RETRIES) -> openai.OpenAI:
    """Build a sync OpenAI client that retries 408/409/429/5xx and time-outs with exponential back-off.

    The client honours `Retry-After` (up to two minutes) and otherwise waits
    0.5 s doubling to 8 s, with jitter, between attempts.
    """
    return openai.OpenAI(base_url=base_url, api_key=resolve_api_key(api_key), timeout=timeout, max_retries=max_retries)


def make_async_client(base_url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                      max_retries: int = DEFAULT_MAX_RETRIES) -> openai.AsyncOpenAI:
    """Build the async form of `make_client`."""
    return openai.AsyncOpenAI(base_url=base_url, api_key=resolve_api_key(api_key), timeout=timeout,
                              max_retries=max_retries)


class EpisodeFailure(Exception):
    """Error that ends an episode (invalid server reply, failed preload); its message goes into the trace."""


@dataclass
class ChatRequest:
    kwargs: dict[str, Any]


@dataclass
class CompletionRequest:
    kwargs: dict[str, Any]


@dataclass
class ToolRequest:
    """Rule lookups to run, each given as the arguments the model wrote; results come back in order."""

    arguments: list[str]


Step = ChatRequest | CompletionRequest | ToolRequest
ToolResult = tuple[RuleToolOutput, float]  # the output and its latency in milliseconds
Steps = Generator[Step, Any, None]


class EpisodeState:
    """Values an episode accumulates before it becomes a `Trace`."""

    def __init__(self, config: EpisodeConfig, meta: EpisodeMeta, base_url: str | None, protocol: str) -> None:
        self.config = config
        self.meta = meta
        self.base_url = base_url
        self.protocol = protocol
        self.started_at = datetime.now(timezone.utc)
        self._clock = time.perf_counter()
        self.messages: list[dict[str, Any]] = []
        self.events: list[ToolCallEvent] = []
        self.usage = Usage()
        self.text_segments: list[TextSegment] | None = None
        self.final_answer: str | None = None
        self.reasoning_content: str | None = None
        self.finish_reason = FINISH_ERROR
        self.error: str | None = None
        self.index_version: str | None = None

    def add_usage(self, usage: Any) -> None:
        self.usage.requests += 1
        if usage is None:
            self.usage.reported = False
            return
        self.usage.prompt_tokens += usage.prompt_tokens or 0
        self.usage.completion_tokens += usage.completion_tokens or 0
        self.usage.total_tokens += usage.total_tokens or 0

    def record_lookup(self, result: ToolResult, *, turn: int, name: str, arguments: str,
                      tool_call_id: str | None, origin: str = "model") -> None:
        output, latency_ms = result
        if output.index_version:
            self.index_version = output.index_version
        self.events.append(ToolCallEvent(
            origin=origin, turn=turn, tool_call_id=tool_call_id, name=name, arguments=arguments,
            query=query_of(arguments), rule_ids=[rule.id for rule in output.rules],
            scores=[rule.score for rule in output.rules], latency_ms=round(latency_ms, 3),
            error=output.content if output.is_error else None,
        ))

    def fail(self, exc: Exception) -> None:
        self.finish_reason = FINISH_ERROR
        self.error = describe_error(exc)
        logger.warning("episode %s (prompt %s, sample %d) failed: %s",
                       self.meta.trace_id, self.meta.prompt_id, self.meta.sample_index, self.error)

    def build(self) -> Trace:
        consulted = any(event.error is None and event.rule_ids for event in self.events)
        return Trace(
            trace_id=self.meta.trace_id, prompt_id=self.meta.prompt_id,
            group_id=self.meta.group_id if self.meta.group_id is not None else self.meta.prompt_id,
            sample_index=self.meta.sample_index, model=self.config.model, base_url=self.base_url,
            sampling=self.config.sampling, mode=self.config.mode, protocol=self.protocol,  # type: ignore[arg-type]
            max_turns=self.config.max_turns, messages=self.messages, text_segments=self.text_segments,
            tool_calls=self.events, consulted_rules=consulted,
            num_tool_calls=sum(1 for event in self.events if event.origin == "model"),
            final_answer=self.final_answer, reasoning_content=self.reasoning_content,
            finish_reason=self.finish_reason, usage=self.usage, labels=self.meta.labels,
            index_version=self.index_version, error=self.error, started_at=self.started_at,
            duration_ms=round((time.perf_counter() - self._clock) * 1000, 3),
        )


def query_of(arguments: str) -> str | None:
    """Return the `query` of tool arguments when they parse as a JSON object with a string query."""
    try:
        data = json.loads(arguments)
    except (ValueError, RecursionError):
        return None
    query = data.get("query") if isinstance(data, dict) else None
    return query if isinstance(query, str) else None


def describe_error(exc: BaseException) -> str:
    """Return a one-line account of why an episode failed, without request contents or keys."""
    if isinstance(exc, openai.APITimeoutError):
        return "time-out: the model server did not answer in time, retries included"
    if isinstance(exc, openai.APIConnectionError):
        return f"connection error: cannot reach the model server ({exc.__cause__ or exc})"
    if isinstance(exc, openai.APIStatusError):
        code = getattr(exc, "code", None)
        kind = "content_filter: " if code == "content_filter" else ""
        return f"{kind}HTTP {exc.status_code} from the model server: {exc.message}"
    if isinstance(exc, EpisodeFailure):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def drive(state: EpisodeState, steps: Steps, client: Any, backend: RuleBackend | None) -> Trace:
    """Run an episode's steps with a sync client and backend; failures end in a failed trace."""
    try:
        step = next(steps)
        while True:
            step = steps.send(_execute(step, client, backend))
    except StopIteration:
        pass
    except Exception as exc:  # noqa: BLE001  (an episode is recorded as failed, never raised)
        state.fail(exc)
    return state.build()


async def adrive(state: EpisodeState, steps: Steps, client: Any, backend: RuleBackend | None) -> Trace:
    """Async form of `drive`; the lookups of one turn run concurrently."""
    try:
        step = next(steps)
        while True:
            step = steps.send(await _aexecute(step, client, backend))
    except StopIteration:
        pass
    except Exception as exc:  # noqa: BLE001
        state.fail(exc)
    return state.build()


def _execute(step: Step, client: Any, backend: RuleBackend | None) -> Any:
    if isinstance(step, ChatRequest):
        return client.chat.completions.create(**step.kwargs)
    if isinstance(step, CompletionRequest):
        return client.completions.create(**step.kwargs)
    backend = _require(backend)
    results = []
    for arguments in step.arguments:
        started = time.perf_counter()
        output = backend.call_tool(arguments)
        results.append((output, (time.perf_counter() - started) * 1000))
    return results


async def _aexecute(step: Step, client: Any, backend: RuleBackend | None) -> Any:
    if isinstance(step, ChatRequest):
        return await client.chat.completions.create(**step.kwargs)
    if isinstance(step, CompletionRequest):
        return await client.completions.create(**step.kwargs)
    backend = _require(backend)

    async def timed(arguments: str) -> ToolResult:
        started = time.perf_counter()
        output = await backend.acall_tool(arguments)
        return output, (time.perf_counter() - started) * 1000

    return list(await asyncio.gather(*(timed(arguments) for arguments in step.arguments)))


def _require(backend: RuleBackend | None) -> RuleBackend:
    if backend is None:
        raise EpisodeFailure("a rule lookup was needed but no rule backend was given")
    return backend


def check_backend(config: EpisodeConfig, backend: RuleBackend | None) -> None:
    """Raise ValueError, before any request, for a mode that needs rules when no backend is given."""
    if config.mode != "never" and backend is None:
        raise ValueError(f"mode {config.mode!r} needs a rule backend; pass one, or use mode 'never'")


def base_url_of(client: Any) -> str | None:
    url = getattr(client, "base_url", None)
    return str(url) if url is not None else None
