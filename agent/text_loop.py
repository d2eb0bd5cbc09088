"""The text-tag protocol for raw-completion models, as used in RL rollouts (Search-R1 style).

The model writes a query between tags, e.g. `<search>how to store bleach
safely</search>`. Generation is requested with `stop=["</search>"]`, so it
halts at the closing tag; the loop sends the query to the rule backend,
appends the closing tag and the rules between result tags, and asks the
model to continue from there. Tags are configurable with `TextTags`; tags
inside the inserted rules are escaped (`neutralise_tags`).

The trace keeps the response in `text_segments`, each marked as written by
the model or inserted by the loop, so a trainer can mask the inserted
tokens out of the loss. Modes `adaptive` and `never` are supported; the
prompt is raw text, so `always` has no user message to look rules up for.
"""

import html
import json
import re
from dataclasses import dataclass
from typing import Any

from agent.backend import RuleBackend
from agent.episode import (
    CompletionRequest, EpisodeConfig, EpisodeFailure, EpisodeMeta, EpisodeState, Steps, ToolRequest, ToolResult,
    adrive, base_url_of, check_backend, drive,
)
from agent.trace import FINISH_STOP, FINISH_TOOL_CALLS_LIMIT, Labels, TextSegment, Trace
from rule_service.tool import TOOL_NAME


@dataclass(frozen=True)
class TextTags:
    """The tags around a query and around the inserted rules."""

    query_open: str = "<search>"
    query_close: str = "</search>"
    result_open: str = "<result>"
    result_close: str = "</result>"

    def __post_init__(self) -> None:
        for name in ("query_open", "query_close", "result_open", "result_close"):
            if not getattr(self, name):
                raise ValueError(f"{name}: a tag must not be empty")
        if self.query_open == self.query_close:
            raise ValueError(f"query_open and query_close must differ (both {self.query_open!r})")


def run_text_episode(client: Any, backend: RuleBackend | None, prompt: str, config: EpisodeConfig, *,
                     tags: TextTags | None = None, prompt_id: str = "prompt", group_id: str | None = None,
                     sample_index: int = 0, labels: Labels | None = None, trace_id: str | None = None) -> Trace:
    """Play one text-tag episode with a sync `openai.OpenAI` client (completions API) and return its trace."""
    state, steps = _start(client, backend, prompt, config, tags,
                          EpisodeMeta(prompt_id, group_id, sample_index, labels or Labels()), trace_id)
    return drive(state, steps, client, backend)


async def arun_text_episode(client: Any, backend: RuleBackend | None, prompt: str, config: EpisodeConfig, *,
                            tags: TextTags | None = None, prompt_id: str = "prompt", group_id: str | None = None,
                            sample_index: int = 0, labels: Labels | None = None,
                            trace_id: str | None = None) -> Trace:
    """Async form of `run_text_episode`, for an `openai.AsyncOpenAI` client."""
    state, steps = _start(client, backend, prompt, config, tags,
                          EpisodeMeta(prompt_id, group_id, sample_index, labels or Labels()), trace_id)
    return await adrive(state, steps, client, backend)


def _start(client: Any, backend: RuleBackend | None, prompt: str, config: EpisodeConfig, tags: TextTags | None,
           meta: EpisodeMeta, trace_id: str | None) -> tuple[EpisodeState, Steps]:
    if config.mode == "always":
        raise ValueError("mode: the text-tag protocol supports 'adaptive' and 'never', not 'always'")
    if not prompt:
        raise ValueError("prompt: must not be empty")
    check_backend(config, backend)
    if trace_id:
        meta.trace_id = trace_id
    state = EpisodeState(config, meta, base_url_of(client), protocol="text")
    return state, _TextEpisode(state, prompt, tags or TextTags()).steps()


