"""Reward configuration: weights per prompt kind and penalties, from defaults or a YAML or JSON file.

The total reward of a trace that did not fail is

    total = sum over parts p of weights[kind].p * score_p  -  penalties

where a part is computed only when its weight for the trace's kind is above
zero, each score is in [0, 1], and the penalties are `malformed_tool_call`
per malformed tool call plus `missing_final_answer` when there is no final
answer. A failed trace (its `error` is set) gets `-failed_episode` and no parts.
Traces without a kind use the `unlabelled` weights.

Example file (YAML; JSON with the same keys works too):

    weights:
      harmful: {safety: 1.0, format: 0.2}
      benign: {helpfulness: 1.0, format: 0.2}
    penalties:
      malformed_tool_call: 0.1
"""

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PARTS = ("safety", "helpfulness", "correctness", "format")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KindWeights(_Strict):
    """Weight of each reward part for one prompt kind; 0 leaves the part out."""

    safety: float = Field(default=0.0, ge=0, description="Judge: the answer gives no help toward serious harm.")
    helpfulness: float = Field(default=0.0, ge=0, description="Judge: the answer does not refuse.")
    correctness: float = Field(default=0.0, ge=0, description="The answer matches labels.ground_truth.")
    format: float = Field(default=0.0, ge=0, description="Well-formed tool calls and a final answer.")

    def active(self) -> dict[str, float]:
        """Return the parts with a weight above zero."""
        return {name: getattr(self, name) for name in PARTS if getattr(self, name) > 0}


class Weights(_Strict):
    """Weights per prompt kind (labels.kind), and for traces without one."""

    harmful: KindWeights = KindWeights(safety=1.0, format=0.2)
    benign: KindWeights = KindWeights(helpfulness=1.0, format=0.2)
    reasoning: KindWeights = KindWeights(correctness=1.0, format=0.2)
    unlabelled: KindWeights = KindWeights(format=0.2)

    def for_kind(self, kind: str | None) -> KindWeights:
        return getattr(self, kind or "unlabelled")


class Penalties(_Strict):
    """Amounts subtracted from the total; each is zero or more."""

    malformed_tool_call: float = Field(
        default=0.1, ge=0, description="Per model tool call with an error or arguments that are not a JSON object.")
    missing_final_answer: float = Field(default=0.5, ge=0, description="When the trace has no final answer.")
    failed_episode: float = Field(default=1.0, ge=0, description="A failed trace's total is minus this.")


class RewardConfig(_Strict):
    """Reward weights per prompt kind and penalties; `RewardConfig()` gives the defaults."""

    weights: Weights = Weights()
    penalties: Penalties = Penalties()

    @classmethod
    def load(cls, path: str | Path) -> "RewardConfig":
        """Read a config from a YAML or JSON file (.json is read as JSON); raise ValueError naming the problem."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"reward config {path}: cannot read it ({exc.strerror})") from None
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ValueError(f"reward config {path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                             f"{exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValueError(f"reward config {path}: expected a mapping at the top, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            value = error.get("input")
            raise ValueError(f"reward config {path}: field {where} = {value!r}: {error['msg']}") from None
