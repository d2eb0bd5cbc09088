"""The FAISS index and its manifest: build, reuse, rebuild and rejection, on small corpora."""

import hashlib
import json
from datetime import datetime
from pathlib import Path

import pytest

from rule_service.encoder import Encoder
from rule_service.index import INDEX_FILE, MANIFEST_FILE, StaleIndexError, expected_for, load_index
from rule_service.rules import RuleSetInvalidError, load_ruleset
from rule_service.service import RuleService, index_directory
from rule_service.settings import IndexType, Retriever, Settings, StaleIndexPolicy
from tests.rule_service.support import query_for, small_rules, write_yaml_rules

RULE_COUNT = 4


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    write_yaml_rules(tmp_path / "corpus" / "rules.yaml", small_rules(RULE_COUNT))
    return Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index")


@pytest.fixture
def built(settings: Settings, encoder: Encoder) -> RuleService:
    """A service whose index was just built in `settings.index_dir`."""
    return RuleService.load(settings, encoder=encoder)


def _index_dir(settings: Settings) -> Path:
    return index_directory(settings, settings.default_ruleset)


def _manifest(settings: Settings) -> dict:
    return json.loads((_index_dir(settings) / MANIFEST_FILE).read_text(encoding="utf-8"))


def _change_corpus(settings: Settings) -> None:
    rules = small_rules(RULE_COUNT)
    rules[0]["text"] += " Paint large wounds only when a disease is present."
    write_yaml_rules(settings.corpus_dir / "rules.yaml", rules)


def _with_policy(settings: Settings, policy: StaleIndexPolicy) -> Settings:
    return settings.model_copy(update={"on_stale_index": policy})


# Building.


def test_index_built_when_missing(built: RuleService, settings: Settings) -> None:
    files = sorted(path.name for path in _index_dir(settings).iterdir())

    assert files == ["ids.json", "index.faiss", "manifest.json"]


def test_manifest_encoder(built: RuleService, settings: Settings, encoder: Encoder) -> None:
    manifest = _manifest(settings)

    assert manifest["encoder"] == encoder.spec.name
    assert manifest["encoder_fingerprint"] == encoder.spec.fingerprint


def test_manifest_dimension(built: RuleService, settings: Settings) -> None:
    assert _manifest(settings)["dimension"] == 384


def test_manifest_corpus_sha256(built: RuleService, settings: Settings) -> None:
    ruleset = load_ruleset(settings.corpus_dir, settings.default_ruleset)

    assert _manifest(settings)["corpus_sha256"] == ruleset.sha256


def test_manifest_rule_count(built: RuleService, settings: Settings) -> None:
    assert _manifest(settings)["rule_count"] == RULE_COUNT


def test_manifest_library_versions(built: RuleService, settings: Settings) -> None:
    versions = _manifest(settings)["library_versions"]

    assert set(versions) >= {"faiss-cpu", "sentence-transformers", "torch", "numpy"}
    assert "not installed" not in versions.values()


def test_manifest_built_at_is_iso(built: RuleService, settings: Settings) -> None:
    built_at = datetime.fromisoformat(_manifest(settings)["built_at"])

    assert built_at.tzinfo is not None


def test_manifest_index_checksum(built: RuleService, settings: Settings) -> None:
    data = (_index_dir(settings) / INDEX_FILE).read_bytes()

    assert _manifest(settings)["index_sha256"] == hashlib.sha256(data).hexdigest()


def test_index_ids_are_rule_ids(built: RuleService, settings: Settings) -> None:
    stored = json.loads((_index_dir(settings) / "ids.json").read_text(encoding="utf-8"))

    assert stored == [rule["id"] for rule in small_rules(RULE_COUNT)]


@pytest.mark.parametrize("rule_id", [rule["id"] for rule in small_rules(RULE_COUNT)])
def test_dense_search_returns_rule_id(built: RuleService, rule_id: str) -> None:
    hits = built.search([query_for(rule_id)], 1, retriever=Retriever.dense)

    assert hits[0][0].rule.id == rule_id


def test_dense_index_search_pairs(built: RuleService, encoder: Encoder) -> None:
    dense = built.get(None).dense
    vectors = encoder.encode([query_for("music.guitar_tuning")])

    pairs = dense.search(vectors, 10)[0]

    assert [rule_id for rule_id, _ in pairs][0] == "music.guitar_tuning"
    assert len(pairs) == RULE_COUNT
    assert all(-1.0001 <= score <= 1.0001 for _, score in pairs)


