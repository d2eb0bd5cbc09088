"""Rebuild the rule service from the corpus while the old one keeps serving, then swap it in.

A reload validates the corpus and loads or builds every index in a worker
thread, reusing the running service's encoder: its embedding calls go to the
encoder's own torch thread, queued between the batches of live queries. The
new service is installed with one reference assignment on the event loop.
Each request reads that reference once when it starts, so every response
comes from one index, and its `index_version` names that index. A reload that fails
(invalid rules, missing corpus, rejected index) leaves the old service
serving and records the errors.
"""

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal, cast

import numpy as np

from rule_service.encoder import Encoder
from rule_service.index import StaleIndexError
from rule_service.rules import RuleSetInvalidError
from rule_service.schemas import ReloadError, ReloadStatus
from rule_service.service import RuleService
from rule_service.settings import Settings

logger = logging.getLogger(__name__)

Trigger = Literal["http", "signal"]
# Past this many, errors are counted in `error_count` but not listed.
MAX_REPORTED_ERRORS = 100
# Finished reloads kept for `GET /v1/admin/reload/{id}`.
HISTORY_SIZE = 20
# Rules embedded per encoder job during a reload, so a live query waits for at most one such job.
RELOAD_CHUNK_SIZE = 32


class ReloadInProgressError(RuntimeError):
    """Raised while another reload runs. `running` is the status of that reload."""

    def __init__(self, running: ReloadStatus) -> None:
        self.running = running
        super().__init__(f"reload {running.id} is already running (started {running.started_at})")


class _InterleavingEncoder:
    """The running service's encoder, seen by an index build that runs while queries are served.

    `Encoder.encode` called from another thread queues one job on the
    encoder thread. One job for a whole corpus would delay every uncached
    query until it ends. With small chunks, the query batches queued
    meanwhile run between them.
    """

    def __init__(self, encoder: Encoder, chunk_size: int = RELOAD_CHUNK_SIZE) -> None:
        self.spec = encoder.spec
        self.dimension = encoder.dimension
        self.batch_size = encoder.batch_size
        self._encoder = encoder
        self._chunk_size = chunk_size

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        chunks = [self._encoder.encode(texts[start : start + self._chunk_size])
                  for start in range(0, len(texts), self._chunk_size)]
        return np.concatenate(chunks)


def load_beside(settings: Settings, encoder: Encoder) -> RuleService:
    """Load a new service from the corpus with `encoder`, embedding in chunks so that live queries interleave."""
    staged = RuleService.load(settings, cast(Encoder, _InterleavingEncoder(encoder)))
    return RuleService(settings, encoder, staged.rulesets)


class Reloader:
    """Runs at most one reload at a time and keeps the status of recent ones.

    `start` and the status reads must run on the event loop thread, which
    also runs the swap, so a status of `succeeded` and the new service become
    visible together.
    """

    def __init__(
        self,
        settings: Settings,
        current: Callable[[], RuleService | None],
        install: Callable[[RuleService], None],
    ) -> None:
        self._settings = settings
        self._current = current
        self._install = install
        self._history: OrderedDict[str, ReloadStatus] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._running: ReloadStatus | None = None

    @property
    def last(self) -> ReloadStatus | None:
        """The most recently started reload, running or finished."""
        return next(reversed(self._history.values()), None)

    def get(self, reload_id: str) -> ReloadStatus | None:
        return self._history.get(reload_id)

    def start(self, trigger: Trigger, request_id: str | None = None) -> ReloadStatus:
        """Start a reload in the background and return its status.

        Raises `ReloadInProgressError` while another reload runs.
        """
        if self._running is not None:
            raise ReloadInProgressError(self._running)
        service = self._current()
        if service is None:
            raise RuntimeError("the rule service is still loading; reload after it is ready")
        record = ReloadStatus(
            id=uuid.uuid4().hex[:16],
            trigger=trigger,
            status="running",
            started_at=_now(),
            previous_index_versions=_versions(service),
        )
        self._remember(record)
        self._running = record
        logger.info(
            "reload %s started (trigger %s%s): corpus %s",
            record.id, trigger, f", request {request_id}" if request_id else "", self._settings.corpus_dir,
        )
        self._task = asyncio.get_running_loop().create_task(self._run(record, service), name=f"reload-{record.id}")
        return record

    async def close(self) -> None:
        """Stop waiting for a running reload; its thread finishes, but the result is not installed."""
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    async def _run(self, record: ReloadStatus, service: RuleService) -> None:
        started = time.perf_counter()
        try:
            new_service = await asyncio.to_thread(load_beside, self._settings, service.encoder)
        except asyncio.CancelledError:
            self._finish(record, started, errors=[ReloadError(message="the server stopped before the reload finished")])
            logger.warning("reload %s abandoned: the server is stopping", record.id)
            raise
        except Exception as exc:  # noqa: BLE001  (every failure is recorded, and the old service keeps serving)
            errors = describe_failure(exc)
            self._finish(record, started, errors=errors)
            _log_failure(record, exc, errors)
            return
        self._install(new_service)
        record.index_versions = _versions(new_service)
        self._finish(record, started, errors=[])
        logger.info(
            "reload %s succeeded in %.2f s: index versions %s (were %s)",
            record.id, record.duration_seconds, record.index_versions, record.previous_index_versions,
        )

    def _finish(self, record: ReloadStatus, started: float, errors: list[ReloadError]) -> None:
        record.status = "failed" if errors else "succeeded"
        record.finished_at = _now()
        record.duration_seconds = round(time.perf_counter() - started, 3)
        record.errors = errors[:MAX_REPORTED_ERRORS]
        record.error_count = len(errors)
        self._running = None

    def _remember(self, record: ReloadStatus) -> None:
        self._history[record.id] = record
        while len(self._history) > HISTORY_SIZE:
            self._history.popitem(last=False)


def describe_failure(exc: Exception) -> list[ReloadError]:
    """Turn a load failure into the errors reported to the operator."""
    if isinstance(exc, RuleSetInvalidError):
        return [
            ReloadError(message=str(problem), file=problem.file, line=problem.line,
                        rule_id=problem.rule_id, field=problem.field)
            for problem in exc.problems
        ]
    if isinstance(exc, StaleIndexError):
        return [ReloadError(message=f"saved index rejected and rebuilding is off (ASCL_ON_STALE_INDEX=fail): {exc}")]
    if isinstance(exc, (FileNotFoundError, ValueError)):
        return [ReloadError(message=f"cannot load the corpus: {exc}")]
    return [ReloadError(message=f"{type(exc).__name__}: {exc}")]


def _log_failure(record: ReloadStatus, exc: Exception, errors: list[ReloadError]) -> None:
    listed = "; ".join(error.message for error in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    expected = (RuleSetInvalidError, StaleIndexError, FileNotFoundError, ValueError)
    logger.log(
        logging.WARNING if isinstance(exc, expected) else logging.ERROR,
        "reload %s failed after %.2f s with %d error(s), still serving index versions %s: %s%s",
        record.id, record.duration_seconds, len(errors), record.previous_index_versions, listed, more,
        exc_info=not isinstance(exc, expected),
    )


def _versions(service: RuleService) -> dict[str, str]:
    return {name: loaded.index_version for name, loaded in sorted(service.rulesets.items())}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
