"""The FAISS index of rule embeddings and the manifest that guards it.

An index folder holds `index.faiss`, `ids.json` (row number to rule id) and
`manifest.json`. The manifest records what the index was built from; an index
whose manifest does not match the current corpus, encoder or index type, or
whose files do not match the checksums in the manifest, is never used.
"""

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np

from rule_service.encoder import Encoder, library_versions
from rule_service.rules import RuleSet
from rule_service.settings import IndexType

logger = logging.getLogger(__name__)

# Searches run on the event loop thread, while torch runs its own OpenMP pool
# on the encoder thread. A second pool's idle workers spin and take CPU from
# the encoder, and one thread searches a few thousand rules in well under a
# millisecond, so FAISS gets no pool of its own.
faiss.omp_set_num_threads(1)

MANIFEST_VERSION = 1
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.json"
MANIFEST_FILE = "manifest.json"
HNSW_NEIGHBOURS = 32
# IVF needs enough training vectors per list; small rule sets get few lists.
IVF_MIN_VECTORS_PER_LIST = 39


class StaleIndexError(RuntimeError):
    """A saved index does not match the corpus, the encoder or its own files."""


@dataclass(frozen=True)
class Manifest:
    """Inputs an index was built from, compared field by field before loading."""

    manifest_version: int
    ruleset: str
    encoder: str
    encoder_fingerprint: str
    dimension: int
    index_type: str
    corpus_sha256: str
    rule_count: int
    index_sha256: str
    ids_sha256: str
    built_at: str
    build_seconds: float
    library_versions: dict[str, str]

    @property
    def index_version(self) -> str:
        """Short id of this index's content: corpus, encoder and index type."""
        key = f"{self.corpus_sha256}:{self.encoder_fingerprint}:{self.index_type}"
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    def mismatches(self, expected: "ExpectedIndex") -> list[str]:
        """Describe every way this manifest differs from what the service needs."""
        checks = [
            ("manifest_version", self.manifest_version, MANIFEST_VERSION),
            ("encoder_fingerprint", self.encoder_fingerprint, expected.encoder_fingerprint),
            ("dimension", self.dimension, expected.dimension),
            ("index_type", self.index_type, expected.index_type),
            ("corpus_sha256", self.corpus_sha256, expected.corpus_sha256),
            ("rule_count", self.rule_count, expected.rule_count),
        ]
        return [f"{name} is {found!r}, expected {wanted!r}" for name, found, wanted in checks if found != wanted]


@dataclass(frozen=True)
class ExpectedIndex:
    """The manifest fields the current corpus and encoder require."""

    encoder_fingerprint: str
    dimension: int
    index_type: str
    corpus_sha256: str
    rule_count: int
    rule_ids: tuple[str, ...] = ()  # row order of a fresh build; empty skips the check


