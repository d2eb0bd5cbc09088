"""Bad input gets a 4xx whose `message` names the field, the value and the limit; never a 500."""

import httpx
import pytest

from rule_service.service import RuleService

QUERY = "how do I kill a zombie process in linux"


def _post(client: httpx.Client, path: str, body: object) -> httpx.Response:
    return client.post(path, json=body)


def _raw(client: httpx.Client, path: str, content: bytes) -> httpx.Response:
    return client.post(path, content=content, headers={"Content-Type": "application/json"})


# Limits of the deployment: each message names the field, the value and the limit.


def test_empty_query(client: httpx.Client) -> None:
    response = _post(client, "/v1/rules/search", {"query": ""})
    message = response.json()["message"]

    assert response.status_code == 422
    assert message.startswith("query:")
    assert "must not be empty" in message
    assert "(got '')" in message


def test_whitespace_query(client: httpx.Client) -> None:
    response = _post(client, "/v1/rules/search", {"query": " \t\n "})
    message = response.json()["message"]

    assert response.status_code == 422
    assert message.startswith("query:")
    assert "whitespace" in message
    assert "(got ' \\t\\n ')" in message


def test_query_over_max_chars(client: httpx.Client, bundled_service: RuleService) -> None:
    limit = bundled_service.settings.max_query_chars
    response = _post(client, "/v1/rules/search", {"query": "x" * (limit + 1)})
    message = response.json()["message"]

    assert response.status_code == 422
    assert message.startswith("query:")
    assert f"{limit + 1} characters" in message
    assert f"the limit is {limit} (ASCL_MAX_QUERY_CHARS)" in message
    assert "(got 'xxx" in message


def test_query_at_max_chars(client: httpx.Client, bundled_service: RuleService) -> None:
    limit = bundled_service.settings.max_query_chars

    assert _post(client, "/v1/rules/search", {"query": "x" * limit}).status_code == 200


def test_query_with_nul(client: httpx.Client) -> None:
    response = _post(client, "/v1/rules/search", {"query": "kill\x00process"})

    assert response.status_code == 422
    assert "NUL" in response.json()["message"]


def test_query_lone_surrogate(client: httpx.Client) -> None:
    response = _raw(client, "/v1/rules/search", b'{"query": "kill a process \\ud800"}')
    message = response.json()["message"]

    assert response.status_code == 422
    assert message.startswith("query:")
    assert "not valid Unicode" in message


def test_batch_lone_surrogate(client: httpx.Client) -> None:
    response = _raw(client, "/v1/rules/batch_search", b'{"queries": ["kill a process", "\\udfff"]}')

    assert response.status_code == 422
    assert response.json()["message"].startswith("queries.1:")


def test_top_k_zero(client: httpx.Client) -> None:
    response = _post(client, "/v1/rules/search", {"query": QUERY, "top_k": 0})
    message = response.json()["message"]

    assert response.status_code == 422
    assert message.startswith("top_k:")
    assert "greater than or equal to 1" in message
    assert "(got 0)" in message


def test_top_k_over_max(client: httpx.Client, bundled_service: RuleService) -> None:
    limit = bundled_service.settings.max_top_k
    response = _post(client, "/v1/rules/search", {"query": QUERY, "top_k": limit + 1})
    message = response.json()["message"]

    assert response.status_code == 422
    assert message.startswith("top_k:")
    assert f"between 1 and {limit} (ASCL_MAX_TOP_K)" in message
    assert f"(got {limit + 1})" in message


def test_top_k_at_max(client: httpx.Client, bundled_service: RuleService) -> None:
    limit = bundled_service.settings.max_top_k

    assert len(_post(client, "/v1/rules/search", {"query": QUERY, "top_k": limit}).json()["results"]) == limit


def test_top_k_huge_integer(client: httpx.Client) -> None:
    response = _post(client, "/v1/rules/search", {"query": QUERY, "top_k": 10**30})

    assert response.status_code == 422
    assert response.json()["message"].startswith("top_k:")


def test_batch_over_max_queries(client: httpx.Client, bundled_service: RuleService) -> None:
    limit = bundled_service.settings.max_batch_queries
    response = _post(client, "/v1/rules/batch_search", {"queries": [QUERY] * (limit + 1)})
    message = response.json()["message"]

    assert response.status_code == 422
    assert message.startswith("queries:")
    assert f"at most {limit} queries per request (ASCL_MAX_BATCH_QUERIES)" in message
    assert f"<{limit + 1} queries>" in message


