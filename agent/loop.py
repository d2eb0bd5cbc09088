"""The consult-then-reason loop over any OpenAI-compatible chat endpoint.

`run_episode` and `arun_episode` play one episode and return its trace:
- `adaptive`: the rule tool is offered and the model decides; every tool
  call it makes (parallel ones included) runs through the rule backend and
  its result goes back as a `role: tool` message, until the model answers
  without a tool call or `max_turns` rounds of calls have run, after which
  the model is asked once more with `tool_choice="none"`;
- `never`: no tool is offered;
- `always`: the rules for the user's last message are looked up first and
  put in the system prompt (the context-distillation baseline).
All three share one code path, so their traces are comparable. Any failure
(endpoint down, time-out, refused request) gives a trace with `error` set
and `finish_reason="error"`; the functions do not raise for it.

The text-tag protocol for raw-completion models is in `agent.text_loop`
and re-exported here.
"""

import copy
import json
from typing import Any

from agent.backend import RuleBackend
from agent.episode import (
    DUMMY_API_KEY, ChatRequest, EpisodeConfig, EpisodeFailure, EpisodeMeta, EpisodeState, Steps, ToolRequest,
    ToolResult, adrive, base_url_of, check_backend, drive, make_async_client, make_client, resolve_api_key,
)
from agent.trace import FINISH_STOP, FINISH_TOOL_CALLS_LIMIT, Labels, Trace
from agent.text_loop import TextTags, arun_text_episode, run_text_episode
from rule_service.tool import TOOL_NAME, RuleToolOutput, openai_tool

RULES_HEADER = "Safety rules that apply to this request (from the rule service):"


def run_episode(client: Any, backend: RuleBackend | None, messages: list[dict[str, Any]], config: EpisodeConfig,
                *, prompt_id: str = "prompt", group_id: str | None = None, sample_index: int = 0,
                labels: Labels | None = None, trace_id: str | None = None) -> Trace:
    """Play one chat episode with a sync `openai.OpenAI` client and return its trace.

    Raises only for arguments that can never work (no messages, no backend
    for a mode that needs one); every failure during the episode is recorded.
    """
    check_backend(config, backend)
    state, steps = _start(client, messages, config, _meta(prompt_id, group_id, sample_index, labels, trace_id))
    return drive(state, steps, client, backend)


async def arun_episode(client: Any, backend: RuleBackend | None, messages: list[dict[str, Any]],
                       config: EpisodeConfig, *, prompt_id: str = "prompt", group_id: str | None = None,
                       sample_index: int = 0, labels: Labels | None = None, trace_id: str | None = None) -> Trace:
    """Async form of `run_episode`, for an `openai.AsyncOpenAI` client; parallel tool calls run concurrently."""
    check_backend(config, backend)
    state, steps = _start(client, messages, config, _meta(prompt_id, group_id, sample_index, labels, trace_id))
    return await adrive(state, steps, client, backend)


def _meta(prompt_id: str, group_id: str | None, sample_index: int, labels: Labels | None,
          trace_id: str | None) -> EpisodeMeta:
    meta = EpisodeMeta(prompt_id=prompt_id, group_id=group_id, sample_index=sample_index, labels=labels or Labels())
    if trace_id:
        meta.trace_id = trace_id
    return meta


def _start(client: Any, messages: list[dict[str, Any]], config: EpisodeConfig,
           meta: EpisodeMeta) -> tuple[EpisodeState, Steps]:
    if not messages:
        raise ValueError("messages: the conversation is empty; give at least one user message")
    state = EpisodeState(config, meta, base_url_of(client), protocol="chat")
    return state, _ChatEpisode(state, messages).steps()


