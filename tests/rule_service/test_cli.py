"""`ascl search`, `ascl serve` and `ascl index build`, run as subprocesses of the installed command."""

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rule_service.encoder import Encoder
from rule_service.index import INDEX_FILE, MANIFEST_FILE
from rule_service.service import RuleService
from rule_service.settings import Settings
from tests.conftest import ASCL_BIN, REPO_ROOT, SERVER_START_TIMEOUT_S, LiveServer, cli_env, free_port, run_ascl
from tests.rule_service.support import small_rules, write_yaml_rules

ZOMBIE_QUERY = "how do I kill a zombie process in linux"
EXIT_INVALID_RULES = 3
EXIT_STALE_INDEX = 4


# ascl search


@pytest.fixture(scope="module")
def local_search(bundled_service: RuleService, bundled_index_dir: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """`ascl search` loading the bundled index that the session service already built."""
    return run_ascl(["search", ZOMBIE_QUERY, "--top-k", "3", "--index-dir", str(bundled_index_dir)],
                    tmp_path_factory.mktemp("cli-search"))


def test_search_exit_0(local_search: subprocess.CompletedProcess[str]) -> None:
    assert local_search.returncode == 0, local_search.stderr


def test_search_prints_table(local_search: subprocess.CompletedProcess[str]) -> None:
    header = next(line for line in local_search.stdout.splitlines() if "rule id" in line)

    assert "score" in header
    assert "title" in header


def test_search_prints_rule(local_search: subprocess.CompletedProcess[str]) -> None:
    assert "help.violent_idioms" in local_search.stdout


def test_search_prints_three_rows(local_search: subprocess.CompletedProcess[str], bundled_service: RuleService) -> None:
    rule_ids = set(bundled_service.get(None).rules_by_id)
    rows = [line for line in local_search.stdout.splitlines() if any(f" {rule_id} " in line for rule_id in rule_ids)]

    assert len(rows) == 3


def test_search_remote_json(server: LiveServer, tmp_path: Path) -> None:
    result = run_ascl(["search", ZOMBIE_QUERY, "--top-k", "2", "--url", server.base_url, "--json"], tmp_path)
    body = json.loads(result.stdout)

    assert result.returncode == 0, result.stderr
    assert len(body["results"]) == 2
    assert body["results"][0]["id"] == "help.violent_idioms"


def test_search_remote_bad_category(server: LiveServer, tmp_path: Path) -> None:
    result = run_ascl(["search", ZOMBIE_QUERY, "--category", "S99", "--url", server.base_url], tmp_path)

    assert result.returncode == 6
    assert "S99" in result.stderr


def test_search_remote_unreachable(tmp_path: Path) -> None:
    result = run_ascl(["search", ZOMBIE_QUERY, "--url", f"http://127.0.0.1:{free_port()}"], tmp_path)

    assert result.returncode == 6


def test_search_top_k_zero_usage_error(tmp_path: Path) -> None:
    assert run_ascl(["search", ZOMBIE_QUERY, "--top-k", "0"], tmp_path).returncode == 2


# ascl serve


@pytest.fixture
def serve_process(bundled_service: RuleService, bundled_index_dir: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """`ascl serve` on a free loopback port over the bundled corpus; stopped after the test."""
    port = free_port()
    process = subprocess.Popen(
        [str(ASCL_BIN), "serve", "--host", "127.0.0.1", "--port", str(port), "--index-dir", str(bundled_index_dir),
         "--log-level", "WARNING"],
        cwd=REPO_ROOT, env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def _wait_ready(process: subprocess.Popen, base_url: str) -> httpx.Response:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"ascl serve exited with {process.returncode}: {process.stderr.read()}")
        try:
            return httpx.get(f"{base_url}/readyz", timeout=5)
        except httpx.TransportError:
            time.sleep(0.25)
    raise AssertionError(f"ascl serve did not open {base_url} within {SERVER_START_TIMEOUT_S} s")


def test_serve_answers(serve_process: tuple[subprocess.Popen, str], bundled_service: RuleService) -> None:
    process, base_url = serve_process

    ready = _wait_ready(process, base_url)
    search = httpx.post(f"{base_url}/v1/rules/search", json={"query": ZOMBIE_QUERY, "top_k": 1}, timeout=60)

    assert ready.status_code == 200
    assert ready.json()["index_versions"] == {"default": bundled_service.get(None).index_version}
    assert search.status_code == 200
    assert search.json()["results"][0]["id"] == "help.violent_idioms"


def test_serve_invalid_corpus_exit_3(tmp_path: Path) -> None:
    rules = small_rules(3)
    rules[1]["categories"] = ["help_fully", "S99"]
    write_yaml_rules(tmp_path / "corpus" / "rules.yaml", rules)

    result = run_ascl(["serve", "--port", str(free_port()), "--corpus-dir", str(tmp_path / "corpus"),
                       "--index-dir", str(tmp_path / "index")], tmp_path)

    assert result.returncode == EXIT_INVALID_RULES
    assert "music.guitar_tuning" in result.stderr
    assert "S99" in result.stderr
    assert not (tmp_path / "index").exists()


def test_serve_missing_corpus_exit_3(tmp_path: Path) -> None:
    result = run_ascl(["serve", "--port", str(free_port()), "--corpus-dir", str(tmp_path / "absent"),
                       "--index-dir", str(tmp_path / "index")], tmp_path)

    assert result.returncode == EXIT_INVALID_RULES
    assert "absent" in result.stderr


def test_serve_stale_index_fail_exit_4(tmp_path: Path, encoder: Encoder) -> None:
    write_yaml_rules(tmp_path / "corpus" / "rules.yaml", small_rules(3))
    settings = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index")
    RuleService.load(settings, encoder=encoder)
    index_file = tmp_path / "index" / "default" / INDEX_FILE
    index_file.write_bytes(index_file.read_bytes()[:64])

    result = run_ascl(["serve", "--port", str(free_port()), "--corpus-dir", str(tmp_path / "corpus"),
                       "--index-dir", str(tmp_path / "index"), "--on-stale-index", "fail"], tmp_path)

    assert result.returncode == EXIT_STALE_INDEX
    assert "checksum" in result.stderr


# ascl index build


def test_index_build_writes_manifest(tmp_path: Path) -> None:
    write_yaml_rules(tmp_path / "corpus" / "alpha" / "rules.yaml", small_rules(3))
    write_yaml_rules(tmp_path / "corpus" / "beta" / "rules.yaml", small_rules(2, start=3))

    result = run_ascl(["index", "build", "--corpus-dir", str(tmp_path / "corpus"),
                       "--index-dir", str(tmp_path / "index")], tmp_path)
    counts = {name: json.loads((tmp_path / "index" / name / MANIFEST_FILE).read_text())["rule_count"]
              for name in ("alpha", "beta")}

    assert result.returncode == 0, result.stderr
    assert counts == {"alpha": 3, "beta": 2}
    assert "Indexes built" in result.stdout


def test_index_build_invalid_corpus_exit_3(tmp_path: Path) -> None:
    rules = small_rules(2)
    del rules[0]["text"]
    write_yaml_rules(tmp_path / "corpus" / "rules.yaml", rules)

    result = run_ascl(["index", "build", "--corpus-dir", str(tmp_path / "corpus"),
                       "--index-dir", str(tmp_path / "index")], tmp_path)

    assert result.returncode == EXIT_INVALID_RULES
    assert "garden.pruning" in result.stderr


def test_validate_rulesets_separately(tmp_path: Path) -> None:
    # The same rule id in two ruleset folders is fine: the server loads each folder on its own.
    rules = small_rules(2)
    write_yaml_rules(tmp_path / "corpus" / "alpha" / "rules.yaml", rules)
    write_yaml_rules(tmp_path / "corpus" / "beta" / "rules.yaml", rules)

    result = run_ascl(["rules", "validate", str(tmp_path / "corpus")], tmp_path)

    assert result.returncode == 0, result.stderr
    assert "alpha: 2 valid rule(s)" in result.stdout
    assert "beta: 2 valid rule(s)" in result.stdout


def test_serve_without_default_ruleset(tmp_path: Path) -> None:
    write_yaml_rules(tmp_path / "corpus" / "alpha" / "rules.yaml", small_rules(2))

    result = run_ascl(["serve", "--corpus-dir", str(tmp_path / "corpus"), "--index-dir", str(tmp_path / "index")],
                      tmp_path)

    assert result.returncode == 3
    assert "ASCL_DEFAULT_RULESET" in result.stderr
    assert not (tmp_path / "index").exists()


def test_invalid_setting_names_variable(tmp_path: Path) -> None:
    env = cli_env(tmp_path) | {"ASCL_MAX_TOP_K": "abc"}

    result = subprocess.run([str(ASCL_BIN), "search", "knives"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 2
    assert "invalid setting ASCL_MAX_TOP_K" in result.stderr
