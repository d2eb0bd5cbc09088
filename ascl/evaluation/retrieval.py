"""Retrieval quality on labelled queries: recall, MRR, nDCG and relevant-versus-unrelated separation.

Each labelled query names the rules a good retriever returns first
(`expected_rule_ids`) and their categories (`expected_categories`). Queries
of kind `unrelated` expect nothing; they are used only to measure how well
the top score separates queries that concern a rule from those that do not.
"""

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sklearn.metrics import roc_auc_score, roc_curve

from rule_service.service import RuleService
from rule_service.settings import Retriever

UNRELATED = "unrelated"
RANK_DEPTH = 10
CUTOFFS = (1, 3, 5)


class LabelledQuery(BaseModel):
    """One line of a retrieval evaluation file."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    query: str = Field(min_length=1)
    kind: str = Field(min_length=1)
    expected_rule_ids: list[str]
    expected_categories: list[str]


def load_queries(path: Path, known_rule_ids: set[str] | None = None) -> list[LabelledQuery]:
    """Read and check a labelled query file; raise ValueError listing every bad line."""
    queries, problems, seen = [], [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            query = LabelledQuery.model_validate_json(line)
        except ValidationError as exc:
            problems.append(f"{path}:{number}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}")
            continue
        if query.id in seen:
            problems.append(f"{path}:{number}: duplicate query id {query.id!r}")
        seen.add(query.id)
        if query.kind != UNRELATED and not query.expected_rule_ids:
            problems.append(f"{path}:{number}: query {query.id!r} of kind {query.kind!r} lists no expected_rule_ids")
        missing = [r for r in query.expected_rule_ids if known_rule_ids is not None and r not in known_rule_ids]
        if missing:
            problems.append(f"{path}:{number}: query {query.id!r} expects unknown rule id(s) {missing}")
        queries.append(query)
    if problems:
        raise ValueError(f"{len(problems)} problem(s) in {path}:\n" + "\n".join(problems))
    return queries


@dataclass
class RetrieverReport:
    """Metrics of one retriever over one query set."""

    retriever: str
    overall: dict[str, float]
    by_kind: dict[str, dict[str, float]]
    separation: dict[str, float]
    misses: list[dict[str, Any]] = field(default_factory=list)


def evaluate(service: RuleService, queries: list[LabelledQuery], retriever: Retriever,
             ruleset: str | None = None) -> RetrieverReport:
    """Rank every query with `retriever` and compute the metrics."""
    loaded = service.get(ruleset)
    hits = service.search([q.query for q in queries], RANK_DEPTH, ruleset=loaded.name, retriever=retriever, min_score=-math.inf)

    per_query: list[dict[str, float]] = []
    top_scores, is_relevant, misses = [], [], []
    kinds: dict[str, list[dict[str, float]]] = defaultdict(list)
    for query, ranked in zip(queries, hits, strict=True):
        top_scores.append(ranked[0].score if ranked else 0.0)
        is_relevant.append(query.kind != UNRELATED)
        if query.kind == UNRELATED:
            continue
        ranked_ids = [hit.rule.id for hit in ranked]
        ranked_categories = [hit.rule.category for hit in ranked]
        metrics = query_metrics(ranked_ids, ranked_categories, query)
        per_query.append(metrics)
        kinds[query.kind].append(metrics)
        if metrics["category_recall@3"] < 1:
            misses.append({"id": query.id, "kind": query.kind, "expected": query.expected_rule_ids, "top3": ranked_ids[:3]})

    return RetrieverReport(
        retriever=retriever.value,
        overall=_mean(per_query) | {"queries": float(len(per_query))},
        by_kind={kind: _mean(rows) | {"queries": float(len(rows))} for kind, rows in sorted(kinds.items())},
        separation=separation(np.array(top_scores), np.array(is_relevant)),
        misses=misses,
    )


def query_metrics(ranked_ids: list[str], ranked_categories: list[str], query: LabelledQuery) -> dict[str, float]:
    """Rule-level recall@k, category-level recall@k, MRR and nDCG@5 for one ranked list."""
    expected = set(query.expected_rule_ids)
    categories = set(query.expected_categories)
    metrics: dict[str, float] = {}
    for k in CUTOFFS:
        metrics[f"recall@{k}"] = len(expected.intersection(ranked_ids[:k])) / len(expected)
        metrics[f"category_recall@{k}"] = float(bool(categories.intersection(ranked_categories[:k])))
    first = next((rank for rank, rule_id in enumerate(ranked_ids, start=1) if rule_id in expected), None)
    metrics["mrr"] = 1.0 / first if first else 0.0
    gains = [1.0 if rule_id in expected else 0.0 for rule_id in ranked_ids[:5]]
    dcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, start=1))
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(expected), 5) + 1))
    metrics["ndcg@5"] = dcg / ideal
    return metrics


def separation(top_scores: np.ndarray, is_relevant: np.ndarray) -> dict[str, float]:
    """AUROC of the top score for relevant versus unrelated queries, and the floor that best splits them.

    The floor maximises Youden's J (true-positive rate minus false-positive
    rate); a server with that `min_score` returns no rules for queries whose
    top score is below it.
    """
    if is_relevant.all() or not is_relevant.any():
        return {"auroc": float("nan"), "best_floor": float("nan"), "tpr_at_floor": float("nan"), "fpr_at_floor": float("nan")}
    fpr, tpr, thresholds = roc_curve(is_relevant, top_scores)
    best = int(np.argmax(tpr - fpr))
    return {
        "auroc": float(roc_auc_score(is_relevant, top_scores)),
        "best_floor": float(thresholds[best]),
        "tpr_at_floor": float(tpr[best]),
        "fpr_at_floor": float(fpr[best]),
    }


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def report_json(reports: list[RetrieverReport], meta: dict[str, Any]) -> str:
    payload = {"meta": meta, "retrievers": [report.__dict__ for report in reports]}
    return json.dumps(payload, indent=2, sort_keys=False, default=str)