def test_batch_empty_list(client: httpx.Client) -> None:
    response = _post(client, "/v1/rules/batch_search", {"queries": []})

    assert response.status_code == 422
    assert response.json()["message"].startswith("queries:")


def test_batch_one_empty_query(client: httpx.Client) -> None:
    response = _post(client, "/v1/rules/batch_search", {"queries": [QUERY, "  "]})

    assert response.status_code == 422
    assert response.json()["message"].startswith("queries.1:")


def test_unknown_category(client: httpx.Client) -> None:
    response = _post(client, "/v1/rules/search", {"query": QUERY, "categories": ["self_harm", "S99"]})
    message = response.json()["message"]

    assert response.status_code == 422
    assert message.startswith("categories.1:")
    assert "(got 'S99')" in message
    assert "S1..S14" in message


def test_unknown_ruleset(client: httpx.Client) -> None:
    response = _post(client, "/v1/rules/search", {"query": QUERY, "ruleset": "nope"})
    message = response.json()["message"]

    assert response.status_code == 422
    assert message.startswith("ruleset:")
    assert "(got 'nope')" in message
    assert "['default']" in message


def test_unknown_retriever(client: httpx.Client) -> None:
    response = _post(client, "/v1/rules/search", {"query": QUERY, "retriever": "magic"})
    message = response.json()["message"]

    assert response.status_code == 422
    assert message.startswith("retriever:")
    assert "'magic'" in message


@pytest.mark.parametrize(("body", "field"), [
    ({"query": 42}, "query"),
    ({"query": ["kill a process"]}, "query"),
    ({"query": None}, "query"),
    ({"query": QUERY, "top_k": "five"}, "top_k"),
    ({"query": QUERY, "top_k": 2.5}, "top_k"),
    ({"query": QUERY, "categories": "S1"}, "categories"),
    ({"query": QUERY, "categories": [1]}, "categories.0"),
    ({"query": QUERY, "min_score": "high"}, "min_score"),
    ({"query": QUERY, "ruleset": 7}, "ruleset"),
])
def test_wrong_type(client: httpx.Client, body: dict, field: str) -> None:
    response = _post(client, "/v1/rules/search", body)

    assert response.status_code == 422
    assert response.json()["message"].startswith(f"{field}:")


def test_missing_query(client: httpx.Client) -> None:
    response = _post(client, "/v1/rules/search", {"top_k": 3})

    assert response.status_code == 422
    assert response.json()["message"] == "query: field required"


def test_extra_field(client: httpx.Client) -> None:
    response = _post(client, "/v1/rules/search", {"query": QUERY, "topk": 3})
    message = response.json()["message"]

    assert response.status_code == 422
    assert message.startswith("topk:")
    assert "Extra inputs are not permitted" in message


def test_detail_lists_locations(client: httpx.Client) -> None:
    response = _post(client, "/v1/rules/search", {"query": 1, "top_k": 0})

    assert sorted(entry["loc"] for entry in response.json()["detail"]) == [["body", "query"], ["body", "top_k"]]


@pytest.mark.parametrize("content", [b'{"query": "kill a process",', b"{query: 1}", b"not json", b""])
def test_malformed_json_body(client: httpx.Client, content: bytes) -> None:
    response = _raw(client, "/v1/rules/search", content)

    assert response.status_code in {400, 422}
    assert response.status_code == 400 or content == b""
    assert "message" in response.json()


def test_malformed_json_names_problem(client: httpx.Client) -> None:
    response = _raw(client, "/v1/rules/search", b'{"query": "kill a process",')

    assert response.status_code == 400
    assert response.json()["message"].startswith("request body is not valid JSON")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_min_score(client: httpx.Client, literal: str) -> None:
    response = _raw(client, "/v1/rules/search", f'{{"query": "{QUERY}", "min_score": {literal}}}'.encode())
    message = response.json()["message"]

    assert response.status_code == 422
    assert message.startswith("min_score:")
    assert "finite" in message


@pytest.mark.parametrize("body", [[], "kill a process", None, 3])
def test_body_not_object(client: httpx.Client, body: object) -> None:
    response = _post(client, "/v1/rules/search", body)

    assert response.status_code == 422
    assert "message" in response.json()


# /retrieve keeps the Search-R1 field names in its messages.


def test_retrieve_topk_zero(client: httpx.Client) -> None:
    response = _post(client, "/retrieve", {"queries": [QUERY], "topk": 0})

    assert response.status_code == 422
    assert response.json()["message"].startswith("topk:")