class _ChatEpisode:
    """Generator of the steps of one chat episode; the module docstring lists its rules."""

    def __init__(self, state: EpisodeState, messages: list[dict[str, Any]]) -> None:
        self.state = state
        self.config = state.config
        self.conversation = copy.deepcopy(messages)

    def steps(self) -> Steps:
        rules_text = None
        self.state.messages = copy.deepcopy(self.conversation)  # what a trace shows if the preload fails
        if self.config.mode == "always":
            rules_text = yield from self._preload()
        self.state.messages = _with_system(self.conversation, self.config.system_prompt, rules_text)
        turn, limit_hit = 0, False
        while True:
            offer = self.config.mode == "adaptive" and turn < self.config.max_turns
            completion = yield ChatRequest(self._request(turn, offer))
            choice = self._take(completion, turn)
            calls = choice.message.tool_calls or []
            if calls and offer:
                yield from self._tool_round(calls, turn)
                turn += 1
                limit_hit = turn >= self.config.max_turns
                continue
            self._finish(choice, limit_hit)
            return

    def _preload(self) -> Steps:
        """Look up rules for the user's last message; return the text to put in the system prompt."""
        query = _last_user_text(self.conversation)
        if not query:
            raise EpisodeFailure("always mode needs a user message with text to look up rules for")
        arguments = _json({"query": _clip(query, self.config.always_query_chars)})
        results: list[ToolResult] = yield ToolRequest([arguments])
        self.state.record_lookup(results[0], turn=0, name=TOOL_NAME, arguments=arguments, tool_call_id=None,
                                 origin="preload")
        output = results[0][0]
        if output.is_error:
            raise EpisodeFailure(f"the up-front rule lookup failed: {output.content}")
        return output.content

    def _request(self, turn: int, offer: bool) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.config.model, "messages": self._outgoing(),
                                  **self.config.sampling_kwargs()}
        if self.config.mode == "adaptive":
            kwargs["tools"] = [openai_tool(self.config.max_top_k)]
            if not offer:
                kwargs["tool_choice"] = "none"
            elif turn == 0 and self.config.first_tool_choice is not None:
                kwargs["tool_choice"] = self.config.first_tool_choice
            else:
                kwargs["tool_choice"] = "auto"
        return kwargs

    def _outgoing(self) -> list[dict[str, Any]]:
        messages = copy.deepcopy(self.state.messages)
        for message in messages:
            if not self.config.send_reasoning:
                message.pop("reasoning_content", None)
            # The trace keeps the server's null content. Servers such as
            # llama-cpp-python 0.3.36 return 500 for null or missing content in
            # a tool-call message, and "" means the same to every server.
            if message.get("role") == "assistant" and message.get("content") is None:
                message["content"] = ""
        return messages

    def _take(self, completion: Any, turn: int) -> Any:
        """Record a response's usage and assistant message; return its first choice."""
        self.state.add_usage(getattr(completion, "usage", None))
        choices = getattr(completion, "choices", None)
        if not choices:
            raise EpisodeFailure("the model server returned a response without choices")
        choice = choices[0]
        self.state.messages.append(_assistant_message(choice.message, turn))
        return choice

    def _tool_round(self, calls: list[Any], turn: int) -> Steps:
        """Run every tool call of one assistant message and append the `role: tool` results in order."""
        assistant = self.state.messages[-1]
        written = [(entry["id"], entry["function"]["name"], entry["function"]["arguments"])
                   for entry in assistant["tool_calls"]]
        runnable = [arguments for _, name, arguments in written if name == TOOL_NAME]
        results: list[ToolResult] = (yield ToolRequest(runnable)) if runnable else []
        answers = iter(results)
        for call_id, name, arguments in written:
            result = next(answers) if name == TOOL_NAME else (_unknown_tool(name), 0.0)
            self.state.record_lookup(result, turn=turn, name=name, arguments=arguments, tool_call_id=call_id)
            self.state.messages.append({"role": "tool", "tool_call_id": call_id, "content": result[0].content})

    def _finish(self, choice: Any, limit_hit: bool) -> None:
        message = self.state.messages[-1]
        self.state.final_answer = message.get("content")
        self.state.reasoning_content = message.get("reasoning_content")
        self.state.finish_reason = FINISH_TOOL_CALLS_LIMIT if limit_hit else (choice.finish_reason or FINISH_STOP)


def _assistant_message(message: Any, turn: int) -> dict[str, Any]:
    """Convert an assistant message to OpenAI form, keeping the server's reasoning as `reasoning_content`."""
    out: dict[str, Any] = {"role": "assistant", "content": message.content}
    calls = []
    for index, call in enumerate(message.tool_calls or []):
        name, arguments = _call_parts(call)
        calls.append({"id": call.id or f"call_{turn}_{index}", "type": "function",
                      "function": {"name": name, "arguments": arguments}})
    if calls:
        out["tool_calls"] = calls
    extra = message.model_extra or {}
    reasoning = extra.get("reasoning_content") or extra.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        out["reasoning_content"] = reasoning
    return out


def _call_parts(call: Any) -> tuple[str, str]:
    """Return the name and argument text of a tool call, function or custom."""
    function = getattr(call, "function", None)
    if function is not None:
        arguments = function.arguments
        return function.name, arguments if isinstance(arguments, str) else _json(arguments)
    custom = getattr(call, "custom", None)
    if custom is not None:
        return custom.name, custom.input
    return str(getattr(call, "type", "unknown")), ""


def _unknown_tool(name: str) -> RuleToolOutput:
    return RuleToolOutput(content=f"Error: there is no tool named {name!r}; the only tool is {TOOL_NAME}.",
                          rules=[], is_error=True)


def _with_system(messages: list[dict[str, Any]], system_prompt: str | None,
                 rules_text: str | None) -> list[dict[str, Any]]:
    """Return the conversation with one system message.

    The system message joins the configured prompt, the conversation's own system message and the rules.
    """
    messages = copy.deepcopy(messages)
    own = None
    if messages and messages[0].get("role") == "system":
        own = _text_of(messages.pop(0).get("content"))
    rules = f"{RULES_HEADER}\n\n{rules_text}" if rules_text else None
    parts = [part for part in (system_prompt, own, rules) if part]
    if parts:
        messages.insert(0, {"role": "system", "content": "\n\n".join(parts)})
    return messages


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text_of(message.get("content")).strip()
    return ""


def _text_of(content: Any) -> str:
    """Return the text of a message content: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"]
        return "\n".join(texts)
    return ""


def _clip(text: str, limit: int) -> str:
    """Cut text to `limit` characters at a word boundary when it is longer."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    return cut[: cut.rfind(" ")] if " " in cut else cut


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


__all__ = [
    "DUMMY_API_KEY", "RULES_HEADER", "EpisodeConfig", "TextTags", "arun_episode", "arun_text_episode",
    "make_async_client", "make_client", "resolve_api_key", "run_episode", "run_text_episode",
]
