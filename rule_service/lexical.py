"""Lexical BM25 ranking over rule text, the partner of the dense index in hybrid search."""

import functools
import re

import numpy as np
import snowballstemmer
from rank_bm25 import BM25Okapi

from rule_service.rules import Rule

_TOKEN = re.compile(r"[a-z0-9]+")
# Function words carry no topic; keeping them would let "how do I" match every rule.
_STOPWORDS = frozenset(
    """a about an and any are as at be been being but by can could did do does doing for from had has have
    how i if in into is it its me my of on or our should so some such than that the their them then there
    these they this those to too very was we were what when where which who whom why will with would you
    your yours""".split()
)


class LexicalIndex:
    """BM25 (Okapi) over stemmed, stop-word-filtered tokens of each rule's title and text."""

    def __init__(self, rules: tuple[Rule, ...] | list[Rule]) -> None:
        stemmer = snowballstemmer.stemmer("english")
        # The pure-Python Snowball stemmer costs about 10 microseconds a word;
        # queries repeat words, so stems are cached.
        self._stem = functools.lru_cache(maxsize=50_000)(stemmer.stemWord)
        self.rule_ids = [rule.id for rule in rules]
        documents = [self.tokenize(rule.embedding_text() + " " + " ".join(rule.allowed + rule.disallowed)) for rule in rules]
        # rank_bm25 divides by the mean document length, which is zero for an empty corpus.
        self._bm25 = BM25Okapi(documents) if documents else None

    def tokenize(self, text: str) -> list[str]:
        words = [w for w in _TOKEN.findall(text.lower()) if w not in _STOPWORDS]
        return [self._stem(word) for word in words]

    def scores(self, query: str) -> np.ndarray:
        """Return the BM25 score of every rule for `query`, in rule order; all zero for no shared terms."""
        tokens = self.tokenize(query)
        if self._bm25 is None or not tokens:
            return np.zeros(len(self.rule_ids), dtype=np.float64)
        return np.asarray(self._bm25.get_scores(tokens), dtype=np.float64)
