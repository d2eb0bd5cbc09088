"""Several rulesets served side by side from one corpus folder, selected by `ruleset`."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rule_service.app import create_app
from rule_service.encoder import Encoder
from rule_service.rules import RuleSetInvalidError, discover_rulesets
from rule_service.service import RuleService
from rule_service.settings import Settings
from tests.conftest import LiveServer
from tests.rule_service.support import query_for, small_rules, write_jsonl_rules, write_yaml_rules

ALPHA_IDS = [rule["id"] for rule in small_rules(3)]
BETA_IDS = [rule["id"] for rule in small_rules(3, start=3)]


def _write_two_rulesets(corpus: Path) -> Path:
    write_yaml_rules(corpus / "alpha" / "rules.yaml", small_rules(3))
    write_jsonl_rules(corpus / "beta" / "rules.jsonl", small_rules(3, start=3))
    return corpus


@pytest.fixture(scope="module")
def two_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("two-rulesets")
    corpus = _write_two_rulesets(root / "corpus")
    return Settings(corpus_dir=corpus, index_dir=root / "index", default_ruleset="alpha")


@pytest.fixture(scope="module")
def two_client(two_settings: Settings, encoder: Encoder) -> Iterator[httpx.Client]:
    service = RuleService.load(two_settings, encoder=encoder)
    live = LiveServer(create_app(two_settings, service)).start()
    with live.client() as http:
        yield http
    live.stop()


def _search_ids(client: httpx.Client, query: str, **filters: object) -> list[str]:
    body = client.post("/v1/rules/search", json={"query": query, "top_k": 10, **filters}).json()
    return [hit["id"] for hit in body["results"]]


def test_rulesets_listed(two_client: httpx.Client) -> None:
    data = two_client.get("/v1/rulesets").json()["data"]

    assert [entry["name"] for entry in data] == ["alpha", "beta"]
    assert [entry["default"] for entry in data] == [True, False]
    assert [entry["rule_count"] for entry in data] == [3, 3]


def test_rulesets_have_own_index_versions(two_client: httpx.Client) -> None:
    versions = two_client.get("/readyz").json()["index_versions"]

    assert set(versions) == {"alpha", "beta"}
    assert versions["alpha"] != versions["beta"]


def test_search_default_ruleset(two_client: httpx.Client) -> None:
    assert sorted(_search_ids(two_client, "how do I tune my guitar strings")) == sorted(ALPHA_IDS)


def test_search_named_ruleset(two_client: httpx.Client) -> None:
    assert sorted(_search_ids(two_client, "how do I tune my guitar strings", ruleset="beta")) == sorted(BETA_IDS)


def test_search_named_ruleset_ranks(two_client: httpx.Client) -> None:
    ids = _search_ids(two_client, query_for("astronomy.telescopes"), ruleset="beta")

    assert ids[0] == "astronomy.telescopes"


def test_search_reports_ruleset(two_client: httpx.Client) -> None:
    body = two_client.post("/v1/rules/search", json={"query": "bread", "ruleset": "beta"}).json()
    versions = two_client.get("/readyz").json()["index_versions"]

    assert body["ruleset"] == "beta"
    assert body["index_version"] == versions["beta"]


def test_batch_search_named_ruleset(two_client: httpx.Client) -> None:
    body = two_client.post("/v1/rules/batch_search", json={"queries": ["bread", "sailing"], "ruleset": "beta"}).json()

    assert {hit["id"] for group in body["results"] for hit in group["results"]} <= set(BETA_IDS)


def test_read_rule_in_named_ruleset(two_client: httpx.Client) -> None:
    assert two_client.get("/v1/rules/kitchen.bread", params={"ruleset": "beta"}).status_code == 200


def test_read_rule_other_ruleset_404(two_client: httpx.Client) -> None:
    response = two_client.get("/v1/rules/kitchen.bread")

    assert response.status_code == 404
    assert "'alpha'" in response.json()["message"]


def test_list_rules_named_ruleset(two_client: httpx.Client) -> None:
    body = two_client.get("/v1/rules", params={"ruleset": "beta"}).json()

    assert [rule["id"] for rule in body["data"]] == sorted(BETA_IDS)


def test_tool_call_named_ruleset(two_client: httpx.Client) -> None:
    arguments = json.dumps({"query": query_for("money.budgeting"), "ruleset": "beta", "top_k": 1})
    body = two_client.post("/v1/tools/call", json={"function": {"name": "search_safety_rules",
                                                                "arguments": arguments}}).json()

    assert [rule["id"] for rule in body["rules"]] == ["money.budgeting"]


def test_retrieve_uses_default_ruleset(two_client: httpx.Client) -> None:
    body = two_client.post("/retrieve", json={"queries": ["bread"], "topk": 10}).json()

    assert sorted(document["id"] for document in body["result"][0]) == sorted(ALPHA_IDS)


def test_unknown_ruleset_lists_available(two_client: httpx.Client) -> None:
    response = two_client.post("/v1/rules/search", json={"query": "bread", "ruleset": "gamma"})

    assert response.status_code == 422
    assert "['alpha', 'beta']" in response.json()["message"]


def test_index_folder_per_ruleset(two_client: httpx.Client, two_settings: Settings) -> None:
    assert sorted(path.name for path in two_settings.index_dir.iterdir()) == ["alpha", "beta"]


# Discovery and loading.


def test_discover_flat_folder_is_default(tmp_path: Path) -> None:
    write_yaml_rules(tmp_path / "rules.yaml", small_rules(2))

    assert discover_rulesets(tmp_path, "default") == {"default": tmp_path}


def test_discover_sub_folders(tmp_path: Path) -> None:
    _write_two_rulesets(tmp_path)
    (tmp_path / "empty").mkdir()

    assert discover_rulesets(tmp_path, "default") == {"alpha": tmp_path / "alpha", "beta": tmp_path / "beta"}


def test_discover_invalid_folder_name(tmp_path: Path) -> None:
    write_yaml_rules(tmp_path / "Bad Name" / "rules.yaml", small_rules(2))

    with pytest.raises(ValueError, match="Bad Name"):
        discover_rulesets(tmp_path, "default")


def test_discover_no_rule_files(tmp_path: Path) -> None:
    (tmp_path / "alpha").mkdir()

    with pytest.raises(FileNotFoundError, match="no rule files"):
        discover_rulesets(tmp_path, "default")


def test_same_id_in_two_rulesets(tmp_path: Path, encoder: Encoder) -> None:
    write_yaml_rules(tmp_path / "corpus" / "alpha" / "rules.yaml", small_rules(3))
    write_yaml_rules(tmp_path / "corpus" / "beta" / "rules.yaml", small_rules(3))
    settings = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index", default_ruleset="alpha")

    service = RuleService.load(settings, encoder=encoder)

    assert sorted(service.rulesets) == ["alpha", "beta"]


def test_default_ruleset_missing(tmp_path: Path, encoder: Encoder) -> None:
    _write_two_rulesets(tmp_path / "corpus")
    settings = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index")

    with pytest.raises(ValueError, match="default ruleset 'default'"):
        RuleService.load(settings, encoder=encoder)


def test_one_invalid_ruleset_rejects_all(tmp_path: Path, encoder: Encoder) -> None:
    _write_two_rulesets(tmp_path / "corpus")
    broken = small_rules(1)
    broken[0]["version"] = 0
    write_yaml_rules(tmp_path / "corpus" / "beta" / "broken.yaml", broken)
    settings = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index", default_ruleset="alpha")

    with pytest.raises(RuleSetInvalidError, match="version"):
        RuleService.load(settings, encoder=encoder)
