"""The rule tool as a verl 0.9.1 `BaseTool`, for verl's tool agent loop; it calls the rule service over HTTP.

Declare it in a tool config file (see `verl_tool_config.yaml` next to this
module) and pass that file as `actor_rollout_ref.rollout.multi_turn.tool_config_path`.
verl's agent loop runs `create`, `execute` and `release` once per tool call.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse
from verl.utils.rollout_trace import rollout_trace_op

from agent.clients import AsyncRuleClient
from rule_service.tool import format_rules, openai_tool

logger = logging.getLogger(__name__)

# verl's loader reads `type` from the same `config` mapping to pick the tool kind.
VERL_TOOL_TYPE = "native"
# The agent loop appends every reward that is not None to the rollout's `tool_rewards`,
# so a constant reward makes that field count the calls (see `verl_hook`).
CALL_REWARD = 0.0


class RuleToolSettings(BaseModel):
    """The `config` mapping of the rule tool's entry in a verl tool config file."""

    model_config = ConfigDict(extra="forbid")

    type: str = VERL_TOOL_TYPE
    rules_url: str | None = Field(None, description="Base URL of the rule service; None reads $ASCL_RULES_URL.")
    timeout: float = Field(30.0, gt=0, description="Seconds per HTTP attempt.")
    max_attempts: int = Field(4, ge=1, description="HTTP attempts per tool call, counting the first.")
    char_budget: int | None = Field(
        None, gt=0,
        description="Render the rules again in at most this many characters, whole rules first; None keeps the "
        "service's text. verl cuts tool text at rollout.multi_turn.max_tool_response_length (256 by default).",
    )


class RuleSearchTool(BaseTool):
    """The `search_safety_rules` tool: runs each call on the rule service and returns the rules as text."""

    def __init__(self, config: dict[str, Any], tool_schema: OpenAIFunctionToolSchema | None = None) -> None:
        try:
            self.settings = RuleToolSettings.model_validate(config or {})
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"])
            raise ValueError(
                f"invalid rule tool config: config.{field}={error.get('input')!r}: {error['msg']}"
            ) from None
        self.client = AsyncRuleClient(
            self.settings.rules_url, timeout=self.settings.timeout, max_attempts=self.settings.max_attempts,
        )
        # Rule ids returned to each open instance; `release` drops them.
        self._instances: dict[str, list[str]] = {}
        super().__init__(config, tool_schema)

    def get_openai_tool_schema(self) -> OpenAIFunctionToolSchema:
        """Return the schema from the tool config file, else the one the rule service's tool definition gives."""
        schema = getattr(self, "tool_schema", None)
        return schema or OpenAIFunctionToolSchema.model_validate(openai_tool())

    async def create(self, instance_id: str | None = None, **kwargs: Any) -> tuple[str, ToolResponse]:
        """Open an instance for one trajectory's call; `create_kwargs` from the dataset are accepted and unused."""
        instance_id = instance_id or str(uuid4())
        self._instances[instance_id] = []
        return instance_id, ToolResponse()

    @rollout_trace_op
    async def execute(
        self, instance_id: str, parameters: dict[str, Any], **kwargs: Any,
    ) -> tuple[ToolResponse, float, dict[str, Any]]:
        """Run one call; bad arguments give an error text for the model, a failed service raises `RuleServiceError`.

        verl's agent loop turns a raised error into an error text for the model and logs a warning.
        """
        output = await self.client.acall_tool(parameters)
        text = output.content
        if self.settings.char_budget is not None and not output.is_error:
            text = format_rules(output.rules, self.settings.char_budget)

        self._instances.setdefault(instance_id, []).extend(rule.id for rule in output.rules)
        if output.is_error:
            logger.info("rule tool call in instance %s had invalid arguments", instance_id)
        metrics = {"rules": len(output.rules), "is_error": output.is_error}
        return ToolResponse(text=text), CALL_REWARD, metrics

    async def calc_reward(self, instance_id: str, **kwargs: Any) -> float:
        """Return 0.0, because consulting the rules earns nothing by itself. The episode's reward scores the reply."""
        return CALL_REWARD

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        self._instances.pop(instance_id, None)

    def rule_ids(self, instance_id: str) -> list[str]:
        """Return the ids of the rules returned so far to an open instance, in call order."""
        return list(self._instances.get(instance_id, []))


__all__ = ["RuleSearchTool", "RuleToolSettings"]
