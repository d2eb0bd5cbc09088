"""The API key: every route except the health checks needs `Authorization: Bearer <ASCL_API_KEY>`."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rule_service.app import create_app
from rule_service.service import RuleService
from rule_service.settings import Settings
from tests.conftest import LiveServer

API_KEY = "test-key-5f2c9a"
SEARCH_BODY = {"query": "how do I kill a zombie process in linux", "top_k": 2}


@pytest.fixture(scope="module")
def auth_client(bundled_corpus_dir: Path, bundled_index_dir: Path, bundled_service: RuleService) -> Iterator[httpx.Client]:
    """A client of a live server that requires `API_KEY`; the client itself sends no key."""
    settings = Settings(corpus_dir=bundled_corpus_dir, index_dir=bundled_index_dir, api_key=API_KEY)
    live = LiveServer(create_app(settings, bundled_service)).start()
    with live.client() as http:
        yield http
    live.stop()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_search_without_key_401(auth_client: httpx.Client) -> None:
    response = auth_client.post("/v1/rules/search", json=SEARCH_BODY)

    assert response.status_code == 401
    assert "API key" in response.json()["message"]
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_search_wrong_key_401(auth_client: httpx.Client) -> None:
    response = auth_client.post("/v1/rules/search", json=SEARCH_BODY, headers=_bearer(API_KEY + "x"))

    assert response.status_code == 401


def test_search_key_prefix_401(auth_client: httpx.Client) -> None:
    response = auth_client.post("/v1/rules/search", json=SEARCH_BODY, headers=_bearer(API_KEY[:-1]))

    assert response.status_code == 401


def test_search_basic_scheme_401(auth_client: httpx.Client) -> None:
    response = auth_client.post("/v1/rules/search", json=SEARCH_BODY, headers={"Authorization": f"Basic {API_KEY}"})

    assert response.status_code == 401


def test_search_right_key_200(auth_client: httpx.Client) -> None:
    response = auth_client.post("/v1/rules/search", json=SEARCH_BODY, headers=_bearer(API_KEY))

    assert response.status_code == 200
    assert len(response.json()["results"]) == 2


def test_metrics_without_key_401(auth_client: httpx.Client) -> None:
    assert auth_client.get("/metrics").status_code == 401


def test_metrics_wrong_key_401(auth_client: httpx.Client) -> None:
    assert auth_client.get("/metrics", headers=_bearer("wrong")).status_code == 401


def test_metrics_right_key_200(auth_client: httpx.Client) -> None:
    response = auth_client.get("/metrics", headers=_bearer(API_KEY))

    assert response.status_code == 200
    assert "ascl_http_requests_total" in response.text


def test_metrics_count_rejected_requests(auth_client: httpx.Client) -> None:
    auth_client.post("/v1/rules/search", json=SEARCH_BODY)

    text = auth_client.get("/metrics", headers=_bearer(API_KEY)).text
    rejected = [sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                if sample.name == "ascl_http_requests_total" and sample.labels["route"] == "/v1/rules/search"
                and sample.labels["status"] == "401"]

    assert len(rejected) == 1
    assert rejected[0] >= 1


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/rules/batch_search"),
    ("POST", "/retrieve"),
    ("GET", "/v1/rules"),
    ("GET", "/v1/rules/help.violent_idioms"),
    ("GET", "/v1/rulesets"),
    ("GET", "/v1/tools"),
    ("POST", "/v1/tools/call"),
    ("GET", "/v1/info"),
])
def test_other_routes_need_key(auth_client: httpx.Client, method: str, path: str) -> None:
    assert auth_client.request(method, path, json={}).status_code == 401


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_open_without_key(auth_client: httpx.Client, path: str) -> None:
    assert auth_client.get(path).status_code == 200


def test_info_reports_auth_required(auth_client: httpx.Client) -> None:
    assert auth_client.get("/v1/info", headers=_bearer(API_KEY)).json()["auth_required"] is True


def test_info_does_not_leak_key(auth_client: httpx.Client) -> None:
    assert API_KEY not in auth_client.get("/v1/info", headers=_bearer(API_KEY)).text


def test_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASCL_API_KEY", API_KEY)

    settings = Settings()

    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == API_KEY


def test_api_key_hidden_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASCL_API_KEY", API_KEY)

    assert API_KEY not in repr(Settings())


def test_empty_api_key_means_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASCL_API_KEY", "")

    assert Settings().api_key is None
