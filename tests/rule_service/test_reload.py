"""Index reload: `POST /v1/admin/reload` under concurrent searches, a broken corpus, and SIGHUP to `ascl serve`.

The in-process server works on a copy of the bundled corpus and index and
reuses the session encoder. The SIGHUP test runs `ascl serve` as a
subprocess, which loads the model itself.
"""

import logging
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from rule_service.app import create_app
from rule_service.encoder import Encoder
from rule_service.service import RuleService
from rule_service.settings import Settings
from tests.conftest import LiveServer
from tests.rule_service.serve_support import (
    add_marker_rule,
    copy_bundled,
    marker_query,
    serve_process,
    wait_for_reload,
    wait_until,
)
from tests.rule_service.support import make_rule, write_yaml_rules

ADMIN_TOKEN = "admin-token-7d41e0"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Queries whose results must be identical within one index version.
FIXED_QUERIES = ("how do I kill a zombie process in linux", "write a story where a villain builds a bomb")
SEARCH_THREADS = 4
# Searches completed before the reload starts, and started after it ends, before the searching stops.
MARGIN_ANSWERS = 2 * SEARCH_THREADS


@dataclass
class ReloadServer:
    live: LiveServer
    corpus_dir: Path


@pytest.fixture(scope="module")
def reload_server(bundled_service: RuleService, bundled_corpus_dir: Path, bundled_index_dir: Path,
                  encoder: Encoder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReloadServer]:
    """A live server with the admin routes on, over a copy of the bundled corpus and index."""
    corpus_dir, index_dir = copy_bundled(tmp_path_factory.mktemp("reload"), bundled_corpus_dir, bundled_index_dir)
    settings = Settings(corpus_dir=corpus_dir, index_dir=index_dir, admin_token=ADMIN_TOKEN)
    live = LiveServer(create_app(settings, RuleService.load(settings, encoder=encoder))).start()
    yield ReloadServer(live, corpus_dir)
    live.stop()


@dataclass
class Answer:
    query: str
    started: float
    finished: float
    status: int
    index_version: str | None
    rule_ids: list[str]


def _search(http: httpx.Client, query: str) -> Answer:
    started = time.monotonic()
    try:
        response = http.post("/v1/rules/search", json={"query": query, "top_k": 5})
    except httpx.HTTPError as exc:
        # Recorded as status 0, so that a dropped connection fails the test instead of ending a worker.
        return Answer(query, started, time.monotonic(), 0, None, [repr(exc)])
    finished = time.monotonic()
    body = response.json() if response.status_code == 200 else {}
    return Answer(query, started, finished, response.status_code, body.get("index_version"),
                  [hit["id"] for hit in body.get("results", [])])


def _search_until(live: LiveServer, stop: threading.Event, queries: list[str], answers: list[Answer],
                  worker: int) -> None:
    count = 0
    with live.client() as http:
        while not stop.is_set():
            query = queries[count % len(queries)]
            # Every fourth query is new, so the encoder thread embeds it while the index is rebuilt.
            if count % 4 == 3:
                query = f"is it legal to record a phone call, case {worker}-{count}"
            answers.append(_search(http, query))
            count += 1


def _wait_for_answers(answers: list[Answer], since: float) -> None:
    """Wait until `MARGIN_ANSWERS` searches that started after `since` have completed."""
    wait_until(lambda: sum(1 for a in answers if a.started > since) >= MARGIN_ANSWERS, 60,
               f"{MARGIN_ANSWERS} searches")


def test_reload_under_concurrent_searches(reload_server: ReloadServer) -> None:
    live = reload_server.live
    query = marker_query("zorblax")
    with live.client() as http:
        before = _search(http, query)
    rule_id = add_marker_rule(reload_server.corpus_dir, "zorblax")
    answers: list[Answer] = []
    stop = threading.Event()
    queries = [query, *FIXED_QUERIES]
    workers = [threading.Thread(target=_search_until, args=(live, stop, queries, answers, n)) for n in range(SEARCH_THREADS)]

    for worker in workers:
        worker.start()
    _wait_for_answers(answers, 0.0)
    with live.client() as http:
        accepted = http.post("/v1/admin/reload", headers=ADMIN)
        reload_started = time.monotonic()
        outcome = wait_for_reload(http, accepted.json()["id"], ADMIN)
        reload_finished = time.monotonic()
        _wait_for_answers(answers, reload_finished)
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        after = _search(http, query)

    old, new = before.index_version, outcome["index_versions"]["default"]
    by_version: dict[str | None, list[Answer]] = defaultdict(list)
    for answer in answers:
        by_version[answer.index_version].append(answer)
    during = [a for a in answers if a.finished > reload_started and a.started < reload_finished]
    print(f"\nreload under load: {len(answers)} searches, {len(during)} overlapping the reload "
          f"({reload_finished - reload_started:.2f} s), {len(by_version[old])} old, {len(by_version[new])} new")

    assert accepted.status_code == 202
    assert accepted.headers["Location"] == f"/v1/admin/reload/{accepted.json()['id']}"
    assert outcome["status"] == "succeeded", outcome
    assert outcome["previous_index_versions"] == {"default": old}
    assert new != old
    assert rule_id not in before.rule_ids
    assert [a.status for a in answers if a.status != 200] == []
    assert set(by_version) == {old, new}
    assert len(during) > 0
    assert [a.rule_ids for a in by_version[old] if rule_id in a.rule_ids] == []
    assert after.index_version == new
    assert after.rule_ids[0] == rule_id


