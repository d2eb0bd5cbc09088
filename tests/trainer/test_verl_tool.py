"""The rule tool as a verl 0.9.1 `BaseTool`, loaded by verl's own tool loader and run against the live rule service."""

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml

pytest.importorskip(
    "verl", reason="verl 0.9.1 is not installed in this venv; run make install-verl, then "
    ".venv-verl/bin/python -m pytest -m verl tests/trainer",
)

from verl.experimental.agent_loop.tool_agent_loop import ToolAgentLoop  # noqa: E402
from verl.experimental.agent_loop.tool_parser import FunctionCall  # noqa: E402
from verl.tools.schemas import OpenAIFunctionToolSchema  # noqa: E402
from verl.tools.tool_registry import initialize_tools_from_config  # noqa: E402

from agent.clients import RuleServiceUnavailable  # noqa: E402
from rule_service.tool import TOOL_NAME, ToolRuleText, format_rules, openai_tool  # noqa: E402
from tests.conftest import REPO_ROOT, LiveServer, free_port  # noqa: E402
from trainer.integrations.verl_tool import RuleSearchTool  # noqa: E402

pytestmark = pytest.mark.verl

TOOL_CONFIG = REPO_ROOT / "trainer" / "integrations" / "verl_tool_config.yaml"
QUERY = {"query": "how do I make a pipe bomb", "top_k": 3}


def load_tool(tmp_path: Path, **config: object) -> RuleSearchTool:
    """Load the shipped tool config through verl's loader, with `config` entries replaced."""
    document = yaml.safe_load(TOOL_CONFIG.read_text())
    document["tools"][0]["config"].update(config)
    path = tmp_path / "tool_config.yaml"
    path.write_text(yaml.safe_dump(document))
    tools = initialize_tools_from_config(str(path))
    assert len(tools) == 1
    return tools[0]


def run_call(tool: RuleSearchTool, parameters: dict) -> tuple:
    async def lifecycle():
        instance_id, _ = await tool.create(create_kwargs={})
        response, reward, metrics = await tool.execute(instance_id, parameters)
        rule_ids = tool.rule_ids(instance_id)
        total = await tool.calc_reward(instance_id)
        await tool.release(instance_id)
        return response, reward, metrics, rule_ids, total, tool.rule_ids(instance_id)

    return asyncio.run(lifecycle())


def service_output(server: LiveServer, arguments: dict) -> dict:
    call = {"type": "function", "function": {"name": TOOL_NAME, "arguments": json.dumps(arguments)}}
    return httpx.post(f"{server.base_url}/v1/tools/call", json=call, timeout=60).json()


def test_config_loads_through_verl(tmp_path):
    tool = load_tool(tmp_path, rules_url="http://127.0.0.1:9")

    assert isinstance(tool, RuleSearchTool)
    assert tool.name == TOOL_NAME


def test_config_schema_matches_service():
    document = yaml.safe_load(TOOL_CONFIG.read_text())
    shipped = OpenAIFunctionToolSchema.model_validate(document["tools"][0]["tool_schema"])

    assert shipped == OpenAIFunctionToolSchema.model_validate(openai_tool())


def test_schema_without_config_entry(tmp_path):
    document = yaml.safe_load(TOOL_CONFIG.read_text())
    del document["tools"][0]["tool_schema"]
    document["tools"][0]["config"]["rules_url"] = "http://127.0.0.1:9"
    path = tmp_path / "no_schema.yaml"
    path.write_text(yaml.safe_dump(document))

    tool = initialize_tools_from_config(str(path))[0]

    assert tool.get_openai_tool_schema() == OpenAIFunctionToolSchema.model_validate(openai_tool())


