"""Behaviour classes for IFPO: which rollouts consulted the rules, from traces or from a response mask."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

from agent.trace import Trace

ClassScheme = Literal["consulted", "tool_calls"]

CONSULTED = "consulted"
NOT_CONSULTED = "not_consulted"


def classes_from_traces(traces: Iterable[Trace], scheme: ClassScheme = "consulted", max_calls: int = 3) -> list[str]:
    """Return one behaviour class per trace.

    `consulted` gives two classes: rules reached the context or not. `tool_calls`
    gives one class per number of tool calls, with `max_calls` and above merged
    into one class ("3+" for the default).
    """
    if scheme == "consulted":
        return [CONSULTED if trace.consulted_rules else NOT_CONSULTED for trace in traces]
    if scheme == "tool_calls":
        if max_calls < 1:
            raise ValueError(f"max_calls must be >= 1, got {max_calls}")
        return [_calls_class(trace.num_tool_calls, max_calls) for trace in traces]
    raise ValueError(f"scheme must be 'consulted' or 'tool_calls', got {scheme!r}")


def classes_from_response_mask(response_mask: Any) -> list[str]:
    """Infer the class of each rollout from a (batch, response_length) mask.

    Tool results inserted into a response are masked out, so a run of zeros with
    ones on both sides means the rollout called the tool. Zeros at the end are
    padding and zeros at the start do not occur in a response the policy began.
    """
    mask = response_mask.detach().cpu().numpy() if hasattr(response_mask, "detach") else np.asarray(response_mask)
    if mask.ndim != 2:
        raise ValueError(f"response_mask must have shape (batch, response_length), got {tuple(mask.shape)}")
    return [CONSULTED if _has_interior_zero(row != 0) else NOT_CONSULTED for row in mask]


def _has_interior_zero(policy_tokens: np.ndarray) -> bool:
    positions = np.flatnonzero(policy_tokens)
    if len(positions) == 0:
        return False
    span = policy_tokens[positions[0] : positions[-1] + 1]
    return not bool(span.all())


def _calls_class(calls: int, max_calls: int) -> str:
    return f"{max_calls}+" if calls >= max_calls else str(calls)


__all__ = ["CONSULTED", "NOT_CONSULTED", "ClassScheme", "classes_from_response_mask", "classes_from_traces"]
