"""HTTP routes: search, the Search-R1 retriever, rule listing and the rule tool."""

from collections import Counter
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from rule_service.batcher import EncoderOverloadedError
from rule_service.limits import (
    InputError,
    check_batch,
    check_categories,
    check_filters,
    check_query,
    check_ruleset,
    check_top_k,
    finite,
    tool_error,
    tool_output,
    validate_tool_call,
)
from rule_service.rules import Rule
from rule_service.schemas import (
    BatchSearchRequest,
    BatchSearchResponse,
    ErrorResponse,
    QueryResults,
    RetrieveDocument,
    RetrieveRequest,
    RetrieveResponse,
    RetrieveScoredDocument,
    RulePage,
    RulesetInfo,
    RulesetList,
    SearchHit,
    SearchRequest,
    SearchResponse,
    ToolCallRequest,
    ToolCallResponse,
)
from rule_service.service import Hit, LoadedRuleset, RuleService, expand_categories
from rule_service.settings import Retriever
from rule_service.tool import TOOL_NAME, ToolArgumentError, mcp_tool, openai_tool, responses_tool

router = APIRouter()
# Errors of every route with a JSON body, raised before the body reaches the route.
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not valid JSON."},
    413: {"model": ErrorResponse, "description": "The body is larger than ASCL_MAX_BODY_BYTES."},
}
POST_ONLY_RULE_ROUTES = frozenset({"search", "batch_search"})


# Dependencies are `async def` so that FastAPI runs them on the event loop
# instead of handing each one to a worker thread.
async def get_service(request: Request) -> RuleService:
    """Return the service that handles this request.

    A reload replaces `app.state.service`, so a route reads it only here, once,
    and uses that object to the end. Every response therefore comes from one index.
    """
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise HTTPException(status_code=503, detail="the rule index is still loading; retry shortly",
                            headers={"Retry-After": "2"})
    return service


ServiceDep = Annotated[RuleService, Depends(get_service)]


async def run_search(request: Request, service: RuleService, queries: list[str], top_k: int, **kwargs: Any) -> list[list[Hit]]:
    """Return cached results, and embed and rank the other queries.

    Embedding runs on the batching encoder thread. Ranking (FAISS over
    thousands of vectors and BM25) takes well under a millisecond per query,
    so it runs on the event loop without a thread hop.
    """
    retriever = Retriever(kwargs.pop("retriever", None) or service.settings.retriever)
    metrics = request.app.state.metrics
    with metrics.search_seconds.time():
        cached = service.cached_results(queries, top_k, retriever=retriever, **kwargs)
        missing = list(dict.fromkeys(query for query, hits in zip(queries, cached, strict=True) if hits is None))
        if not missing:
            return cached  # type: ignore[return-value]

        vectors = None
        if retriever is not Retriever.bm25:
            try:
                vectors = await request.app.state.encoder_worker.encode(missing)
            except EncoderOverloadedError as exc:
                raise HTTPException(status_code=503, detail=f"server busy: {exc}; retry later",
                                    headers={"Retry-After": "1"}) from None
        found = dict(zip(missing, service.search(missing, top_k, retriever=retriever, vectors=vectors, **kwargs),
                         strict=True))
        return [hits if hits is not None else list(found[query]) for query, hits in zip(queries, cached, strict=True)]


def _hits(hits: list[Hit]) -> list[SearchHit]:
    return [SearchHit(id=hit.rule.id, score=finite(hit.score), rule=hit.rule) for hit in hits]


def _meta(service: RuleService, loaded: LoadedRuleset, retriever: Retriever | None) -> dict[str, Any]:
    return {
        "ruleset": loaded.name,
        "retriever": retriever or service.settings.retriever,
        "index_version": loaded.index_version,
        "encoder": service.encoder.spec.name,
    }


def _count_queries(request: Request, loaded: LoadedRuleset, retriever: Retriever, count: int) -> None:
    request.app.state.metrics.queries.labels(loaded.name, retriever.value).inc(count)


@router.post("/v1/rules/search", response_model=SearchResponse, responses=BODY_ERRORS, tags=["search"])
async def search_rules(body: SearchRequest, request: Request, service: ServiceDep) -> SearchResponse:
    """Rank the rules that apply to one query."""
    check_query(service.settings, "query", body.query)
    loaded, top_k = check_filters(service, body)
    retriever = body.retriever or service.settings.retriever
    results = await run_search(
        request, service, [body.query], top_k, ruleset=loaded.name,
        categories=body.categories, min_score=body.min_score, retriever=retriever,
    )
    _count_queries(request, loaded, retriever, 1)
    return SearchResponse(query=body.query, results=_hits(results[0]), **_meta(service, loaded, retriever))


@router.post("/v1/rules/batch_search", response_model=BatchSearchResponse, responses=BODY_ERRORS, tags=["search"])
async def batch_search_rules(body: BatchSearchRequest, request: Request, service: ServiceDep) -> BatchSearchResponse:
    """Rank rules for several queries in one request; all queries are encoded in one call."""
    check_batch(service.settings, "queries", body.queries)
    loaded, top_k = check_filters(service, body)
    retriever = body.retriever or service.settings.retriever
    results = await run_search(
        request, service, body.queries, top_k, ruleset=loaded.name,
        categories=body.categories, min_score=body.min_score, retriever=retriever,
    )
    _count_queries(request, loaded, retriever, len(body.queries))
    grouped = [QueryResults(query=q, results=_hits(hits)) for q, hits in zip(body.queries, results, strict=True)]
    return BatchSearchResponse(results=grouped, **_meta(service, loaded, retriever))


