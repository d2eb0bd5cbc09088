"""One encoder thread that batches concurrent requests and caches query embeddings.

torch runs this workload fastest from one long-lived thread, and one call
with 32 queries costs far less than 32 calls with one. Requests therefore
put their uncached queries on a bounded queue; the worker thread takes
whatever is waiting (up to `max_batch` texts) and encodes it in one call. A
lone request is encoded at once: the worker waits for company only when
`max_wait_ms` is above zero.
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
    """Cache key of a query: whitespace collapsed, case kept (not every model is uncased)."""
    return " ".join(text.split())


class EncoderWorker:
    """Thread-owned encoder with cross-request batching and an LRU cache of query vectors."""

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
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="ascl-encoder", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the worker after the jobs already queued."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    async def encode(self, texts: list[str]) -> np.ndarray:
        """Embed `texts` (shape (len(texts), dimension), float32) without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(texts))

    def encode_sync(self, texts: list[str]) -> np.ndarray:
        return self.submit(texts).result()

    def submit(self, texts: list[str]) -> Future:
        """Return a future of the embeddings; cached texts are not sent to the encoder again."""
        keys = [normalise_query(text) for text in texts]
        vectors: dict[str, np.ndarray] = {}
        with self._cache_lock:
            for key in keys:
                cached = self._cache.get(key)
                if cached is not None:
                    self._cache.move_to_end(key)
                    vectors[key] = cached
            self.stats.cache_hits += len(keys) - sum(1 for k in keys if k not in vectors)
            missing = list(dict.fromkeys(k for k in keys if k not in vectors))
            self.stats.cache_misses += len(missing)

        result: Future = Future()
        if not missing:
            result.set_result(np.stack([vectors[k] for k in keys]) if keys else self.encoder.encode([]))
            return result

        job = _Job(missing)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise EncoderOverloadedError(f"encoder queue is full ({self._queue.maxsize} jobs waiting)") from None

        def assemble(done: Future) -> None:
            error = done.exception()
            if error is not None:
                result.set_exception(error)
                return
            vectors.update(zip(missing, done.result(), strict=True))
            result.set_result(np.stack([vectors[k] for k in keys]))

        job.future.add_done_callback(assemble)
        return result

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = self._gather(first)
            if jobs is None:
                return
            self._encode_jobs(jobs)

    def _gather(self, first: _Job) -> list[_Job] | None:
        """Collect queued jobs until `max_batch` texts, waiting at most `max_wait` for more."""
        jobs = [first]
        count = len(first.texts)
        deadline = time.monotonic() + self.max_wait
        while count < self.max_batch:
            timeout = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._encode_jobs(jobs)
                return None
            jobs.append(job)
            count += len(job.texts)
        return jobs

    def _encode_jobs(self, jobs: list[_Job]) -> None:
        unique = list(dict.fromkeys(text for job in jobs for text in job.texts))
        started = time.perf_counter()
        try:
            vectors = self.encoder.encode(unique)
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
        with self._cache_lock:
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
