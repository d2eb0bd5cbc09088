"""Load rule sets, keep their indexes, and run searches: the service without HTTP.

`RuleService.load(settings)` validates every rule set, loads the encoder and
loads or rebuilds each index. It raises before returning anything when a
rule set is invalid, so callers never get a half-loaded corpus. The HTTP app
and in-process clients both call `search`.
"""

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rule_service.categories import CATEGORIES, CATEGORY_KEYS
from rule_service.encoder import Encoder
from rule_service.index import DenseIndex, StaleIndexError, build_index, expected_for, load_index, save_index
from rule_service.lexical import LexicalIndex
from rule_service.result_cache import ResultCache, search_key
from rule_service.rules import Rule, RuleSet, discover_rulesets, load_ruleset
from rule_service.settings import Retriever, Settings, StaleIndexPolicy

logger = logging.getLogger(__name__)

# Reciprocal rank fusion constant; 60 is the value from Cormack et al. (2009)
# and the usual default in search engines.
RRF_K = 60


@dataclass(frozen=True)
class Hit:
    """One ranked rule for one query.

    `score` is the cosine similarity for the dense and hybrid retrievers (the
    hybrid ranks by fused rank but reports cosine, so a score floor means the
    same in both) and the raw BM25 score for the lexical retriever.
    """

    rule: Rule
    score: float


@dataclass(frozen=True)
class LoadedRuleset:
    """A validated rule set with its dense and lexical indexes."""

    ruleset: RuleSet
    rules_by_id: dict[str, Rule]
    dense: DenseIndex
    lexical: LexicalIndex

    @property
    def index_version(self) -> str:
        return self.dense.manifest.index_version

    @property
    def name(self) -> str:
        return self.ruleset.name


def expand_categories(codes: Iterable[str]) -> set[str]:
    """Map category keys, Llama Guard codes and AILuminate ids to our category keys."""
    keys = set()
    for code in codes:
        for category in CATEGORIES:
            if code == category.key or code == category.llama_guard or code in category.hazards:
                keys.add(category.key)
    return keys


class RuleService:
    """Rule sets, their indexes and the encoder, ready to search."""

    def __init__(self, settings: Settings, encoder: Encoder, rulesets: dict[str, LoadedRuleset]) -> None:
        if settings.default_ruleset not in rulesets:
            raise ValueError(
                f"default ruleset {settings.default_ruleset!r} is not among the loaded rulesets {sorted(rulesets)}"
            )
        self.settings = settings
        self.encoder = encoder
        self.rulesets = rulesets
        self.loaded_at = time.time()
        self.result_cache = ResultCache(settings.query_cache_size)

    @classmethod
    def load(cls, settings: Settings, encoder: Encoder | None = None) -> "RuleService":
        """Validate all rule sets, load the encoder and load or build every index."""
        started = time.perf_counter()
        paths = discover_rulesets(settings.corpus_dir, settings.default_ruleset)
        if settings.default_ruleset not in paths:
            raise ValueError(
                f"default ruleset {settings.default_ruleset!r} is not in {str(settings.corpus_dir)!r}, which has "
                f"{sorted(paths)}; set ASCL_DEFAULT_RULESET to one of them"
            )
        rulesets = {name: load_ruleset(path, name) for name, path in paths.items()}
        if encoder is None:
            encoder = Encoder.from_settings(settings)
        loaded = {name: _prepare(rs, encoder, settings) for name, rs in rulesets.items()}
        logger.info(
            "rule service loaded: %d ruleset(s) %s, %d rules, %.2f s",
            len(loaded), sorted(loaded), sum(len(r.ruleset.rules) for r in loaded.values()),
            time.perf_counter() - started,
        )
        return cls(settings, encoder, loaded)

    def get(self, ruleset: str | None) -> LoadedRuleset:
        """Return a ruleset by name (the default for None); raise KeyError naming the choices."""
        name = ruleset or self.settings.default_ruleset
        try:
            return self.rulesets[name]
        except KeyError:
            raise KeyError(f"unknown ruleset {name!r}; available: {sorted(self.rulesets)}") from None

    def search(
        self,
        queries: list[str],
        top_k: int,
        *,
        ruleset: str | None = None,
        categories: Iterable[str] | None = None,
        min_score: float | None = None,
        retriever: Retriever | None = None,
        vectors: np.ndarray | None = None,
    ) -> list[list[Hit]]:
        """Rank rules for each query; the result has one list of at most `top_k` hits per query.

        `vectors` are the queries' embeddings when the caller already has them
        (the HTTP app gets them from its batching encoder thread); otherwise
        the encoder is called here.
        """
        loaded, retriever, floor = self._resolve(ruleset, retriever, min_score)
        allowed = _category_mask(loaded, categories)

        if retriever is Retriever.bm25:
            vectors = None
        elif vectors is None:
            vectors = self.encoder.encode(queries)
        results = []
        for position, query in enumerate(queries):
            vector = None if vectors is None else vectors[position : position + 1]
            ranked = _rank(loaded, query, vector, retriever, allowed)
            if floor is not None:
                ranked = [(rule_id, score) for rule_id, score in ranked if score >= floor]
            hits = [Hit(loaded.rules_by_id[rule_id], score) for rule_id, score in ranked[:top_k]]
            self.result_cache.put(search_key(loaded.name, retriever.value, query, top_k, categories, floor), hits)
            results.append(hits)
        return results

    def cached_results(
        self,
        queries: list[str],
        top_k: int,
        *,
        ruleset: str | None = None,
        categories: Iterable[str] | None = None,
        min_score: float | None = None,
        retriever: Retriever | None = None,
    ) -> list[list[Hit] | None]:
        """Return the cached hits of each query, or None where `search` must run; the arguments are those of `search`."""
        loaded, retriever, floor = self._resolve(ruleset, retriever, min_score)
        return [self.result_cache.get(search_key(loaded.name, retriever.value, query, top_k, categories, floor))
                for query in queries]

    def _resolve(self, ruleset: str | None, retriever: Retriever | None,
                 min_score: float | None) -> tuple[LoadedRuleset, Retriever, float | None]:
        """Apply the server defaults: the ruleset, the retriever and the score floor a search uses."""
        floor = self.settings.min_score if min_score is None else min_score
        return self.get(ruleset), Retriever(retriever or self.settings.retriever), floor


