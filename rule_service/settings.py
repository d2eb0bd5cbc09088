"""Service settings, read from `ASCL_*` environment variables.

Settings are an object passed to `create_app`, never a module global, so
tests and embedders can run several services with different settings in one
process.
"""

import json
import os
import re
from enum import Enum
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A browser origin: scheme, host and optional port, with no path or trailing slash.
ORIGIN_PATTERN = re.compile(r"^https?://[^/\s?#]+$")


def bundled_corpus_root() -> Path:
    """Return the folder that holds the bundled `rulesets/` and `eval/` data.

    A source checkout or editable install reads `corpus/` at the repository
    root; a wheel carries the same files as `rule_service/_corpus`.
    """
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir.parent / "corpus", package_dir / "_corpus"):
        if (candidate / "rulesets").is_dir():
            return candidate
    raise FileNotFoundError(
        f"the bundled corpus was not found next to {package_dir}; set ASCL_CORPUS_DIR to a rule folder"
    )


def default_index_dir() -> Path:
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "ascl" / "index"


class Retriever(str, Enum):
    """Ranking method: embeddings, lexical BM25, or both fused by reciprocal rank."""

    dense = "dense"
    bm25 = "bm25"
    hybrid = "hybrid"


class EncoderBackend(str, Enum):
    """Inference engine of the encoder: torch, or ONNX Runtime on a model exported locally."""

    torch = "torch"
    onnx = "onnx"
    onnx_int8 = "onnx_int8"


class IndexType(str, Enum):
    """FAISS index structure; `flat` is exact search."""

    flat = "flat"
    hnsw = "hnsw"
    ivf = "ivf"


class StaleIndexPolicy(str, Enum):
    """Action taken when a saved index does not match the corpus or the encoder."""

    rebuild = "rebuild"
    fail = "fail"


class Settings(BaseSettings):
    """Every setting of the rule service; each maps to `ASCL_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="ASCL_", env_ignore_empty=True, extra="ignore")

    host: str = Field("127.0.0.1", description="Address to bind.")
    port: Annotated[int, Field(ge=0, le=65535, description="TCP port to bind; 0 picks a free one.")] = 8000
    corpus_dir: Path = Field(
        default_factory=lambda: bundled_corpus_root() / "rulesets",
        description="Folder of rule files, or of one sub-folder per ruleset.",
    )
    index_dir: Path = Field(
        default_factory=default_index_dir, description="Folder where indexes and manifests are stored."
    )
    default_ruleset: str = Field("default", description="Ruleset searched when a request names none.")
    encoder: str = Field(
        "",
        description="sentence-transformers model: a local folder or a name; empty selects the bundled all-MiniLM-L6-v2.",
    )
    device: str = Field("cpu", description="torch device for the encoder.")
    encoder_backend: EncoderBackend = Field(
        EncoderBackend.onnx,
        description="onnx / onnx_int8: ONNX Runtime on a copy exported (and quantised) on first use; or torch.",
    )
    retriever: Retriever = Field(Retriever.hybrid, description="Default ranking method.")
    index_type: IndexType = Field(IndexType.flat, description="FAISS index structure.")
    on_stale_index: StaleIndexPolicy = Field(
        StaleIndexPolicy.rebuild, description="Rebuild or refuse to start when the saved index is stale."
    )
    api_key: SecretStr | None = Field(None, description="Bearer token required on every route except health checks.")
    admin_token: SecretStr | None = Field(
        None, description="Bearer token of the /v1/admin routes (index reload); unset disables those routes."
    )
    cors_origins: Annotated[
        list[str],
        NoDecode,
        Field(description="Browser origins allowed by CORS, as a JSON list or comma-separated; empty sends no CORS headers."),
    ] = []
    max_header_bytes: Annotated[
        int, Field(ge=1024, le=1024 * 1024, description="Largest request line plus headers accepted, in bytes; larger gets 431.")
    ] = 16 * 1024
    request_read_timeout_s: Annotated[
        float, Field(gt=0, le=3600, description="Seconds a client may take to send a whole request, headers and body.")
    ] = 30.0
    keepalive_timeout_s: Annotated[
        float, Field(gt=0, le=3600, description="Seconds an idle keep-alive connection stays open after a response.")
    ] = 5.0
    max_connections: Annotated[
        int, Field(ge=1, description="Most open connections (or requests in progress) served; a request past it gets 503.")
    ] = 1000
    default_top_k: Annotated[int, Field(ge=1)] = 5
    max_top_k: Annotated[int, Field(ge=1, le=1000)] = 50
    max_query_chars: Annotated[int, Field(ge=1)] = 2000
    max_batch_queries: Annotated[int, Field(ge=1)] = 128
    max_page_size: Annotated[int, Field(ge=1)] = 200
    min_score: float | None = Field(None, description="Default score floor; hits below it are dropped.")
    tool_char_budget: Annotated[int, Field(ge=200)] = 4000
    encode_batch_size: Annotated[int, Field(ge=1, description="Encoder batch size when indexing.")] = 64
    encode_max_batch: Annotated[int, Field(ge=1, description="Most queries the encoder thread embeds in one call.")] = 64
    encode_max_wait_ms: Annotated[
        float, Field(ge=0, le=1000, description="How long the encoder thread waits for more queries before encoding; 0 encodes at once.")
    ] = 0.0
    encode_queue_size: Annotated[int, Field(ge=1, description="Most requests waiting for the encoder; beyond it the server returns 503.")] = 1024
    query_cache_size: Annotated[int, Field(ge=0, description="Query embeddings kept in the LRU cache; 0 disables it.")] = 10_000
    max_body_bytes: Annotated[
        int, Field(ge=1, description="Largest request body accepted, in bytes; larger bodies get 413.")
    ] = 1024 * 1024
    log_level: str = Field("INFO", description="Python logging level name.")

    @field_validator("default_ruleset")
    @classmethod
    def _ruleset_name(cls, value: str) -> str:
        from rule_service.rules import RULESET_NAME_PATTERN

        if not RULESET_NAME_PATTERN.match(value):
            raise ValueError(f"invalid ruleset name {value!r}; use lowercase letters, digits, '_' or '-'")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a valid JSON list: {exc.msg} at column {exc.colno}") from None
        return [part.strip() for part in text.split(",") if part.strip()]

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not ORIGIN_PATTERN.match(origin):
                raise ValueError(
                    f"invalid CORS origin {origin!r}; use scheme://host[:port] without a path, or * for any origin"
                )
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"invalid log level {value!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value
