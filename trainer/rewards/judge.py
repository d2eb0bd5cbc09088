"""The judge: a chat model behind any OpenAI-compatible endpoint that gives verdicts under the fixed rubric.

`Judge.verdict` looks the verdict up in the cache first. On a miss it sends
the rubric, the request and the response with the official `openai` client
(which retries 429, 5xx and time-outs with back-off, `max_retries` times).
A reply without a valid verdict gets one follow-up message that names the
problem and requests the verdict again. A second invalid reply raises
`JudgeError`, and so does a request that still fails after the client's
retries. Callers fall back to the heuristic and label the result, so a
judge failure never ends a scoring run.
"""

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from trainer.rewards.cache import VerdictCache, verdict_key
from trainer.rewards.rubric import RUBRIC_VERSION, correction_messages, judge_messages
from trainer.rewards.verdict import InvalidVerdict, Verdict, parse_verdict

logger = logging.getLogger(__name__)

# API key sent when none is given: local OpenAI-compatible servers (vLLM, llama.cpp) that check no key accept it.
NO_API_KEY = "EMPTY"


class JudgeError(RuntimeError):
    """Error for a judgement that failed: the endpoint failed, or it sent two invalid verdicts."""


@dataclass
class JudgeStats:
    """Counts of one judge's work: requests sent, cache hits, retries after invalid replies, failures."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0


class Judge:
    """A judge model at `base_url`, asked with the rubric of `RUBRIC_VERSION`; safe to share between threads.

    `api_key` is sent as the bearer token and never logged. `cache` may be a
    `VerdictCache`, a path for one, or None for an in-memory cache. `client`
    replaces the `openai.OpenAI` client built from the other arguments.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 cache: VerdictCache | str | Path | None = None, timeout: float = 60.0, max_retries: int = 2,
                 temperature: float | None = 0.0, max_tokens: int | None = None, client: Any = None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"judge base_url {base_url!r} is not an http:// or https:// URL")
        if not model:
            raise ValueError("judge model: must not be empty")
        if max_retries < 0:
            raise ValueError(f"judge max_retries: must be at least 0 (got {max_retries})")
        self.base_url = base_url
        self.model = model
        self.rubric_version = RUBRIC_VERSION
        self.cache = cache if isinstance(cache, VerdictCache) else VerdictCache(cache)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.client = client or openai.OpenAI(base_url=base_url, api_key=api_key or NO_API_KEY, timeout=timeout,
                                              max_retries=max_retries)
        self.stats = JudgeStats()
        self._stats_lock = threading.Lock()
        # One lock per verdict key, so that G rollouts with the same answer, scored at once, cost one request.
        self._key_locks: dict[str, threading.Lock] = {}
        self._key_locks_guard = threading.Lock()

    def __repr__(self) -> str:
        return f"Judge(model={self.model!r}, base_url={self.base_url!r}, rubric={self.rubric_version!r})"

    def key(self, request: str, response: str) -> str:
        return verdict_key(self.rubric_version, self.model, request, response)

    def verdict(self, request: str, response: str, ref: str = "-") -> tuple[Verdict, bool]:
        """Return the verdict on a response to a request, and whether it came from the cache.

        `ref` (a trace id) only names the judgement in logs. Raises `JudgeError`.
        """
        key = self.key(request, response)
        with self._key_lock(key):
            cached = self.cache.get(key)
            if cached is not None:
                self._count("cache_hits")
                return cached, True
            verdict = self._judge(request, response, ref)
            self.cache.put(key, verdict, self.model, self.rubric_version)
            return verdict, False

    def _key_lock(self, key: str) -> threading.Lock:
        with self._key_locks_guard:
            return self._key_locks.setdefault(key, threading.Lock())

    def _judge(self, request: str, response: str, ref: str) -> Verdict:
        """Ask the judge for a verdict, once more after an invalid reply; raise `JudgeError`."""
        messages = judge_messages(request, response)
        reply = self._ask(messages, ref)
        try:
            verdict = parse_verdict(reply)
        except InvalidVerdict as exc:
            self._count("retries")
            logger.warning("judge reply for %s is not a valid verdict (%s); asking once more", ref, exc)
            reply_again = self._ask(correction_messages(messages, reply or "", str(exc)), ref)
            try:
                verdict = parse_verdict(reply_again)
            except InvalidVerdict as again:
                self._count("failures")
                raise JudgeError(f"invalid verdict twice: {again}") from None
        return verdict

    def _ask(self, messages: list[dict[str, Any]], ref: str) -> str | None:
        options: dict[str, Any] = {}
        if self.temperature is not None:
            options["temperature"] = self.temperature
        if self.max_tokens is not None:
            options["max_tokens"] = self.max_tokens
        self._count("requests")
        try:
            completion = self.client.chat.completions.create(model=self.model, messages=messages, **options)
        except openai.APIError as exc:
            self._count("failures")
            raise JudgeError(f"judge request failed: {describe_api_error(exc)}") from None
        logger.debug("judge replied for %s", ref)
        if not completion.choices:
            return None
        return completion.choices[0].message.content

    def _count(self, name: str) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    def close(self) -> None:
        self.client.close()


def describe_api_error(exc: openai.APIError) -> str:
    """Return a one-line account of a failed request, without its contents or the key."""
    if isinstance(exc, openai.APITimeoutError):
        return "time-out, retries included"
    if isinstance(exc, openai.APIConnectionError):
        return f"cannot connect ({exc.__cause__ or exc})"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"