def _prepare(ruleset: RuleSet, encoder: Encoder, settings: Settings) -> LoadedRuleset:
    dense = _load_or_build(ruleset, encoder, settings)
    return LoadedRuleset(ruleset, ruleset.by_id(), dense, LexicalIndex(ruleset.rules))


def _load_or_build(ruleset: RuleSet, encoder: Encoder, settings: Settings) -> DenseIndex:
    directory = index_directory(settings, ruleset.name)
    expected = expected_for(ruleset, encoder, settings.index_type)
    try:
        dense = load_index(directory, expected)
        logger.info("index loaded: ruleset %s, version %s, %s", ruleset.name, dense.manifest.index_version, directory)
        return dense
    except FileNotFoundError:
        logger.info("no saved index for ruleset %s in %s; building one", ruleset.name, directory)
    except StaleIndexError as exc:
        if settings.on_stale_index is StaleIndexPolicy.fail:
            raise
        logger.warning("saved index for ruleset %s is stale, rebuilding: %s", ruleset.name, exc)
    return build_and_save(ruleset, encoder, settings)


def build_and_save(ruleset: RuleSet, encoder: Encoder, settings: Settings) -> DenseIndex:
    """Embed `ruleset`, write its index and manifest, and return the loaded index."""
    index, rule_ids, _, seconds = build_index(ruleset, encoder, settings.index_type)
    directory = index_directory(settings, ruleset.name)
    manifest = save_index(directory, ruleset, encoder, settings.index_type, index, rule_ids, seconds)
    logger.info(
        "index built: ruleset %s, %d rules, version %s, %.2f s, %s",
        ruleset.name, len(rule_ids), manifest.index_version, seconds, directory,
    )
    return DenseIndex(index, rule_ids, manifest)


def index_directory(settings: Settings, ruleset: str) -> Path:
    return settings.index_dir / ruleset


def _category_mask(loaded: LoadedRuleset, categories: Iterable[str] | None) -> set[str] | None:
    """Return the rule ids that pass the category filter, or None for no filter."""
    if not categories:
        return None
    keys = expand_categories(categories)
    codes = set(categories)
    allowed = set()
    for rule in loaded.ruleset.rules:
        # A filter on a category key or code matches rules that carry it directly
        # or carry its category key; a help_fully rule tagged S1 matches "S1".
        if codes.intersection(rule.categories) or keys.intersection(rule.categories):
            allowed.add(rule.id)
    return allowed


def _rank(
    loaded: LoadedRuleset,
    query: str,
    vector: np.ndarray | None,
    retriever: Retriever,
    allowed: set[str] | None,
) -> list[tuple[str, float]]:
    """Return every rule that passes the filter as (rule id, score), best first."""
    dense: list[tuple[str, float]] = []
    if vector is not None:
        dense = loaded.dense.search(vector, len(loaded.dense.rule_ids))[0]
        if allowed is not None:
            dense = [(rule_id, score) for rule_id, score in dense if rule_id in allowed]
    if retriever is Retriever.dense:
        return dense

    bm25 = _lexical_ranking(loaded, query, allowed)
    if retriever is Retriever.bm25:
        return bm25

    fused: dict[str, float] = {}
    for ranking in (dense, bm25):
        for rank, (rule_id, _) in enumerate(ranking, start=1):
            fused[rule_id] = fused.get(rule_id, 0.0) + 1.0 / (RRF_K + rank)
    cosine = dict(dense)
    unseen = [rule_id for rule_id in fused if rule_id not in cosine]
    if unseen and vector is not None:
        cosine.update(zip(unseen, loaded.dense.similarity(vector, unseen), strict=True))
    order = sorted(fused, key=lambda rule_id: (-fused[rule_id], -cosine[rule_id], rule_id))
    return [(rule_id, cosine[rule_id]) for rule_id in order]


def _lexical_ranking(loaded: LoadedRuleset, query: str, allowed: set[str] | None) -> list[tuple[str, float]]:
    scores = loaded.lexical.scores(query)
    pairs = [
        (rule_id, float(score))
        for rule_id, score in zip(loaded.lexical.rule_ids, scores, strict=True)
        if score > 0 and (allowed is None or rule_id in allowed)
    ]
    pairs.sort(key=lambda pair: (-pair[1], pair[0]))
    return pairs


__all__ = ["CATEGORY_KEYS", "Hit", "LoadedRuleset", "RuleService", "expand_categories"]
