"""The batching encoder thread: cross-request batches, the query cache and failure isolation."""

import threading
from concurrent.futures import Future

import numpy as np
import pytest

from rule_service.batcher import EncoderOverloadedError, EncoderWorker, normalise_query
from rule_service.encoder import Encoder

# A lone surrogate is valid JSON but fails the tokenizer, so it makes the real encoder raise.
BAD_TEXT = "\ud800"


class GatedEncoder:
    """The real encoder behind a gate, so a test decides when the worker thread may proceed.

    Only the timing is controlled; every vector still comes from the real model.
    """

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.dimension = encoder.dimension
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[list[str]] = []

    def run(self, function, *args):  # type: ignore[no-untyped-def]
        return self.encoder.run(function, *args)

    def encode_on_thread(self, texts: list[str]) -> np.ndarray:
        self.entered.set()
        self.gate.wait(timeout=30)
        self.calls.append(list(texts))
        return self.encoder.encode_on_thread(texts)


@pytest.fixture
def gated(encoder: Encoder) -> GatedEncoder:
    return GatedEncoder(encoder)


def test_vectors_match_direct_encode(encoder: Encoder) -> None:
    worker = EncoderWorker(encoder)
    try:
        vectors = worker.encode_sync(["how to make a bomb", "bake bread"])
    finally:
        worker.close()

    expected = encoder.encode(["how to make a bomb", "bake bread"])
    assert vectors.shape == (2, encoder.dimension)
    assert np.allclose(vectors, expected, atol=1e-5)


def test_repeated_query_encoded_once(encoder: Encoder) -> None:
    worker = EncoderWorker(encoder)
    try:
        vectors = worker.encode_sync(["same query", "same  query ", "other"])
    finally:
        worker.close()

    assert worker.stats.encoded_texts == 2
    assert np.allclose(vectors[0], vectors[1])


def test_cache_hit_skips_encoder(encoder: Encoder) -> None:
    worker = EncoderWorker(encoder)
    try:
        worker.encode_sync(["a question about knives"])
        worker.encode_sync(["a question about knives"])
    finally:
        worker.close()

    assert worker.stats.cache_hits == 1
    assert worker.stats.cache_misses == 1
    assert worker.stats.batches == 1


def test_cache_evicts_least_recent(encoder: Encoder) -> None:
    worker = EncoderWorker(encoder, cache_size=2)
    try:
        for text in ("one", "two", "three", "one"):
            worker.encode_sync([text])
    finally:
        worker.close()

    # "one" was evicted by "three", so it is encoded twice.
    assert worker.stats.encoded_texts == 4


def test_concurrent_jobs_share_batch(gated: GatedEncoder) -> None:
    worker = EncoderWorker(gated)  # type: ignore[arg-type]
    try:
        first = worker.submit(["first request"])
        assert gated.entered.wait(timeout=30)
        waiting = [worker.submit([f"queued request {n}"]) for n in range(5)]
        gated.gate.set()
        first.result(timeout=30)
        for future in waiting:
            future.result(timeout=30)
    finally:
        worker.close()

    assert gated.calls[0] == ["first request"]
    assert sorted(gated.calls[1]) == sorted(f"queued request {n}" for n in range(5))


def test_bad_text_fails_only_its_job(gated: GatedEncoder) -> None:
    worker = EncoderWorker(gated)  # type: ignore[arg-type]
    try:
        blocker = worker.submit(["blocking request"])
        assert gated.entered.wait(timeout=30)
        good = worker.submit(["a good request"])
        bad = worker.submit([BAD_TEXT])
        gated.gate.set()
        blocker.result(timeout=30)
        good_vectors = good.result(timeout=30)
        with pytest.raises(TypeError):
            bad.result(timeout=30)
    finally:
        worker.close()

    assert good_vectors.shape == (1, gated.dimension)


def test_full_queue_raises_overloaded(gated: GatedEncoder) -> None:
    worker = EncoderWorker(gated, queue_size=1)  # type: ignore[arg-type]
    futures: list[Future] = []
    try:
        futures.append(worker.submit(["taken by the worker"]))
        assert gated.entered.wait(timeout=30)
        futures.append(worker.submit(["fills the queue"]))
        with pytest.raises(EncoderOverloadedError, match="queue is full"):
            worker.submit(["one too many"])
    finally:
        gated.gate.set()
        for future in futures:
            future.result(timeout=30)
        worker.close()


def test_normalise_query_collapses_whitespace() -> None:
    assert normalise_query("  How   to\tcook \n") == "How to cook"