def test_retrieve_topk_over_max(client: httpx.Client, bundled_service: RuleService) -> None:
    limit = bundled_service.settings.max_top_k
    response = _post(client, "/retrieve", {"queries": [QUERY], "topk": limit + 1})
    message = response.json()["message"]

    assert response.status_code == 422
    assert message.startswith("topk:")
    assert f"between 1 and {limit}" in message


def test_retrieve_empty_query(client: httpx.Client) -> None:
    response = _post(client, "/retrieve", {"queries": [QUERY, ""]})

    assert response.status_code == 422
    assert response.json()["message"].startswith("queries.1:")


def test_retrieve_missing_queries(client: httpx.Client) -> None:
    response = _post(client, "/retrieve", {"topk": 3})

    assert response.status_code == 422
    assert response.json()["message"] == "queries: field required"


# Query parameters of the listing routes.


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": 0}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"offset": -1}, "offset"),
])
def test_list_rules_bad_paging(client: httpx.Client, params: dict, field: str) -> None:
    response = client.get("/v1/rules", params=params)

    assert response.status_code == 422
    assert response.json()["message"].startswith(f"{field}:")


def test_list_rules_limit_over_page_size(client: httpx.Client, bundled_service: RuleService) -> None:
    limit = bundled_service.settings.max_page_size
    response = client.get("/v1/rules", params={"limit": limit + 1})
    message = response.json()["message"]

    assert response.status_code == 422
    assert message.startswith("limit:")
    assert f"at most {limit} (ASCL_MAX_PAGE_SIZE)" in message


def test_list_rules_unknown_category(client: httpx.Client) -> None:
    response = client.get("/v1/rules", params={"category": "S99"})
    message = response.json()["message"]

    assert response.status_code == 422
    assert message.startswith("category.0:")
    assert "(got 'S99')" in message


def test_list_rules_unknown_ruleset(client: httpx.Client) -> None:
    response = client.get("/v1/rules", params={"ruleset": "nope"})

    assert response.status_code == 422
    assert response.json()["message"].startswith("ruleset:")


def test_read_rule_unknown_ruleset(client: httpx.Client) -> None:
    response = client.get("/v1/rules/help.violent_idioms", params={"ruleset": "nope"})

    assert response.status_code == 422
    assert response.json()["message"].startswith("ruleset:")


def test_unknown_route_404(client: httpx.Client) -> None:
    response = client.get("/v2/everything")

    assert response.status_code == 404
    assert "message" in response.json()


def test_wrong_method_405(client: httpx.Client) -> None:
    assert client.put("/retrieve", json={"queries": [QUERY]}).status_code == 405


# Odd bodies that a fuzzer would send: never a 500.


@pytest.mark.parametrize(("path", "content"), [
    ("/v1/rules/search", b"[" * 100_000),
    ("/v1/rules/search", b"\xff\xfe\x00{"),
    ("/v1/rules/search", b'{"query": "\\ud800"}'),
    ("/v1/rules/search", b'{"query": "a", "top_k": 1e400}'),
    ("/v1/rules/search", b'{"query": "a", "categories": [' + b'"S1",' * 100 + b'"S2"]}'),
    ("/v1/rules/search", b'{"query": "a", "query": "b"}'),
    ("/v1/rules/batch_search", b'{"queries": "one query"}'),
    ("/retrieve", b'{"queries": [null]}'),
    ("/retrieve", b'{"queries": ["a"], "return_scores": "maybe"}'),
    ("/v1/tools/call", b'{"function": {"name": "search_safety_rules", "arguments": {"query": "a"}}}'),
    ("/v1/tools/call", b'{"function": {"name": "search_safety_rules", "arguments": "\\"just a string\\""}}'),
    ("/v1/tools/call", b'{"function": {"name": "search_safety_rules", "arguments": "' + b"[" * 5000 + b'"}}'),
])
def test_odd_body_never_500(client: httpx.Client, path: str, content: bytes) -> None:
    response = _raw(client, path, content)

    assert response.status_code < 500
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("top_k", ["3", 2.0, True])
def test_top_k_not_coerced(client: httpx.Client, top_k: object) -> None:
    response = client.post("/v1/rules/search", json={"query": "knives", "top_k": top_k})

    assert response.status_code == 422
    assert "top_k" in response.json()["message"]


@pytest.mark.parametrize("route", ["search", "batch_search"])
def test_get_on_post_route(client: httpx.Client, route: str) -> None:
    response = client.get(f"/v1/rules/{route}")

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_query_param_error_location(client: httpx.Client) -> None:
    response = client.get("/v1/rules", params={"ruleset": "nope"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "ruleset"]
