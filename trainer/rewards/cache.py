"""Verdict cache: judge verdicts by content hash, in memory and optionally in a JSON Lines file.

The key is the SHA-256 of the rubric version, the judge model, the request
and the response, so a verdict is reused only for the same text judged the
same way. Each new verdict is appended to the file as one whole line with a
single unbuffered write, so concurrent writers and a crash can at worst
leave one torn last line. Such a line, or any line that does not parse, is
skipped with a warning: losing a cache entry only costs one more request.
Only valid judge verdicts are stored, never heuristic ones or failures.
"""

import hashlib
import json
import logging
import threading
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from trainer.rewards.verdict import Verdict

logger = logging.getLogger(__name__)


def verdict_key(rubric_version: str, judge_model: str, request: str, response: str) -> str:
    """Return the cache key of one judgement: a hex SHA-256 over its length-prefixed inputs."""
    digest = hashlib.sha256()
    for part in (rubric_version, judge_model, request, response):
        data = part.encode("utf-8")
        # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


class VerdictCache:
    """Verdicts by key; with a path, loaded from and appended to that JSON Lines file. Safe across threads."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._entries: dict[str, Verdict] = {}
        self.hits = 0
        if self.path is not None:
            self._load(self.path)

    def __len__(self) -> int:
        return len(self._entries)

    def _load(self, path: Path) -> None:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            return
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            # End the torn line so that the next verdict starts a line of its own.
            with open(path, "ab") as handle:
                handle.write(b"\n")
        skipped = 0
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                self._entries[record["key"]] = Verdict.model_validate(record["verdict"])
            except (ValueError, KeyError, TypeError, ValidationError) as exc:
                skipped += 1
                logger.warning("verdict cache %s line %d skipped: %s", path, number, exc)
        logger.info("verdict cache %s: %d verdicts loaded, %d bad lines skipped", path, len(self._entries), skipped)

    def get(self, key: str) -> Verdict | None:
        with self._lock:
            verdict = self._entries.get(key)
            if verdict is not None:
                self.hits += 1
            return verdict

    def put(self, key: str, verdict: Verdict, judge_model: str, rubric_version: str) -> None:
        """Store a verdict, and append it to the file when the cache has one."""
        record = {
            "key": key, "rubric_version": rubric_version, "judge_model": judge_model,
            "verdict": verdict.model_dump(), "created_at": datetime.now(timezone.utc).isoformat(),
        }
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self._entries[key] = verdict
            if self.path is None:
                return
            with open(self.path, "ab", buffering=0) as handle:
                view = memoryview(line)
                while view:  # a regular file takes the whole line at once; loop only for a rare short write
                    written = handle.write(view)
                    view = view[written or 0:]