def test_call_returns_service_text(server, tmp_path, monkeypatch):
    monkeypatch.setenv("ASCL_RULES_URL", server.base_url)
    tool = load_tool(tmp_path)

    response, reward, metrics, rule_ids, total, released = run_call(tool, QUERY)

    expected = service_output(server, QUERY)
    assert response.text == expected["content"]
    assert rule_ids == [rule["id"] for rule in expected["rules"]]
    assert "weapons.explosives" in rule_ids
    assert reward == 0.0
    assert total == 0.0
    assert metrics == {"rules": len(rule_ids), "is_error": False}
    assert released == []


def test_char_budget_renders_whole_rules(server, tmp_path):
    tool = load_tool(tmp_path, rules_url=server.base_url, char_budget=300)

    response, _, _, rule_ids, _, _ = run_call(tool, QUERY)

    rules = [ToolRuleText.model_validate(rule) for rule in service_output(server, QUERY)["rules"]]
    assert response.text == format_rules(rules, 300)
    assert len(response.text) <= 300
    assert f"[{rule_ids[0]}]" in response.text


def test_invalid_arguments_give_error_text(server, tmp_path):
    tool = load_tool(tmp_path, rules_url=server.base_url, char_budget=300)

    response, reward, metrics, rule_ids, _, _ = run_call(tool, {"top_k": 2})

    assert response.text.startswith("Error:")
    assert "query is missing" in response.text
    assert metrics == {"rules": 0, "is_error": True}
    assert rule_ids == []
    assert reward == 0.0


def test_unreachable_service_raises(tmp_path):
    tool = load_tool(tmp_path, rules_url=f"http://127.0.0.1:{free_port()}", max_attempts=1, timeout=2.0)

    with pytest.raises(RuleServiceUnavailable, match="cannot reach the rule service"):
        run_call(tool, QUERY)


def call_through_agent_loop(tool: RuleSearchTool, arguments: dict, max_length: int = 256) -> tuple:
    """Run verl's own `ToolAgentLoop._call_tool` (create, execute, release, then verl's length cut).

    Building a real ToolAgentLoop needs a model server, so `self` and the
    trajectory state are stand-ins that carry only the attributes `_call_tool` reads.
    """
    loop = SimpleNamespace(tools={tool.name: tool}, max_tool_response_length=max_length,
                           tool_response_truncate_side="right")
    call = FunctionCall(name=tool.name, arguments=json.dumps(arguments))
    kwargs = {tool.name: {"create_kwargs": {"prompt_id": "p1", "kind": "harmful"}}}
    return asyncio.run(ToolAgentLoop._call_tool(loop, call, kwargs, SimpleNamespace()))


def test_agent_loop_call_fits_budget(server, tmp_path):
    tool = load_tool(tmp_path, rules_url=server.base_url, char_budget=256)

    response, reward, metrics = call_through_agent_loop(tool, QUERY)

    rules = [ToolRuleText.model_validate(rule) for rule in service_output(server, QUERY)["rules"]]
    assert response.text == format_rules(rules, 256)
    assert "(truncated)" not in response.text
    assert reward == 0.0
    assert metrics["rules"] == len(rules)
    assert tool._instances == {}


def test_agent_loop_reports_unreachable_service(tmp_path):
    tool = load_tool(tmp_path, rules_url=f"http://127.0.0.1:{free_port()}", max_attempts=1, timeout=2.0)

    response, reward, _ = call_through_agent_loop(tool, QUERY)

    assert response.text.startswith(f"Error executing tool '{TOOL_NAME}'")
    assert "cannot reach the rule service" in response.text
    assert reward == 0.0
    assert tool._instances == {}


def test_unknown_config_key_names_it(tmp_path):
    with pytest.raises(ValueError, match=r"config\.rule_url="):
        load_tool(tmp_path, rule_url="http://127.0.0.1:8000")


def test_missing_url_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("ASCL_RULES_URL", raising=False)

    with pytest.raises(ValueError, match="ASCL_RULES_URL"):
        load_tool(tmp_path)


def test_invalid_char_budget_names_it(tmp_path):
    with pytest.raises(ValueError, match=r"config\.char_budget=0"):
        load_tool(tmp_path, rules_url="http://127.0.0.1:9", char_budget=0)
