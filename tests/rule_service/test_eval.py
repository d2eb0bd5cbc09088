"""`ascl eval retrieval` on the bundled corpus and labelled queries, and the metric helpers behind it."""

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ascl.evaluation.retrieval import LabelledQuery, load_queries, query_metrics, separation
from rule_service.service import RuleService
from tests.conftest import run_ascl

RETRIEVERS = ["dense", "bm25", "hybrid"]
# The quality bar of the project: for 90% of queries the hybrid top 3 contains a rule of an expected category.
HYBRID_CATEGORY_RECALL_AT_3 = 0.90


@pytest.fixture(scope="module")
def eval_run(bundled_service: RuleService, bundled_index_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One `ascl eval retrieval` run over the index that the session service already built."""
    tmp = tmp_path_factory.mktemp("eval")
    output = tmp / "report.json"
    result = run_ascl(["eval", "retrieval", "--index-dir", str(bundled_index_dir), "--output", str(output)], tmp)
    return result, output


@pytest.fixture(scope="module")
def report(eval_run: tuple[subprocess.CompletedProcess[str], Path]) -> dict[str, Any]:
    result, output = eval_run
    assert result.returncode == 0, result.stderr
    return json.loads(output.read_text(encoding="utf-8"))


def _overall(report: dict[str, Any], retriever: str) -> dict[str, float]:
    return next(entry["overall"] for entry in report["retrievers"] if entry["retriever"] == retriever)


def test_eval_exit_0(eval_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    assert eval_run[0].returncode == 0, eval_run[0].stderr


def test_eval_prints_report_path(eval_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    assert "JSON report written to" in eval_run[0].stdout


def test_eval_report_retrievers(report: dict[str, Any]) -> None:
    assert [entry["retriever"] for entry in report["retrievers"]] == RETRIEVERS


def test_eval_hybrid_category_recall(report: dict[str, Any]) -> None:
    assert _overall(report, "hybrid")["category_recall@3"] >= HYBRID_CATEGORY_RECALL_AT_3


@pytest.mark.parametrize("retriever", RETRIEVERS)
def test_eval_metrics_in_unit_range(report: dict[str, Any], retriever: str) -> None:
    overall = _overall(report, retriever)
    metrics = {name: value for name, value in overall.items() if name != "queries"}

    assert set(metrics) >= {"recall@1", "recall@3", "recall@5", "mrr", "ndcg@5", "category_recall@3"}
    assert [name for name, value in metrics.items() if not 0.0 <= value <= 1.0] == []


@pytest.mark.parametrize("retriever", RETRIEVERS)
def test_eval_recall_grows_with_k(report: dict[str, Any], retriever: str) -> None:
    overall = _overall(report, retriever)

    assert overall["recall@1"] <= overall["recall@3"] <= overall["recall@5"]


def test_eval_meta_uses_saved_index(report: dict[str, Any], bundled_service: RuleService) -> None:
    loaded = bundled_service.get(None)

    assert report["meta"]["index_version"] == loaded.index_version
    assert report["meta"]["rules"] == len(loaded.ruleset.rules)


def test_eval_meta_query_count(report: dict[str, Any], bundled_corpus_dir: Path) -> None:
    path = bundled_corpus_dir.parent / "eval" / "retrieval.jsonl"

    assert report["meta"]["queries"] == len(load_queries(path))


def test_eval_separation_measured(report: dict[str, Any]) -> None:
    separation_by_retriever = {entry["retriever"]: entry["separation"] for entry in report["retrievers"]}

    assert 0.5 < separation_by_retriever["dense"]["auroc"] <= 1.0


def test_eval_unknown_retriever_usage_error(tmp_path: Path) -> None:
    result = run_ascl(["eval", "retrieval", "--retrievers", "dense,magic", "--output", str(tmp_path / "r.json")], tmp_path)

    assert result.returncode == 2
    assert not (tmp_path / "r.json").exists()


# Labelled query files and metrics.


def _query(**fields: Any) -> LabelledQuery:
    values = {"id": "q1", "query": "q", "kind": "direct", "expected_rule_ids": ["a.x"], "expected_categories": ["hate"]}
    return LabelledQuery(**(values | fields))


def test_query_metrics_first_rank() -> None:
    metrics = query_metrics(["a.x", "b.y", "c.z"], ["hate", "privacy", "privacy"], _query())

    assert metrics["recall@1"] == 1.0
    assert metrics["mrr"] == 1.0
    assert metrics["ndcg@5"] == pytest.approx(1.0)


def test_query_metrics_second_rank() -> None:
    metrics = query_metrics(["b.y", "a.x"], ["privacy", "hate"], _query())

    assert metrics["recall@1"] == 0.0
    assert metrics["recall@3"] == 1.0
    assert metrics["mrr"] == 0.5
    assert metrics["ndcg@5"] == pytest.approx(1 / math.log2(3))
    assert metrics["category_recall@1"] == 0.0
    assert metrics["category_recall@3"] == 1.0


def test_query_metrics_miss() -> None:
    metrics = query_metrics(["b.y", "c.z"], ["privacy", "privacy"], _query())

    assert metrics["mrr"] == 0.0
    assert metrics["category_recall@5"] == 0.0


def test_separation_perfect() -> None:
    result = separation(np.array([0.9, 0.8, 0.2, 0.1]), np.array([True, True, False, False]))

    assert result["auroc"] == 1.0
    assert result["tpr_at_floor"] == 1.0
    assert result["fpr_at_floor"] == 0.0


def test_load_queries_reports_lines(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    good = {"id": "q1", "query": "q", "kind": "direct", "expected_rule_ids": ["a.x"], "expected_categories": ["hate"]}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(good | {"extra": 1}) + "\n" + json.dumps(good) + "\n",
                    encoding="utf-8")

    with pytest.raises(ValueError) as caught:
        load_queries(path)

    assert f"{path}:3:" in str(caught.value)
    assert f"{path}:4: duplicate query id 'q1'" in str(caught.value)


def test_load_queries_unknown_rule(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    row = {"id": "q1", "query": "q", "kind": "direct", "expected_rule_ids": ["a.x"], "expected_categories": ["hate"]}
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")

    with pytest.raises(ValueError, match="unknown rule id"):
        load_queries(path, {"b.y"})


def test_bundled_queries_reference_known_rules(bundled_service: RuleService, bundled_corpus_dir: Path) -> None:
    path = bundled_corpus_dir.parent / "eval" / "retrieval.jsonl"

    queries = load_queries(path, set(bundled_service.get(None).rules_by_id))

    assert len(queries) > 0
