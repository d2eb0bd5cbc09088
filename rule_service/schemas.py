"""Request and response bodies of the HTTP API.

Static bounds that apply to every deployment live here. The limits a
deployment can change (query length, `top_k`, batch size) are settings,
checked in `rule_service.routes` so that the error message names the setting.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from rule_service.rules import Rule
from rule_service.settings import Retriever
from rule_service.tool import ToolRuleText

Score = Annotated[float, Field(allow_inf_nan=False)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchFilters(_Request):
    # Strict: "3", 2.0 and true are rejected instead of being converted.
    top_k: Annotated[StrictInt | None, Field(ge=1, description="Number of rules to return; the server default when omitted.")] = None
    categories: Annotated[
        list[str] | None,
        Field(max_length=64, description="Keep rules with any of these category keys, Llama Guard codes or AILuminate ids."),
    ] = None
    ruleset: Annotated[str | None, Field(max_length=64, description="Ruleset to search; the server default when omitted.")] = None
    min_score: Annotated[Score | None, Field(description="Drop hits scoring below this value.")] = None
    retriever: Annotated[Retriever | None, Field(description="Ranking method; the server default when omitted.")] = None


class SearchRequest(SearchFilters):
    """One query and its filters."""

    query: Annotated[str, Field(description="What the request is about, in plain words.")]


class BatchSearchRequest(SearchFilters):
    """Several queries that share one set of filters, encoded in one call."""

    queries: Annotated[list[str], Field(min_length=1, description="Queries to run.")]


class SearchHit(BaseModel):
    """One ranked rule."""

    id: str
    score: float
    rule: Rule


class _SearchMeta(BaseModel):
    ruleset: str
    retriever: Retriever
    index_version: str
    encoder: str


class SearchResponse(_SearchMeta):
    query: str
    results: list[SearchHit]


class QueryResults(BaseModel):
    query: str
    results: list[SearchHit]


class BatchSearchResponse(_SearchMeta):
    results: list[QueryResults]


class RetrieveRequest(BaseModel):
    """Search-R1 retriever request; unknown fields are ignored, as the original server does."""

    model_config = ConfigDict(extra="ignore")

    queries: Annotated[list[str], Field(min_length=1)]
    topk: Annotated[StrictInt | None, Field(ge=1)] = None
    return_scores: bool = False


class RetrieveDocument(BaseModel):
    id: str
    contents: str


class RetrieveScoredDocument(BaseModel):
    document: RetrieveDocument
    score: float


class RetrieveResponse(BaseModel):
    """`result[i]` lists the documents for query i, with scores when they were requested."""

    result: list[list[RetrieveScoredDocument]] | list[list[RetrieveDocument]]


class RulePage(BaseModel):
    data: list[Rule]
    count: int = Field(description="Number of rules matching the filter, across all pages.")
    offset: int
    limit: int


class RulesetInfo(BaseModel):
    name: str
    rule_count: int
    index_version: str
    corpus_sha256: str
    default: bool
    categories: dict[str, int] = Field(description="Number of rules per category key.")


class RulesetList(BaseModel):
    data: list[RulesetInfo]


class ToolCallFunction(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    arguments: Annotated[str, Field(description="The arguments as a JSON string, as the model wrote them.")]


class ToolCallRequest(BaseModel):
    """One tool call in OpenAI Chat Completions form."""

    model_config = ConfigDict(extra="ignore")

    id: Annotated[str | None, Field(max_length=256)] = None
    type: str = "function"
    function: ToolCallFunction


class ToolCallResponse(BaseModel):
    tool_call_id: str | None
    name: str
    content: str = Field(description="Text to append as the `role: tool` message.")
    is_error: bool
    rules: list[ToolRuleText]
    index_version: str | None = None


class ErrorResponse(BaseModel):
    message: str
    detail: Any = None


class ReloadError(BaseModel):
    """One reason why a reload failed; rule problems also name the file, line, rule id and field."""

    message: str
    file: str | None = None
    line: int | None = None
    rule_id: str | None = None
    field: str | None = None


class ReloadStatus(BaseModel):
    """State of one index reload, started by `POST /v1/admin/reload` or by SIGHUP."""

    id: str
    trigger: Literal["http", "signal"]
    status: Literal["running", "succeeded", "failed"]
    started_at: str = Field(description="UTC time the reload started, ISO 8601.")
    finished_at: str | None = Field(None, description="UTC time the reload ended, ISO 8601; null while running.")
    duration_seconds: float | None = None
    previous_index_versions: dict[str, str] = Field(description="Index version per ruleset served when the reload started.")
    index_versions: dict[str, str] | None = Field(
        None, description="Index version per ruleset served after a successful reload; null otherwise."
    )
    errors: list[ReloadError] = Field(default_factory=list, description="Why the reload failed; at most the first 100.")
    error_count: int = Field(0, description="Number of errors, including those left out of `errors`.")
