"""An LRU cache of ranked results, so a repeated query costs neither encoding nor ranking.

RL rollouts send the same query many times (G samples of one prompt). The
cache belongs to one `RuleService`, and a reload builds a new service, so a
cached answer always comes from the index that computed it.
"""

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass
class ResultCacheStats:
    """Counters read by the metrics endpoint."""

    hits: int = 0
    misses: int = 0


class ResultCache:
    """A thread-safe LRU map from a search key to its ranked hits; size 0 stores nothing."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.stats = ResultCacheStats()
        self._entries: OrderedDict[Hashable, tuple[Any, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> list[Any] | None:
        """Return a new list of the cached hits for `key`, or None."""
        with self._lock:
            hits = self._entries.get(key)
            if hits is None:
                self.stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self.stats.hits += 1
        return list(hits)

    def put(self, key: Hashable, hits: Iterable[Any]) -> None:
        if self.max_entries == 0:
            return
        with self._lock:
            self._entries[key] = tuple(hits)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def search_key(ruleset: str, retriever: str, query: str, top_k: int, categories: Iterable[str] | None,
               min_score: float | None) -> Hashable:
    """Build the cache key of one query and its filters; the query text is used as sent."""
    return ruleset, retriever, query, top_k, tuple(sorted(set(categories))) if categories else None, min_score


__all__ = ["ResultCache", "ResultCacheStats", "search_key"]