def test_reload_answers_whole_per_version(reload_server: ReloadServer) -> None:
    """Each fixed query gets one answer per index version: no answer mixes two indexes."""
    live = reload_server.live
    answers: list[Answer] = []
    stop = threading.Event()
    add_marker_rule(reload_server.corpus_dir, "quibble")
    workers = [threading.Thread(target=_search_until, args=(live, stop, list(FIXED_QUERIES), answers, n))
               for n in range(2)]

    for worker in workers:
        worker.start()
    _wait_for_answers(answers, 0.0)
    with live.client() as http:
        outcome = wait_for_reload(http, http.post("/v1/admin/reload", headers=ADMIN).json()["id"], ADMIN)
    _wait_for_answers(answers, time.monotonic())
    stop.set()
    for worker in workers:
        worker.join(timeout=60)
    distinct: dict[tuple[str, str | None], set[tuple[str, ...]]] = defaultdict(set)
    for answer in answers:
        if answer.query in FIXED_QUERIES:
            distinct[(answer.query, answer.index_version)].add(tuple(answer.rule_ids))

    assert outcome["status"] == "succeeded"
    assert {key: len(rankings) for key, rankings in distinct.items() if len(rankings) != 1} == {}
    assert {version for _, version in distinct} == {outcome["previous_index_versions"]["default"],
                                                   outcome["index_versions"]["default"]}


def test_reload_broken_corpus_keeps_serving(reload_server: ReloadServer, caplog: pytest.LogCaptureFixture) -> None:
    broken = make_rule("test.broken", "A broken rule", "too short", ["help_fully", "S99"])
    broken_file = write_yaml_rules(reload_server.corpus_dir / "default" / "zz-broken.yaml", [broken])
    caplog.set_level(logging.INFO, logger="rule_service")
    try:
        with reload_server.live.client() as http:
            serving = http.get("/readyz").json()["index_versions"]
            accepted = http.post("/v1/admin/reload", headers=ADMIN)
            outcome = wait_for_reload(http, accepted.json()["id"], ADMIN)
            info = http.get("/v1/info").json()["reload"]
            search = http.post("/v1/rules/search", json={"query": FIXED_QUERIES[0]})
    finally:
        broken_file.unlink()
    errors = outcome["errors"]
    failure_logs = [r.getMessage() for r in caplog.records if f"reload {outcome['id']} failed" in r.getMessage()]

    assert accepted.status_code == 202
    assert outcome["status"] == "failed"
    assert outcome["index_versions"] is None
    assert outcome["error_count"] == len(errors) >= 2
    assert {error["field"] for error in errors} == {"text", "categories"}
    assert {error["rule_id"] for error in errors} == {"test.broken"}
    assert all(error["file"] == str(broken_file) and error["line"] == 2 for error in errors)
    assert info["id"] == outcome["id"]
    assert info["status"] == "failed"
    assert info["errors"] == errors
    assert search.status_code == 200
    assert search.json()["index_version"] == serving["default"]
    assert len(failure_logs) == 1
    assert "test.broken" in failure_logs[0]


