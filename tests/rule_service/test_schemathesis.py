"""Schemathesis against the service's own OpenAPI document, over HTTP on loopback.

Each operation gets a bounded number of generated requests, so the module
runs in well under a minute. Every response must be a non-5xx with a status
code, content type and body that the document allows.
"""


import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from rule_service.app import create_app
from rule_service.settings import Settings
from tests.conftest import LiveServer

EXAMPLES_PER_OPERATION = 100
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CASES_RUN = {"count": 0}


def _operations() -> list[tuple[str, str, GenerationMode]]:
    """List (method, path, mode) for every documented operation; building the document loads no model.

    Operations without parameters or a body have no invalid input, so they get positive cases only.
    """
    document = create_app(Settings()).openapi()
    cases = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            cases.append((method.upper(), path, GenerationMode.POSITIVE))
            if operation.get("parameters") or operation.get("requestBody"):
                cases.append((method.upper(), path, GenerationMode.NEGATIVE))
    return cases


@pytest.fixture(scope="module")
def api_schema(server: LiveServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")


@pytest.mark.parametrize(("method", "path", "mode"), _operations())
def test_operation(
    method: str, path: str, mode: GenerationMode, api_schema: schemathesis.BaseSchema, server: LiveServer
) -> None:
    operation = api_schema[path][method]

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        CASES_RUN["count"] += 1
        case.call_and_validate(base_url=server.base_url, checks=CHECKS)

    run()