@pytest.mark.parametrize("index_type", list(IndexType))
def test_index_type_finds_best_rule(tmp_path: Path, encoder: Encoder, index_type: IndexType) -> None:
    write_yaml_rules(tmp_path / "corpus" / "rules.yaml", small_rules(6))
    settings = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index", index_type=index_type)

    service = RuleService.load(settings, encoder=encoder)
    hits = service.search([query_for("astronomy.telescopes")], 1, retriever=Retriever.dense)

    assert hits[0][0].rule.id == "astronomy.telescopes"
    assert _manifest(settings)["index_type"] == index_type.value


# Reuse and rebuild.


def test_index_reused_when_manifest_matches(built: RuleService, settings: Settings, encoder: Encoder) -> None:
    index_file = _index_dir(settings) / INDEX_FILE
    before_mtime = index_file.stat().st_mtime_ns
    before_manifest = _manifest(settings)

    again = RuleService.load(settings, encoder=encoder)

    assert index_file.stat().st_mtime_ns == before_mtime
    assert _manifest(settings) == before_manifest
    assert again.get(None).index_version == built.get(None).index_version


def test_index_rebuilt_when_corpus_changes(built: RuleService, settings: Settings, encoder: Encoder) -> None:
    old_version = built.get(None).index_version
    _change_corpus(settings)

    again = RuleService.load(settings, encoder=encoder)

    assert again.get(None).index_version != old_version
    assert _manifest(settings)["corpus_sha256"] == again.get(None).ruleset.sha256


def test_index_rebuilt_when_rule_added(built: RuleService, settings: Settings, encoder: Encoder) -> None:
    write_yaml_rules(settings.corpus_dir / "more.yaml", small_rules(1, start=RULE_COUNT))

    again = RuleService.load(settings, encoder=encoder)

    assert _manifest(settings)["rule_count"] == RULE_COUNT + 1
    assert len(again.get(None).dense.rule_ids) == RULE_COUNT + 1


def test_index_rebuilt_when_index_type_changes(built: RuleService, settings: Settings, encoder: Encoder) -> None:
    hnsw = settings.model_copy(update={"index_type": IndexType.hnsw})

    RuleService.load(hnsw, encoder=encoder)

    assert _manifest(settings)["index_type"] == "hnsw"


def test_stale_index_fail_policy_raises(built: RuleService, settings: Settings, encoder: Encoder) -> None:
    _change_corpus(settings)

    with pytest.raises(StaleIndexError, match="corpus_sha256"):
        RuleService.load(_with_policy(settings, StaleIndexPolicy.fail), encoder=encoder)


def test_stale_index_fail_policy_keeps_files(built: RuleService, settings: Settings, encoder: Encoder) -> None:
    before = _manifest(settings)
    _change_corpus(settings)

    with pytest.raises(StaleIndexError):
        RuleService.load(_with_policy(settings, StaleIndexPolicy.fail), encoder=encoder)

    assert _manifest(settings) == before


# Damaged or foreign index files.