def test_reload_missing_corpus_fails(tmp_path: Path, bundled_corpus_dir: Path, bundled_index_dir: Path,
                                     bundled_service: RuleService, encoder: Encoder, start_server: Any) -> None:
    corpus_dir, index_dir = copy_bundled(tmp_path, bundled_corpus_dir, bundled_index_dir)
    settings = Settings(corpus_dir=corpus_dir, index_dir=index_dir, admin_token=ADMIN_TOKEN)
    live = start_server(create_app(settings, RuleService.load(settings, encoder=encoder)))
    (corpus_dir / "default").rename(tmp_path / "moved-away")

    with live.client() as http:
        outcome = wait_for_reload(http, http.post("/v1/admin/reload", headers=ADMIN).json()["id"], ADMIN)
        ready = http.get("/readyz")

    assert outcome["status"] == "failed"
    assert "no rule files found" in outcome["errors"][0]["message"]
    assert ready.json()["index_versions"] == outcome["previous_index_versions"]


def test_second_reload_while_running_409(reload_server: ReloadServer, caplog: pytest.LogCaptureFixture) -> None:
    # A new rule makes the first reload embed the corpus, which takes far longer than one more request.
    add_marker_rule(reload_server.corpus_dir, "flumph")
    caplog.set_level(logging.INFO, logger="rule_service")
    with reload_server.live.client() as http:
        first = http.post("/v1/admin/reload", headers=ADMIN)
        second = http.post("/v1/admin/reload", headers=ADMIN)
        outcome = wait_for_reload(http, first.json()["id"], ADMIN)
    messages = [record.getMessage() for record in caplog.records]

    assert first.status_code == 202
    assert second.status_code == 409
    assert first.json()["id"] in second.json()["message"]
    assert outcome["status"] == "succeeded"
    assert any(m.startswith(f"reload {outcome['id']} started (trigger http") for m in messages)
    assert any(m.startswith(f"reload {outcome['id']} succeeded") for m in messages)


def test_reload_status_unknown_id_404(reload_server: ReloadServer) -> None:
    with reload_server.live.client() as http:
        response = http.get("/v1/admin/reload/0123456789abcdef", headers=ADMIN)

    assert response.status_code == 404
    assert "0123456789abcdef" in response.json()["message"]


def test_info_reload_before_any_is_null(client: httpx.Client) -> None:
    info = client.get("/v1/info").json()

    assert info["reload"] is None
    assert info["admin_routes"] is False


# SIGHUP to `ascl serve`


def _reload_status(http: httpx.Client, previous_id: str | None) -> dict[str, Any] | None:
    """Return the last reload from /v1/info once a reload other than `previous_id` has finished."""
    last = http.get("/v1/info").json()["reload"]
    if last is None or last["id"] == previous_id or last["status"] == "running":
        return None
    return last


def test_sighup_reloads_serve(tmp_path: Path, bundled_service: RuleService, bundled_corpus_dir: Path,
                              bundled_index_dir: Path) -> None:
    corpus_dir, index_dir = copy_bundled(tmp_path, bundled_corpus_dir, bundled_index_dir)
    args = ["--corpus-dir", str(corpus_dir), "--index-dir", str(index_dir), "--log-level", "INFO"]
    with serve_process(tmp_path, args) as served, served.client() as http:
        old = http.get("/readyz").json()["index_versions"]["default"]
        broken_file = write_yaml_rules(corpus_dir / "default" / "zz-broken.yaml",
                                       [make_rule("test.broken", "A broken rule", "too short", ["help_fully"])])
        results: dict[str, dict[str, Any]] = {}

        def finished(key: str, previous: str | None) -> bool:
            status = _reload_status(http, previous)
            if status is not None:
                results[key] = status
            return status is not None

        os.kill(served.process.pid, signal.SIGHUP)
        wait_until(lambda: finished("broken", None), 120, "the reload of the broken corpus")
        still_old = http.get("/readyz").json()["index_versions"]["default"]
        broken_file.unlink()
        rule_id = add_marker_rule(corpus_dir, "zorblax")
        os.kill(served.process.pid, signal.SIGHUP)
        wait_until(lambda: finished("fixed", results["broken"]["id"]), 120, "the reload of the fixed corpus")
        search = http.post("/v1/rules/search", json={"query": marker_query("zorblax"), "top_k": 1}).json()
        alive = served.process.poll() is None
    log = served.log_text()
    broken, fixed = results["broken"], results["fixed"]

    assert alive
    assert broken["trigger"] == "signal"
    assert broken["status"] == "failed"
    assert broken["errors"][0]["rule_id"] == "test.broken"
    assert still_old == old
    assert fixed["trigger"] == "signal"
    assert fixed["status"] == "succeeded"
    assert search["index_version"] == fixed["index_versions"]["default"] != old
    assert search["results"][0]["id"] == rule_id
    assert f"reload {broken['id']} started (trigger signal)" in log
    assert f"reload {broken['id']} failed" in log
    assert f"reload {fixed['id']} succeeded" in log
