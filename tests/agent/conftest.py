"""Fixtures shared by the agent tests: the scripted OpenAI-compatible server, one per test module."""

from collections.abc import Iterator

import pytest

from agent.backend import LocalRuleClient, RuleBackend
from rule_service.service import RuleService
from tests.agent.scripted_server import ScriptedModel, start_scripted_server
from tests.conftest import LiveServer


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[ScriptedModel, LiveServer]]:
    model, live = start_scripted_server()
    yield model, live
    live.stop()


@pytest.fixture
def model(scripted: tuple[ScriptedModel, LiveServer]) -> ScriptedModel:
    scripted[0].reset()
    return scripted[0]


@pytest.fixture
def backend(bundled_service: RuleService) -> RuleBackend:
    """The in-process rule backend over the session's bundled service."""
    return LocalRuleClient(bundled_service)
