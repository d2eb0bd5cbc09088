"""IFPO settings shared by the verl and TRL plug-ins, and the mapping from tool-call counts to behaviour classes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainer.behaviour import CONSULTED, NOT_CONSULTED, ClassScheme, classes_from_response_mask


class IFPOOptions(BaseModel):
    """IFPO settings. The weight options are those of `trainer.advantages.ifpo_weights`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: Literal["group", "batch"] = Field(
        "group", description="Count behaviour classes within each prompt's group, or over the whole batch.")
    smoothing: float = Field(
        0.0, ge=0, allow_inf_nan=False,
        description="Pseudo-count added to every class count. Large values approach GRPO.")
    w_min: float | None = Field(None, gt=0, allow_inf_nan=False, description="Lower clip of the weights.")
    w_max: float | None = Field(None, gt=0, allow_inf_nan=False, description="Upper clip of the weights.")
    class_scheme: ClassScheme = Field(
        "consulted",
        description="`consulted`: called the rule tool or not; `tool_calls`: one class per number of calls.")
    max_calls: int = Field(3, ge=1, description="With `tool_calls`, this many calls and more form one class.")
    class_field: str = Field(
        "tool_rewards", min_length=1,
        description="verl only: the non-tensor batch field with each rollout's tool calls or class label.")
    epsilon: float | None = Field(
        None, ge=0, allow_inf_nan=False,
        description="Added to the group's standard deviation; None keeps the trainer's own (verl 1e-6, TRL 1e-4).")

    @model_validator(mode="after")
    def _check_clip_order(self) -> Self:
        if self.w_min is not None and self.w_max is not None and self.w_max < self.w_min:
            raise ValueError(f"w_max ({self.w_max}) must be >= w_min ({self.w_min})")
        return self

    def weight_kwargs(self) -> dict[str, Any]:
        """Return the keyword arguments of `ifpo_advantages` that these options set."""
        return {"scope": self.scope, "smoothing": self.smoothing, "w_min": self.w_min, "w_max": self.w_max}


def parse_options(value: Any, source: str = "ifpo") -> IFPOOptions:
    """Build `IFPOOptions` from None, an `IFPOOptions`, or a mapping such as a dict or an OmegaConf `DictConfig`.

    `source` names the mapping in error messages, for example `algorithm.ifpo`.
    Raises ValueError naming the key, the value and what is allowed.
    """
    if value is None:
        return IFPOOptions()
    if isinstance(value, IFPOOptions):
        return value
    if not isinstance(value, Mapping) and not hasattr(value, "items"):
        raise ValueError(f"{source} must be a mapping of IFPO options, got {type(value).__name__}")
    try:
        return IFPOOptions.model_validate({str(key): item for key, item in value.items()})
    except ValidationError as exc:
        problems = "; ".join(_describe(source, error) for error in exc.errors())
        raise ValueError(f"invalid IFPO options: {problems}") from None


def classes_from_counts(counts: Sequence[int], scheme: ClassScheme, max_calls: int) -> list[str]:
    """Map tool-call counts to classes: as `trainer.behaviour.classes_from_traces` names them for each scheme."""
    if scheme == "consulted":
        return [CONSULTED if count > 0 else NOT_CONSULTED for count in counts]
    return [f"{max_calls}+" if count >= max_calls else str(count) for count in counts]


def classes_from_mask(response_mask: Any, options: IFPOOptions) -> list[str]:
    """Infer classes from a (batch, response_length) mask in which tool results are runs of zeros.

    With `consulted` this is `trainer.behaviour.classes_from_response_mask`. With
    `tool_calls` the count is the number of interior zero runs, which is the number
    of tool rounds, because parallel calls that return in one round make one run.
    """
    if options.class_scheme == "consulted":
        return classes_from_response_mask(response_mask)
    mask = response_mask.detach().cpu().numpy() if hasattr(response_mask, "detach") else np.asarray(response_mask)
    if mask.ndim != 2:
        raise ValueError(f"response_mask must have shape (batch, response_length), got {tuple(mask.shape)}")
    counts = [_interior_zero_runs(row != 0) for row in mask]
    return classes_from_counts(counts, options.class_scheme, options.max_calls)


def _interior_zero_runs(kept: np.ndarray) -> int:
    positions = np.flatnonzero(kept)
    if len(positions) == 0:
        return 0
    span = kept[positions[0] : positions[-1] + 1].astype(np.int8)
    # Each step from a kept token to a masked one starts a run; the span ends on a kept token, so every run closes.
    return int(np.count_nonzero(np.diff(span) == -1))


def _describe(source: str, error: Any) -> str:
    field = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if not field:
        return f"{source}: {message}"
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(IFPOOptions.model_fields)
        return f"{source}.{field} is not an IFPO option (allowed: {allowed})"
    return f"{source}.{field}={error.get('input')!r}: {message}"


__all__ = ["IFPOOptions", "classes_from_counts", "classes_from_mask", "parse_options"]