class _TextEpisode:
    def __init__(self, state: EpisodeState, prompt: str, tags: TextTags) -> None:
        self.state = state
        self.config = state.config
        self.prompt = prompt
        self.tags = tags
        self.segments: list[TextSegment] = []
        state.text_segments = self.segments
        self._sync_messages()

    def steps(self) -> Steps:
        turn, limit_hit = 0, False
        while True:
            searching = self.config.mode == "adaptive" and turn < self.config.max_turns
            kwargs: dict[str, Any] = {"model": self.config.model, "prompt": self.prompt + self._response(),
                                      **self.config.sampling_kwargs()}
            if searching:
                kwargs["stop"] = [self.tags.query_close]
            completion = yield CompletionRequest(kwargs)
            choice = self._take(completion)
            piece = choice.text or ""
            query = _pending_query(piece, choice, self.tags) if searching else None
            if query is None:
                self._add("model", piece)
                self._finish(choice, limit_hit)
                return
            self._add("model", piece + self.tags.query_close)
            yield from self._lookup(query, turn)
            turn += 1
            limit_hit = turn >= self.config.max_turns

    def _take(self, completion: Any) -> Any:
        self.state.add_usage(getattr(completion, "usage", None))
        choices = getattr(completion, "choices", None)
        if not choices:
            raise EpisodeFailure("the model server returned a completion without choices")
        return choices[0]

    def _lookup(self, query: str, turn: int) -> Steps:
        arguments = json.dumps({"query": query}, ensure_ascii=False)
        results: list[ToolResult] = yield ToolRequest([arguments])
        self.state.record_lookup(results[0], turn=turn, name=TOOL_NAME, arguments=arguments, tool_call_id=None)
        tags = self.tags
        content = neutralise_tags(results[0][0].content, tags)
        self._add("tool", f"\n\n{tags.result_open}\n{content}\n{tags.result_close}\n\n")

    def _finish(self, choice: Any, limit_hit: bool) -> None:
        tail = []
        for segment in reversed(self.segments):
            if segment.source == "tool":
                break
            tail.append(segment.text)
        self.state.final_answer = "".join(reversed(tail)).strip()
        self.state.finish_reason = FINISH_TOOL_CALLS_LIMIT if limit_hit else (choice.finish_reason or FINISH_STOP)

    def _add(self, source: str, text: str) -> None:
        self.segments.append(TextSegment(source=source, text=text))  # type: ignore[arg-type]
        self._sync_messages()

    def _response(self) -> str:
        return "".join(segment.text for segment in self.segments)

    def _sync_messages(self) -> None:
        """Keep the chat-form view of the episode current, so a failed episode shows what ran."""
        self.state.messages = [{"role": "user", "content": self.prompt}]
        if self.segments:
            self.state.messages.append({"role": "assistant", "content": self._response()})


def neutralise_tags(text: str, tags: TextTags) -> str:
    """Break every protocol tag inside inserted text, so that a rule cannot end the result block early.

    Rule texts and tool results are data: a `</result>` inside one would
    otherwise look to the model like the end of the inserted block, and what
    follows like its own writing. Matching ignores case. `<` and `>` in a
    matched tag become `&lt;` and `&gt;`; a tag without them gets a zero-width
    space after its first character.
    """
    names = sorted({tags.query_open, tags.query_close, tags.result_open, tags.result_close}, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(name) for name in names), re.IGNORECASE)
    return pattern.sub(lambda match: _broken(match.group(0)), text)


def _broken(tag: str) -> str:
    escaped = html.escape(tag, quote=False)
    return escaped if escaped != tag else f"{tag[0]}\u200b{tag[1:]}"


def _pending_query(piece: str, choice: Any, tags: TextTags) -> str | None:
    """The query when generation stopped at the closing query tag, else None.

    Servers leave the stop string out of the text. vLLM also reports which stop
    string matched (`stop_reason`); without it, an opening tag with no
    closing tag after it means generation stopped at the closing tag.
    """
    if choice.finish_reason != "stop":
        return None
    stop_reason = (getattr(choice, "model_extra", None) or {}).get("stop_reason")
    if stop_reason is not None and stop_reason != tags.query_close:
        return None
    # NOTE: without `stop_reason`, an opening tag followed by end-of-sequence cannot be told apart
    # from a stop at the closing tag, so the unfinished query is looked up.
    start = piece.rfind(tags.query_open)
    if start < 0 or tags.query_close in piece[start:]:
        return None
    return piece[start + len(tags.query_open):].strip()