def test_truncated_index_rejected(built: RuleService, settings: Settings, encoder: Encoder) -> None:
    index_file = _index_dir(settings) / INDEX_FILE
    index_file.write_bytes(index_file.read_bytes()[: index_file.stat().st_size // 2])

    with pytest.raises(StaleIndexError, match="checksum"):
        RuleService.load(_with_policy(settings, StaleIndexPolicy.fail), encoder=encoder)


def test_truncated_index_rebuilt(built: RuleService, settings: Settings, encoder: Encoder) -> None:
    index_file = _index_dir(settings) / INDEX_FILE
    index_file.write_bytes(index_file.read_bytes()[:100])

    again = RuleService.load(settings, encoder=encoder)

    assert hashlib.sha256(index_file.read_bytes()).hexdigest() == _manifest(settings)["index_sha256"]
    assert again.search([query_for("garden.pruning")], 1)[0][0].rule.id == "garden.pruning"


def test_corrupted_index_rejected(built: RuleService, settings: Settings, encoder: Encoder) -> None:
    index_file = _index_dir(settings) / INDEX_FILE
    data = bytearray(index_file.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(16)
    index_file.write_bytes(bytes(data))

    with pytest.raises(StaleIndexError, match="checksum"):
        RuleService.load(_with_policy(settings, StaleIndexPolicy.fail), encoder=encoder)


def test_swapped_ids_rejected(built: RuleService, settings: Settings, encoder: Encoder) -> None:
    ids_file = _index_dir(settings) / "ids.json"
    ids = json.loads(ids_file.read_text(encoding="utf-8"))
    ids_file.write_text(json.dumps(list(reversed(ids))), encoding="utf-8")

    with pytest.raises(StaleIndexError, match="ids.json"):
        RuleService.load(_with_policy(settings, StaleIndexPolicy.fail), encoder=encoder)


def test_missing_index_file_rejected(built: RuleService, settings: Settings, encoder: Encoder) -> None:
    (_index_dir(settings) / INDEX_FILE).unlink()

    with pytest.raises(StaleIndexError, match="missing"):
        RuleService.load(_with_policy(settings, StaleIndexPolicy.fail), encoder=encoder)


def test_unreadable_manifest_rebuilt(built: RuleService, settings: Settings, encoder: Encoder) -> None:
    (_index_dir(settings) / MANIFEST_FILE).write_text("{not json", encoding="utf-8")

    RuleService.load(settings, encoder=encoder)

    assert _manifest(settings)["rule_count"] == RULE_COUNT


def test_foreign_encoder_manifest_rejected(built: RuleService, settings: Settings, encoder: Encoder) -> None:
    manifest_file = _index_dir(settings) / MANIFEST_FILE
    manifest = _manifest(settings)
    manifest["encoder_fingerprint"] = "0" * 64
    manifest_file.write_text(json.dumps(manifest), encoding="utf-8")
    ruleset = load_ruleset(settings.corpus_dir, settings.default_ruleset)

    with pytest.raises(StaleIndexError, match="encoder_fingerprint"):
        load_index(_index_dir(settings), expected_for(ruleset, encoder, settings.index_type))


def test_foreign_encoder_manifest_rebuilt(built: RuleService, settings: Settings, encoder: Encoder) -> None:
    manifest_file = _index_dir(settings) / MANIFEST_FILE
    manifest = _manifest(settings)
    manifest["encoder_fingerprint"] = "0" * 64
    manifest_file.write_text(json.dumps(manifest), encoding="utf-8")

    RuleService.load(settings, encoder=encoder)

    assert _manifest(settings)["encoder_fingerprint"] == encoder.spec.fingerprint


def test_foreign_dimension_manifest_rejected(built: RuleService, settings: Settings, encoder: Encoder) -> None:
    manifest_file = _index_dir(settings) / MANIFEST_FILE
    manifest = _manifest(settings)
    manifest["dimension"] = 768
    manifest_file.write_text(json.dumps(manifest), encoding="utf-8")

    with pytest.raises(StaleIndexError, match="dimension"):
        RuleService.load(_with_policy(settings, StaleIndexPolicy.fail), encoder=encoder)


# Invalid corpora never load.


def test_invalid_corpus_loads_nothing(tmp_path: Path, encoder: Encoder) -> None:
    rules = small_rules(3)
    rules[1]["categories"] = ["S42"]
    write_yaml_rules(tmp_path / "corpus" / "rules.yaml", rules)
    settings = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index")

    with pytest.raises(RuleSetInvalidError):
        RuleService.load(settings, encoder=encoder)

    assert not (tmp_path / "index").exists()


# IVF probes only some of its lists, so hybrid fusion meets rules that BM25 found and the dense
# search did not return; their scores must still be exact cosines.
@pytest.mark.parametrize("query", ["how do I kill a zombie process in linux", "I want to end my life"])
def test_ivf_hybrid_search_bundled(tmp_path: Path, encoder: Encoder, bundled_corpus_dir: Path, query: str) -> None:
    # The bundled corpus is large enough for IVF to split it into several lists.
    settings = Settings(corpus_dir=bundled_corpus_dir, index_dir=tmp_path / "index", index_type=IndexType.ivf)
    service = RuleService.load(settings, encoder=encoder)
    query_vector = encoder.encode([query])[0]

    hits = service.search([query], 10, retriever=Retriever.hybrid)[0]

    assert len(hits) == 10
    for hit in hits:
        rule_vector = encoder.encode([hit.rule.embedding_text()])[0]
        assert hit.score == pytest.approx(float(rule_vector @ query_vector), abs=1e-4)
