"""Summary of a scoring run by prompt kind: counts, mean total, safety, refusal and accuracy rates, verdict sources."""

from collections import Counter
from dataclasses import dataclass, field

from rich.table import Table

from trainer.rewards.scoring import ScoreRecord

KIND_ORDER = ("harmful", "benign", "reasoning", "unlabelled")


@dataclass
class KindSummary:
    """Sums for the traces of one prompt kind; rates are over the traces where the part was computed."""

    traces: int = 0
    failed: int = 0
    total_sum: float = 0.0
    safety: list[float] = field(default_factory=list)
    refusal: list[float] = field(default_factory=list)
    correctness: list[float] = field(default_factory=list)
    sources: Counter[str] = field(default_factory=Counter)

    def add(self, record: ScoreRecord) -> None:
        self.traces += 1
        self.failed += int(record.failed)
        self.total_sum += record.rewards.get("total", 0.0)
        results = record.results
        if "safety" in results:
            self.safety.append(results["safety"].score)
        judged = results.get("safety") or results.get("helpfulness")
        if judged is not None:
            self.refusal.append(judged.parts.get("refusal", 0.0))
            self.sources[judged.details.get("source", "unknown")] += 1
        if "correctness" in results:
            self.correctness.append(results["correctness"].score)

    @property
    def mean_total(self) -> float | None:
        return self.total_sum / self.traces if self.traces else None


@dataclass
class ScoreSummary:
    """Sums by prompt kind over every scored trace, including those scored by an earlier, interrupted run."""

    kinds: dict[str, KindSummary] = field(default_factory=dict)

    def add(self, record: ScoreRecord) -> None:
        self.kinds.setdefault(record.kind or "unlabelled", KindSummary()).add(record)

    def overall(self) -> KindSummary:
        merged = KindSummary()
        for part in self.kinds.values():
            merged.traces += part.traces
            merged.failed += part.failed
            merged.total_sum += part.total_sum
            merged.safety += part.safety
            merged.refusal += part.refusal
            merged.correctness += part.correctness
            merged.sources.update(part.sources)
        return merged

    @property
    def heuristic_fallbacks(self) -> int:
        return self.overall().sources["heuristic"]


def _rate(values: list[float]) -> str:
    return f"{sum(values) / len(values):.1%}" if values else "-"


def _mean(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def summary_table(summary: ScoreSummary, title: str = "rewards by prompt kind") -> Table:
    """Return a rich table with one row per prompt kind present, and one for all traces."""
    table = Table(title=title)
    for name in ("kind", "traces", "failed", "mean total", "safety rate", "refusal rate", "accuracy",
                 "judge", "heuristic", "no answer"):
        table.add_column(name, justify="left" if name == "kind" else "right")
    present = [kind for kind in KIND_ORDER if kind in summary.kinds]
    rows = [(kind, summary.kinds[kind]) for kind in present] + [("all", summary.overall())]
    for name, part in rows:
        table.add_row(
            name, str(part.traces), str(part.failed), _mean(part.mean_total), _rate(part.safety),
            _rate(part.refusal), _rate(part.correctness), str(part.sources["judge"]),
            str(part.sources["heuristic"]), str(part.sources["no_answer"]),
        )
    return table
