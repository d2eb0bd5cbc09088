"""Cross-request batching of query embeddings, with an LRU cache.

One encoder call with 32 queries costs far less than 32 calls with one.
Requests therefore put their uncached queries on a bounded queue. A drain
task on the encoder's torch thread takes whatever is waiting (up to
`max_batch` texts) and embeds it in one call. A lone request is embedded at once: the
drain waits for company only when `max_wait_ms` is above zero. Running the
drain on the torch thread itself avoids a second thread hop per batch.
"""

import asyncio
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from rule_service.encoder import Encoder

logger = logging.getLogger(__name__)


class EncoderOverloadedError(RuntimeError):
    """The encoder queue is full; the caller should retry later."""


@dataclass
class _Job:
    texts: list[str]
    future: Future = field(default_factory=Future)


@dataclass
class BatcherStats:
    """Counters read by the metrics endpoint."""

    cache_hits: int = 0
    cache_misses: int = 0
    batches: int = 0
    encoded_texts: int = 0


def normalise_query(text: str) -> str:
    """Build the cache key of a query: whitespace collapsed, case kept (not every model is uncased)."""
    return " ".join(text.split())


class EncoderWorker:
    """Batches concurrent embedding requests onto the encoder thread and caches query vectors.

    The cache is per worker, and a worker serves one encoder, so the key
    needs only the normalised text.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        cache_size: int = 10_000,
        queue_size: int = 1024,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.encoder = encoder
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.cache_size = cache_size
        self.stats = BatcherStats()
        self._on_batch = on_batch
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=queue_size)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._drain_scheduled = False
        self._closed = False

    def close(self) -> None:
        """Reject new work and wait until the jobs already queued are done."""
        with self._lock:
            self._closed = True
        self.encoder.run(lambda: None).result()

    async def encode(self, texts: list[str]) -> np.ndarray:
        """Embed `texts` (shape (len(texts), dimension), float32) without blocking the event loop."""
        future = self.submit(texts)
        if future.done():
            # All cached: wrap_future would still wake the loop through its self-pipe, a poll per request.
            return future.result()
        return await asyncio.wrap_future(future)

    def encode_sync(self, texts: list[str]) -> np.ndarray:
        return self.submit(texts).result()

    def submit(self, texts: list[str]) -> Future:
        """Return a future of the embeddings; cached texts are not sent to the encoder again."""
        keys = [normalise_query(text) for text in texts]
        vectors: dict[str, np.ndarray] = {}
        with self._lock:
            for key in keys:
                cached = self._cache.get(key)
                if cached is not None:
                    self._cache.move_to_end(key)
                    vectors[key] = cached
            self.stats.cache_hits += sum(1 for key in keys if key in vectors)
            missing = list(dict.fromkeys(key for key in keys if key not in vectors))
            self.stats.cache_misses += len(missing)

        result: Future = Future()
        if not missing:
            result.set_result(np.stack([vectors[k] for k in keys]) if keys else np.zeros((0, self.encoder.dimension), np.float32))
            return result

        job = _Job(missing)
        self._enqueue(job)

        def assemble(done: Future) -> None:
            error = done.exception()
            if error is not None:
                result.set_exception(error)
                return
            vectors.update(zip(missing, done.result(), strict=True))
            result.set_result(np.stack([vectors[k] for k in keys]))

        job.future.add_done_callback(assemble)
        return result

    def _enqueue(self, job: _Job) -> None:
        # Queueing and scheduling share the lock with the drain's "queue empty"
        # check, so a job can never be left in the queue with no drain to take it.
        with self._lock:
            if self._closed:
                raise EncoderOverloadedError("the encoder is shutting down")
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise EncoderOverloadedError(f"encoder queue is full ({self._queue.maxsize} jobs waiting)") from None
            if not self._drain_scheduled:
                self._drain_scheduled = True
                self.encoder.run(self._drain)

    def _drain(self) -> None:
        """Embed one batch of queued jobs on the encoder thread, then reschedule while work remains."""
        jobs = self._gather()
        if jobs:
            self._encode_jobs(jobs)
        with self._lock:
            if self._queue.empty():
                self._drain_scheduled = False
                return
        # Rescheduling (instead of looping) lets index builds queued on the
        # same thread take their turn between batches.
        self.encoder.run(self._drain)

    def _gather(self) -> list[_Job]:
        """Take queued jobs until `max_batch` texts, waiting at most `max_wait` for more."""
        jobs: list[_Job] = []
        count = 0
        deadline = time.monotonic() + self.max_wait
        while count < self.max_batch:
            timeout = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=timeout) if timeout > 0 and jobs else self._queue.get_nowait()
            except queue.Empty:
                break
            jobs.append(job)
            count += len(job.texts)
        return jobs

    def _encode_jobs(self, jobs: list[_Job]) -> None:
        unique = list(dict.fromkeys(text for job in jobs for text in job.texts))
        started = time.perf_counter()
        try:
            vectors = self.encoder.encode_on_thread(unique)
        except Exception as exc:  # every waiting request must receive the failure
            if len(jobs) > 1:
                # One bad text must not fail the requests that shared its batch.
                logger.warning("encoding a batch of %d jobs failed (%s); retrying each job alone", len(jobs), exc)
                for job in jobs:
                    self._encode_jobs([job])
                return
            logger.exception("encoding a job of %d texts failed", len(unique))
            jobs[0].future.set_exception(exc)
            return

        seconds = time.perf_counter() - started
        by_text = dict(zip(unique, vectors, strict=True))
        with self._lock:
            for text, vector in by_text.items():
                self._cache[text] = vector
                self._cache.move_to_end(text)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            self.stats.batches += 1
            self.stats.encoded_texts += len(unique)
        if self._on_batch is not None:
            self._on_batch(len(unique), seconds)
        for job in jobs:
            job.future.set_result(np.stack([by_text[text] for text in job.texts]))
