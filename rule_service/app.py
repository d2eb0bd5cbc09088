"""The FastAPI application factory: the outermost layer of the rule service."""

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rule_service.admin import admin_router, install_sighup, remove_sighup
from rule_service.body_limit import BodyLimitMiddleware
from rule_service.errors import install_error_handlers
from rule_service.batcher import EncoderWorker
from rule_service.metrics import CacheCollector, Metrics
from rule_service.observe import RequestObserver
from rule_service.reload import Reloader
from rule_service.routes import get_service
from rule_service.routes import router as api_router
from rule_service.service import RuleService
from rule_service.settings import Settings

logger = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="The value of ASCL_API_KEY.")


def package_version() -> str:
    try:
        return metadata.version("ascl")
    except metadata.PackageNotFoundError:
        return "0+unknown"


async def require_api_key(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> None:
    """Reject the request unless it carries the configured API key as a bearer token."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    supplied = credentials.credentials if credentials else ""
    # compare_digest takes time independent of where the strings differ.
    if not hmac.compare_digest(supplied.encode(), expected.get_secret_value().encode()):
        logger.info("request %s rejected: missing or wrong API key", getattr(request.state, "request_id", "-"))
        raise HTTPException(
            status_code=401,
            detail="missing or invalid API key; send it as 'Authorization: Bearer <ASCL_API_KEY>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


def create_app(settings: Settings, service: RuleService | None = None, *, handle_sighup: bool = False) -> FastAPI:
    """Build the HTTP app; load the rule service at start-up unless one is given.

    With `handle_sighup`, SIGHUP reloads the corpus and index. Signal handlers
    can only be installed from the main thread, so only `ascl serve` sets it.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.service is None:
            app.state.service = await asyncio.to_thread(RuleService.load, settings)
        worker = _start_encoder_worker(app)
        _publish_gauges(app)
        sighup = handle_sighup and install_sighup(app.state.reloader)
        logger.info("rule service ready on %s:%s", settings.host, settings.port)
        try:
            yield
        finally:
            if sighup:
                remove_sighup()
            await app.state.reloader.close()
            await asyncio.to_thread(worker.close)
            logger.info("rule service stopped")

    app = FastAPI(
        title="ASCL rule service",
        version=package_version(),
        description="Search a safety rule base and serve it as a tool for language models.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.metrics = Metrics()
    app.state.started_at = time.time()
    app.state.reloader = Reloader(settings, current=lambda: app.state.service, install=lambda new: _install(app, new))
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestObserver, metrics=app.state.metrics)
    if settings.cors_origins:
        # Added last, so it is the outermost layer and error responses carry CORS headers too.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )

    app.include_router(_health_router())
    protected = APIRouter(dependencies=[Depends(require_api_key)])
    protected.include_router(api_router)
    protected.include_router(_info_router())
    app.include_router(protected)
    if settings.admin_token is not None:
        # Without a token the admin routes do not exist, so they return 404 like any unknown path.
        app.include_router(admin_router())
    return app


def _install(app: FastAPI, service: RuleService) -> None:
    """Swap in a reloaded service: one reference assignment, read once by each request."""
    app.state.service = service
    _publish_gauges(app)


def _start_encoder_worker(app: FastAPI) -> EncoderWorker:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics

    def observe(size: int, seconds: float) -> None:
        metrics.batch_size.observe(size)
        metrics.batch_seconds.observe(seconds)

    worker = EncoderWorker(
        app.state.service.encoder,
        max_batch=settings.encode_max_batch,
        max_wait_ms=settings.encode_max_wait_ms,
        cache_size=settings.query_cache_size,
        queue_size=settings.encode_queue_size,
        on_batch=observe,
    )
    metrics.registry.register(CacheCollector(worker.stats, lambda: app.state.service.result_cache.stats))
    app.state.encoder_worker = worker
    return worker


def _publish_gauges(app: FastAPI) -> None:
    metrics: Metrics = app.state.metrics
    metrics.rules.clear()
    for name, loaded in app.state.service.rulesets.items():
        metrics.rules.labels(name).set(len(loaded.ruleset.rules))
    metrics.ready.set(1)


def _health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Report liveness: 200 whenever the process runs."""
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(request: Request, response: Response) -> dict[str, Any]:
        """Readiness: 200 once every ruleset's index is loaded, 503 before."""
        service: RuleService | None = request.app.state.service
        if service is None:
            response.status_code = 503
            return {"status": "loading"}
        versions = {name: loaded.index_version for name, loaded in service.rulesets.items()}
        return {"status": "ready", "index_versions": versions}

    return router


def _last_reload(request: Request) -> dict[str, Any] | None:
    last = request.app.state.reloader.last
    return None if last is None else last.model_dump(mode="json")


def _info_router() -> APIRouter:
    router = APIRouter(tags=["info"])

    @router.get("/v1/info")
    async def info(request: Request) -> dict[str, Any]:
        """Describe the running service: version, encoder, rulesets, index manifests and limits."""
        service = await get_service(request)
        settings = service.settings
        return {
            "version": package_version(),
            "encoder": {"name": service.encoder.spec.name, "dimension": service.encoder.dimension},
            "retriever": settings.retriever,
            "index_type": settings.index_type,
            "default_ruleset": settings.default_ruleset,
            "rulesets": {
                name: {k: v for k, v in loaded.dense.manifest.__dict__.items()} | {"index_version": loaded.index_version}
                for name, loaded in service.rulesets.items()
            },
            "limits": {
                "max_query_chars": settings.max_query_chars,
                "default_top_k": settings.default_top_k,
                "max_top_k": settings.max_top_k,
                "max_batch_queries": settings.max_batch_queries,
                "max_page_size": settings.max_page_size,
                "tool_char_budget": settings.tool_char_budget,
            },
            "auth_required": request.app.state.settings.api_key is not None,
            "admin_routes": request.app.state.settings.admin_token is not None,
            "cors_origins": request.app.state.settings.cors_origins,
            "reload": _last_reload(request),
            "uptime_seconds": round(time.time() - request.app.state.started_at, 1),
        }

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Prometheus metrics in the text exposition format."""
        return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
