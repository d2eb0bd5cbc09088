"""A scripted OpenAI-compatible model server for the agent loop tests.

It stands in for a model: no useful chat model runs on this machine, so the
loop tests talk to this server instead. It speaks the real wire format over
HTTP on loopback (chat completions with tool calls whose arguments are JSON
strings, text completions with stop strings, `finish_reason`, `usage`,
OpenAI error bodies, 429 with `Retry-After`) and checks requests the way a
real server does: a `role: tool` message must answer a tool call of the
assistant message before it, every tool call must be answered, `tool_choice`
needs `tools`, and (as some reasoning-model servers do) `reasoning_content`
is refused in request messages.

The request's `model` names the policy it plays (see `CHAT_POLICIES` and
`TEXT_POLICIES`). Failures, a delay and the peak number of requests in
flight are set and read on the `ScriptedModel` object.
"""

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

SECOND_QUERY = "sharing someone's home address online"


@dataclass
class Failure:
    status: int
    retry_after_ms: int | None
    code: str | None


@dataclass
class ChatView:
    """The parts of a chat request that a policy reads."""

    body: dict[str, Any]

    @property
    def tools_allowed(self) -> bool:
        return bool(self.body.get("tools")) and self.body.get("tool_choice") != "none"

    @property
    def forced(self) -> bool:
        choice = self.body.get("tool_choice")
        return choice == "required" or isinstance(choice, dict)

    @property
    def tool_results(self) -> int:
        return sum(1 for message in self.body["messages"] if message.get("role") == "tool")

    @property
    def user_text(self) -> str:
        for message in reversed(self.body["messages"]):
            if message.get("role") == "user" and isinstance(message.get("content"), str):
                return message["content"]
        return ""

    def answer(self, **extra: Any) -> tuple[dict[str, Any], str]:
        content = f"Final answer after reading {self.tool_results} tool result(s)."
        return {"role": "assistant", "content": content, **extra}, "stop"

    def call(self, *arguments: str, name: str = "search_safety_rules", **extra: Any) -> tuple[dict[str, Any], str]:
        calls = [{"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                  "function": {"name": name, "arguments": text}} for text in arguments]
        return {"role": "assistant", "content": None, "tool_calls": calls, **extra}, "tool_calls"


def _query(text: str) -> str:
    return json.dumps({"query": text[:200]})


def _never(view: ChatView) -> tuple[dict[str, Any], str]:
    return view.answer()


def _call_once(view: ChatView) -> tuple[dict[str, Any], str]:
    if view.tools_allowed and (view.tool_results == 0 or view.forced):
        return view.call(_query(view.user_text))
    return view.answer()


def _broken_args(view: ChatView) -> tuple[dict[str, Any], str]:
    if view.tools_allowed and view.tool_results == 0:
        return view.call('{"query": "how to pick a lock')
    return view.answer()


def _parallel(view: ChatView) -> tuple[dict[str, Any], str]:
    if view.tools_allowed and view.tool_results == 0:
        return view.call(_query(view.user_text), _query(SECOND_QUERY))
    return view.answer()


def _loop(view: ChatView) -> tuple[dict[str, Any], str]:
    if view.tools_allowed:
        return view.call(_query(f"{view.user_text} (attempt {view.tool_results + 1})"))
    return view.answer()


def _wrong_tool(view: ChatView) -> tuple[dict[str, Any], str]:
    if view.tools_allowed and view.tool_results == 0:
        return view.call(_query(view.user_text), name="web_search")
    return view.answer()


def _reasoning(view: ChatView) -> tuple[dict[str, Any], str]:
    thought = {"reasoning_content": f"Thinking at step {view.tool_results}."}
    if view.tools_allowed and view.tool_results == 0:
        return view.call(_query(view.user_text), **thought)
    return view.answer(**thought)


def _filtered(view: ChatView) -> tuple[dict[str, Any], str]:
    return {"role": "assistant", "content": None}, "content_filter"


def _length(view: ChatView) -> tuple[dict[str, Any], str]:
    return {"role": "assistant", "content": "An answer cut off at the tok"}, "length"


CHAT_POLICIES: dict[str, Callable[[ChatView], tuple[dict[str, Any], str]]] = {
    "never": _never,            # answers at once, never calls the tool
    "call_once": _call_once,    # calls the tool once with the user's text, then answers
    "broken_args": _broken_args,  # writes arguments that are not valid JSON, then answers
    "parallel": _parallel,      # makes two tool calls in one message, then answers
    "loop": _loop,              # calls the tool whenever it is offered and not disabled
    "wrong_tool": _wrong_tool,  # calls a tool that was not offered
    "reasoning": _reasoning,    # like call_once, with reasoning_content on each message
    "filtered": _filtered,      # stopped by a content filter
    "length": _length,          # runs out of tokens
}


def _text_policy(searches: int | None) -> Callable[[str, str | None], tuple[str, str]]:
    """A completion policy that searches `searches` times (None: whenever it may), then answers."""

    def play(prompt: str, close_tag: str | None) -> tuple[str, str]:
        if close_tag is not None:
            open_tag = close_tag.replace("</", "<", 1)
            done = prompt.count(close_tag)
            if searches is None or done < searches:
                return f" I should check the rules first. {open_tag}rules for request {done + 1}", "stop"
        return " The answer is 42.", "stop"

    return play


TEXT_POLICIES = {"text_never": _text_policy(0), "text_search": _text_policy(1), "text_loop": _text_policy(None)}


class ScriptedModel:
    """The server's state: recorded requests, queued failures, a delay and the in-flight peak."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.failures: deque[Failure] = deque()
        self.delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def fail_next(self, count: int, status: int = 500, retry_after_ms: int | None = None,
                  code: str | None = None) -> None:
        """Answer the next `count` requests with an error of this status (429s carry Retry-After)."""
        self.failures.extend(Failure(status, retry_after_ms, code) for _ in range(count))

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            names = [*CHAT_POLICIES, *TEXT_POLICIES]
            return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "tests"} for name in names]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            return await self._serve(request, self._chat)

        @app.post("/v1/completions")
        async def completions(request: Request) -> JSONResponse:
            return await self._serve(request, self._completion)

        return app

    async def _serve(self, request: Request, handler: Callable[[dict[str, Any]], JSONResponse]) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return error(400, "the request body is not valid JSON")
        self.requests.append(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.failures:
                return self._failure(self.failures.popleft())
            return handler(body)
        finally:
            self.in_flight -= 1

    def _failure(self, failure: Failure) -> JSONResponse:
        headers = {}
        if failure.retry_after_ms is not None:
            seconds = max(1, failure.retry_after_ms // 1000)
            headers = {"retry-after-ms": str(failure.retry_after_ms), "retry-after": str(seconds)}
        kinds = {429: "rate_limit_exceeded", 400: "invalid_request_error"}
        kind = kinds.get(failure.status, "server_error")
        return error(failure.status, f"scripted failure {failure.status}", kind=kind, code=failure.code, headers=headers)

    def _chat(self, body: dict[str, Any]) -> JSONResponse:
        policy = CHAT_POLICIES.get(body.get("model", ""))
        if policy is None:
            return error(404, f"The model {body.get('model')!r} does not exist", code="model_not_found")
        problem = check_chat_request(body)
        if problem:
            return error(400, problem)
        message, finish = policy(ChatView(body))
        written = len(json.dumps(message))
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": _usage(len(json.dumps(body["messages"])), written),
        })

    def _completion(self, body: dict[str, Any]) -> JSONResponse:
        policy = TEXT_POLICIES.get(body.get("model", ""))
        if policy is None:
            return error(404, f"The model {body.get('model')!r} does not exist", code="model_not_found")
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return error(400, "prompt: expected a string")
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        close_tag = next((s for s in stops if s.startswith("</")), None)
        text, finish = policy(prompt, close_tag)
        return JSONResponse({
            "id": f"cmpl-{uuid.uuid4().hex[:16]}", "object": "text_completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            "usage": _usage(len(prompt), len(text)),
        })


def _usage(prompt_chars: int, completion_chars: int) -> dict[str, int]:
    prompt_tokens, completion_tokens = max(1, prompt_chars // 4), max(1, completion_chars // 4)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    """An error in the OpenAI wire format."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def check_chat_request(body: dict[str, Any]) -> str | None:
    """The first thing a real server would refuse in this request, or None."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: expected a non-empty array"
    tools = body.get("tools") or []
    names = {tool.get("function", {}).get("name") for tool in tools}
    choice = body.get("tool_choice")
    if choice is not None and not tools:
        return "tool_choice is only allowed when tools are specified"
    if isinstance(choice, dict) and choice.get("function", {}).get("name") not in names:
        return f"tool_choice names a tool that is not in tools: {choice}"
    if choice is not None and not isinstance(choice, dict) and choice not in ("none", "auto", "required"):
        return f"tool_choice: {choice!r} is not one of none, auto, required"
    return _check_messages(messages)


def _check_messages(messages: list[dict[str, Any]]) -> str | None:
    pending: set[str] = set()
    for position, message in enumerate(messages):
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            return f"messages[{position}].role: {role!r} is not a role"
        if "reasoning_content" in message:
            return f"messages[{position}]: reasoning_content is not accepted in request messages"
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in pending:
                return (f"messages[{position}]: a tool message must answer a tool call of the assistant message "
                        f"before it (tool_call_id {call_id!r})")
            pending.discard(call_id)
            continue
        if pending:
            return f"messages[{position}]: tool calls {sorted(pending)} were not answered by tool messages"
        for call in message.get("tool_calls") or []:
            if not isinstance(call.get("function", {}).get("arguments"), str):
                return f"messages[{position}].tool_calls: function.arguments must be a JSON string"
            pending.add(call.get("id"))
    if pending:
        return f"tool calls {sorted(pending)} were not answered by tool messages"
    return None


def start_scripted_server() -> tuple[ScriptedModel, Any]:
    """Start a scripted model server on a loopback port; return its state and the running `LiveServer`."""
    from tests.conftest import LiveServer

    model = ScriptedModel()
    return model, LiveServer(model.app()).start()
