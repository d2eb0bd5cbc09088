"""The rule backend protocol the agent loop calls, and its in-process implementation.

The loop needs one thing from the rule service: run a rule tool call and get
back the text for the model and the rules behind it. `RuleBackend` is that
contract; the HTTP clients in `agent.clients` and `LocalRuleClient` here
implement it, so the loop does not care where the rules come from.
"""

import asyncio
from typing import Any, Protocol, runtime_checkable

from rule_service.tool import RuleToolOutput


@runtime_checkable
class RuleBackend(Protocol):
    """Anything that can run a rule tool call, synchronously and asynchronously."""

    def call_tool(self, arguments: str | dict[str, Any]) -> RuleToolOutput:
        """Run one tool call; invalid arguments give a result with `is_error` set, never an exception."""
        ...

    async def acall_tool(self, arguments: str | dict[str, Any]) -> RuleToolOutput:
        """Async form of `call_tool`."""
        ...


class LocalRuleClient:
    """Runs rule tool calls in-process against a loaded `RuleService`, without HTTP.

    For notebooks and rollout workers that embed the index. With no service
    given, it loads the bundled corpus with default settings (about 5 s).
    """

    def __init__(self, service: Any | None = None) -> None:
        if service is None:
            from rule_service.service import RuleService
            from rule_service.settings import Settings

            service = RuleService.load(Settings())
        self.service = service

    def call_tool(self, arguments: str | dict[str, Any]) -> RuleToolOutput:
        from rule_service.limits import run_tool_call

        return run_tool_call(self.service, arguments)

    async def acall_tool(self, arguments: str | dict[str, Any]) -> RuleToolOutput:
        # The encoder is serialised on its own thread, so the event loop only waits.
        return await asyncio.to_thread(self.call_tool, arguments)
