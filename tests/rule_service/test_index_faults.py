"""Damaged index folders that test_index.py does not cover: every rejection names the file at fault.

Covered there: truncated, corrupt or missing index files, ids swapped without
updating the manifest, foreign encoders and dimensions. Covered here: an
unreadable manifest when rebuilding is off (as a library call and as
`ascl serve`), and an ids.json whose manifest was rewritten to match it, so
that its checksum passes while its ids belong to another corpus or order.
"""

import hashlib
import json
from pathlib import Path

import pytest

from rule_service.encoder import Encoder
from rule_service.index import IDS_FILE, MANIFEST_FILE, StaleIndexError
from rule_service.service import RuleService, index_directory
from rule_service.settings import Retriever, Settings, StaleIndexPolicy
from tests.conftest import free_port, run_ascl
from tests.rule_service.support import query_for, small_rules, write_yaml_rules

EXIT_STALE_INDEX = 4


@pytest.fixture
def settings(tmp_path: Path, encoder: Encoder) -> Settings:
    """Settings of a small corpus whose index was just built."""
    write_yaml_rules(tmp_path / "corpus" / "rules.yaml", small_rules(4))
    built = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index")
    RuleService.load(built, encoder=encoder)
    return built


def _failing(settings: Settings) -> Settings:
    return settings.model_copy(update={"on_stale_index": StaleIndexPolicy.fail})


def _folder(settings: Settings) -> Path:
    return index_directory(settings, settings.default_ruleset)


def _vouch_for_ids(settings: Settings, ids: list[str]) -> None:
    """Write `ids` to ids.json and update the manifest's checksum to match, as a careless hand edit would."""
    folder = _folder(settings)
    data = json.dumps(ids).encode("utf-8")
    (folder / IDS_FILE).write_bytes(data)
    manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    manifest["ids_sha256"] = hashlib.sha256(data).hexdigest()
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")


def _ids(settings: Settings) -> list[str]:
    return json.loads((_folder(settings) / IDS_FILE).read_text(encoding="utf-8"))


def test_truncated_manifest_rejected(settings: Settings, encoder: Encoder) -> None:
    manifest = _folder(settings) / MANIFEST_FILE
    manifest.write_bytes(manifest.read_bytes()[:40])

    with pytest.raises(StaleIndexError) as caught:
        RuleService.load(_failing(settings), encoder=encoder)

    assert f"manifest {manifest} is unreadable" in str(caught.value)


def test_serve_truncated_manifest_exit_4(settings: Settings, tmp_path: Path) -> None:
    manifest = _folder(settings) / MANIFEST_FILE
    manifest.write_bytes(manifest.read_bytes()[:40])

    result = run_ascl(["serve", "--port", str(free_port()), "--corpus-dir", str(settings.corpus_dir),
                       "--index-dir", str(settings.index_dir), "--on-stale-index", "fail"], tmp_path)

    assert result.returncode == EXIT_STALE_INDEX
    assert str(manifest) in result.stderr
    assert "unreadable" in result.stderr


def test_reordered_ids_rejected(settings: Settings, encoder: Encoder) -> None:
    _vouch_for_ids(settings, list(reversed(_ids(settings))))

    with pytest.raises(StaleIndexError) as caught:
        RuleService.load(_failing(settings), encoder=encoder)

    assert str(_folder(settings) / IDS_FILE) in str(caught.value)


def test_foreign_ids_rejected(settings: Settings, encoder: Encoder) -> None:
    _vouch_for_ids(settings, [f"other.rule_{number}" for number in range(4)])

    with pytest.raises(StaleIndexError, match=IDS_FILE):
        RuleService.load(_failing(settings), encoder=encoder)


def test_foreign_ids_rebuilt(settings: Settings, encoder: Encoder) -> None:
    expected = _ids(settings)
    _vouch_for_ids(settings, [f"other.rule_{number}" for number in range(4)])

    service = RuleService.load(settings, encoder=encoder)

    assert _ids(settings) == expected
    for rule_id in expected:
        assert service.search([query_for(rule_id)], 1, retriever=Retriever.dense)[0][0].rule.id == rule_id