@router.post("/retrieve", response_model=RetrieveResponse, responses=BODY_ERRORS, tags=["search"])
async def retrieve(body: RetrieveRequest, request: Request, service: ServiceDep) -> RetrieveResponse:
    """Search-R1-compatible retrieval: `document.contents` is the rule title, a newline, then its text."""
    check_batch(service.settings, "queries", body.queries)
    top_k = check_top_k(service.settings, "topk", body.topk)
    loaded = service.get(None)
    retriever = service.settings.retriever
    results = await run_search(request, service, body.queries, top_k, retriever=retriever)
    _count_queries(request, loaded, retriever, len(body.queries))
    documents = [
        [(RetrieveDocument(id=hit.rule.id, contents=f"{hit.rule.title}\n{hit.rule.text}"), hit.score) for hit in hits]
        for hits in results
    ]
    if body.return_scores:
        scored = [[RetrieveScoredDocument(document=d, score=finite(s)) for d, s in row] for row in documents]
        return RetrieveResponse(result=scored)
    return RetrieveResponse(result=[[d for d, _ in row] for row in documents])


@router.get(
    "/v1/rules/{rule_id}",
    response_model=Rule,
    tags=["rules"],
    responses={
        404: {"model": ErrorResponse, "description": "No rule with this id in the ruleset."},
        405: {"model": ErrorResponse, "description": "The id is the name of a POST-only route."},
    },
)
async def read_rule(rule_id: str, service: ServiceDep, ruleset: Annotated[str | None, Query(max_length=64)] = None) -> Rule:
    """Return one rule by id."""
    if rule_id in POST_ONLY_RULE_ROUTES:
        # Rule ids always contain a dot, so these names can only be a GET sent to a POST route.
        raise HTTPException(status_code=405, detail=f"/v1/rules/{rule_id} accepts POST only", headers={"Allow": "POST"})
    loaded = check_ruleset(service, ruleset, location="query")
    rule = loaded.rules_by_id.get(rule_id)
    if rule is None:
        raise HTTPException(status_code=404, detail=f"rule {rule_id!r} not found in ruleset {loaded.name!r}")
    return rule


@router.get("/v1/rules", response_model=RulePage, tags=["rules"])
async def list_rules(
    service: ServiceDep,
    ruleset: Annotated[str | None, Query(max_length=64)] = None,
    category: Annotated[list[str] | None, Query(description="Category key or code; repeat to match any.")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1)] = 50,
) -> RulePage:
    """List rules in id order, optionally filtered by category, one page at a time."""
    if limit > service.settings.max_page_size:
        raise InputError("limit", limit, f"must be at most {service.settings.max_page_size} (ASCL_MAX_PAGE_SIZE)",
                         location="query")
    check_categories(category, field="category", location="query")
    loaded = check_ruleset(service, ruleset, location="query")
    rules = sorted(loaded.ruleset.rules, key=lambda r: r.id)
    if category:
        keys = expand_categories(category) | set(category)
        rules = [r for r in rules if keys.intersection(r.categories)]
    return RulePage(data=rules[offset : offset + limit], count=len(rules), offset=offset, limit=limit)


@router.get("/v1/rulesets", response_model=RulesetList, tags=["rules"])
async def list_rulesets(service: ServiceDep) -> RulesetList:
    """List the rulesets this server serves."""
    data = []
    for name, loaded in sorted(service.rulesets.items()):
        counts = Counter(rule.category for rule in loaded.ruleset.rules)
        data.append(RulesetInfo(
            name=name, rule_count=len(loaded.ruleset.rules), index_version=loaded.index_version,
            corpus_sha256=loaded.ruleset.sha256, default=name == service.settings.default_ruleset,
            categories=dict(sorted(counts.items())),
        ))
    return RulesetList(data=data)


@router.get("/v1/tools", tags=["tools"])
async def read_tools(service: ServiceDep, format: Literal["openai", "responses", "mcp"] = "openai") -> dict[str, Any]:
    """Return the rule tool definition in the requested format, as a one-element `tools` list."""
    render = {"openai": openai_tool, "responses": responses_tool, "mcp": mcp_tool}[format]
    return {"format": format, "tools": [render(service.settings.max_top_k)]}


@router.post("/v1/tools/call", response_model=ToolCallResponse, responses=BODY_ERRORS, tags=["tools"])
async def call_tool(body: ToolCallRequest, request: Request, service: ServiceDep) -> ToolCallResponse:
    """Run one tool call given in OpenAI form.

    An unknown tool name is a client error (422). Arguments the model wrote
    badly are not: they return 200 with `is_error` set and a message telling
    the model what to fix, which the caller passes back as the tool result.
    """
    if body.function.name != TOOL_NAME:
        raise InputError("function.name", body.function.name, f"unknown tool; this server provides {TOOL_NAME!r}")
    try:
        arguments, loaded, top_k = validate_tool_call(service, body.function.arguments)
    except ToolArgumentError as exc:
        output = tool_error(exc)
        return ToolCallResponse(tool_call_id=body.id, name=TOOL_NAME, **output.model_dump())

    results = await run_search(request, service, [arguments.query], top_k,
                               ruleset=loaded.name, categories=arguments.categories)
    _count_queries(request, loaded, service.settings.retriever, 1)
    output = tool_output(results[0], service.settings.tool_char_budget, loaded.index_version)
    return ToolCallResponse(tool_call_id=body.id, name=TOOL_NAME, **output.model_dump())