class DenseIndex:
    """Inner-product search over L2-normalised rule embeddings, addressed by rule id."""

    def __init__(self, index: faiss.Index, rule_ids: list[str], manifest: Manifest) -> None:
        if index.ntotal != len(rule_ids):
            raise StaleIndexError(f"index has {index.ntotal} vectors but {len(rule_ids)} rule ids")
        self.index = index
        self.rule_ids = rule_ids
        self.manifest = manifest
        self._rows = {rule_id: row for row, rule_id in enumerate(rule_ids)}
        # HNSW and IVF search only part of the index, so hybrid fusion can meet
        # rules the dense search did not return; their exact cosine comes from
        # these stored vectors. IVF needs a direct map before it can reconstruct.
        if isinstance(index, faiss.IndexIVF):
            index.make_direct_map()
        self._vectors = index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, index.d), np.float32)

    def search(self, vectors: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Return, for each query vector, up to `k` (rule id, cosine similarity) pairs, best first."""
        k = min(k, len(self.rule_ids))
        if k == 0 or len(vectors) == 0:
            return [[] for _ in range(len(vectors))]
        scores, rows = self.index.search(vectors, k)
        results = []
        for score_row, id_row in zip(scores, rows, strict=True):
            results.append([(self.rule_ids[r], float(s)) for s, r in zip(score_row, id_row, strict=True) if r >= 0])
        return results


    def similarity(self, vector: np.ndarray, rule_ids: list[str]) -> list[float]:
        """Return the exact cosine similarity of one query vector, shape (1, dimension), to each rule."""
        rows = [self._rows[rule_id] for rule_id in rule_ids]
        return [float(score) for score in self._vectors[rows] @ vector[0]]


def expected_for(ruleset: RuleSet, encoder: Encoder, index_type: IndexType) -> ExpectedIndex:
    return ExpectedIndex(
        encoder_fingerprint=encoder.spec.fingerprint,
        dimension=encoder.dimension,
        index_type=index_type.value,
        corpus_sha256=ruleset.sha256,
        rule_count=len(ruleset.rules),
        rule_ids=tuple(rule.id for rule in ruleset.rules),
    )


def build_index(ruleset: RuleSet, encoder: Encoder, index_type: IndexType) -> tuple[faiss.Index, list[str], np.ndarray, float]:
    """Embed every rule and build a FAISS index; return it with the row-to-id list, vectors and seconds taken."""
    started = time.perf_counter()
    rule_ids = [rule.id for rule in ruleset.rules]
    vectors = encoder.encode([rule.embedding_text() for rule in ruleset.rules])
    index = _make_index(index_type, encoder.dimension, len(rule_ids))
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    return index, rule_ids, vectors, time.perf_counter() - started


def _make_index(index_type: IndexType, dimension: int, count: int) -> faiss.Index:
    if index_type is IndexType.hnsw:
        index = faiss.IndexHNSWFlat(dimension, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
        return index
    if index_type is IndexType.ivf:
        lists = max(1, min(int(np.sqrt(count)), count // IVF_MIN_VECTORS_PER_LIST))
        quantizer = faiss.IndexFlatIP(dimension)
        index = faiss.IndexIVFFlat(quantizer, dimension, lists, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = max(1, lists // 4)
        return index
    return faiss.IndexFlatIP(dimension)


def save_index(directory: Path, ruleset: RuleSet, encoder: Encoder, index_type: IndexType,
               index: faiss.Index, rule_ids: list[str], build_seconds: float) -> Manifest:
    """Write the index files atomically (manifest last) and return the manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    index_bytes = faiss.serialize_index(index).tobytes()
    ids_bytes = json.dumps(rule_ids).encode("utf-8")
    manifest = Manifest(
        manifest_version=MANIFEST_VERSION,
        ruleset=ruleset.name,
        encoder=encoder.spec.name,
        encoder_fingerprint=encoder.spec.fingerprint,
        dimension=encoder.dimension,
        index_type=index_type.value,
        corpus_sha256=ruleset.sha256,
        rule_count=len(rule_ids),
        index_sha256=hashlib.sha256(index_bytes).hexdigest(),
        ids_sha256=hashlib.sha256(ids_bytes).hexdigest(),
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        build_seconds=round(build_seconds, 3),
        library_versions=library_versions(),
    )
    # The manifest goes last: a crash before it leaves the old manifest, whose
    # checksums then reject the new files, so a half-written index is never used.
    write_atomic(directory / INDEX_FILE, index_bytes)
    write_atomic(directory / IDS_FILE, ids_bytes)
    write_atomic(directory / MANIFEST_FILE, json.dumps(manifest.__dict__, indent=2).encode("utf-8"))
    return manifest


def load_index(directory: Path, expected: ExpectedIndex) -> DenseIndex:
    """Load a saved index, raising `StaleIndexError` naming the file when anything does not match."""
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no index manifest at {manifest_path}")
    try:
        manifest = Manifest(**json.loads(manifest_path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise StaleIndexError(f"manifest {manifest_path} is unreadable: {exc}") from exc

    mismatches = manifest.mismatches(expected)
    if mismatches:
        raise StaleIndexError(f"manifest {manifest_path} does not match: " + "; ".join(mismatches))

    index_bytes = _read_checked(directory / INDEX_FILE, manifest.index_sha256)
    ids_bytes = _read_checked(directory / IDS_FILE, manifest.ids_sha256)
    try:
        index = faiss.deserialize_index(np.frombuffer(index_bytes, dtype=np.uint8))
        rule_ids = json.loads(ids_bytes)
    except (RuntimeError, ValueError) as exc:
        raise StaleIndexError(f"index files in {directory} cannot be read: {exc}") from exc
    if index.d != expected.dimension:
        raise StaleIndexError(f"{directory / INDEX_FILE} has dimension {index.d}, expected {expected.dimension}")
    # The checksums only show that the files match their manifest. A manifest
    # rewritten by hand can list the checksum of ids from another corpus or order.
    if expected.rule_ids and rule_ids != list(expected.rule_ids):
        raise StaleIndexError(f"{directory / IDS_FILE} does not list the corpus's rule ids in build order")
    return DenseIndex(index, rule_ids, manifest)


def _read_checked(path: Path, sha256: str) -> bytes:
    if not path.is_file():
        raise StaleIndexError(f"index file {path} is missing")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise StaleIndexError(f"index file {path} does not match the checksum in its manifest (truncated or corrupt)")
    return data


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename, so readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
