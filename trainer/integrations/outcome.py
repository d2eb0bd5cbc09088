"""IFPO over verl-style outcome rewards: token-level tensors in, token-level advantages out.

This module does not import verl, so the arithmetic that the verl estimator
runs can be checked without verl installed. verl 0.9.1 puts each rollout's
outcome reward on one token of `token_level_rewards`, so the per-rollout score
is the row sum, as in verl's own GRPO estimator.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from trainer.advantages import broadcast_to_tokens, ifpo_advantages
from trainer.integrations.options import IFPOOptions, classes_from_counts, classes_from_mask

logger = logging.getLogger(__name__)

DEFAULT_EPSILON = 1e-6


def ifpo_outcome_advantage(
    token_level_rewards: Any,
    response_mask: Any,
    index: Any,
    options: IFPOOptions,
    *,
    normalize_std: bool = True,
    epsilon: float | None = None,
    classes: Sequence[Any] | None = None,
    non_tensor_batch: Mapping[str, Any] | None = None,
) -> tuple[Any, Any]:
    """Compute IFPO advantages and returns, both of the mask's shape, as verl's outcome estimators return them.

    The behaviour classes come from `classes` when given, else from
    `non_tensor_batch[options.class_field]` when that field exists, else from
    interior zero runs of `response_mask` (tool results that the agent loop
    inserted and masked out). `epsilon` falls back to `options.epsilon`, then 1e-6.
    """
    if index is None:
        raise ValueError("the ifpo estimator needs the group of each rollout: the batch has no 'uid' field")
    rows = len(token_level_rewards)
    behaviour, source = resolve_classes(response_mask, options, classes, non_tensor_batch)
    if len(behaviour) != rows:
        raise ValueError(f"got {len(behaviour)} behaviour classes from {source} for {rows} rollouts")

    if epsilon is None:
        epsilon = options.epsilon if options.epsilon is not None else DEFAULT_EPSILON
    if hasattr(token_level_rewards, "detach"):
        scores = token_level_rewards.sum(dim=-1)
    else:
        scores = np.asarray(token_level_rewards, dtype=np.float64).sum(axis=-1)
    advantages = ifpo_advantages(
        scores, list(index), behaviour, normalize_std=normalize_std, epsilon=epsilon, **options.weight_kwargs(),
    )
    logger.debug("ifpo: %d rollouts, %d behaviour classes from %s", rows, len(set(behaviour)), source)
    return broadcast_to_tokens(advantages, response_mask)


def resolve_classes(
    response_mask: Any,
    options: IFPOOptions,
    classes: Sequence[Any] | None = None,
    non_tensor_batch: Mapping[str, Any] | None = None,
) -> tuple[list[Any], str]:
    """Return each rollout's behaviour class and its source, trying sources in `ifpo_outcome_advantage`'s order."""
    if classes is not None:
        return list(classes), "the classes passed in"
    if non_tensor_batch is not None and options.class_field in non_tensor_batch:
        values = non_tensor_batch[options.class_field]
        return classes_from_field(values, options), f"the non-tensor field {options.class_field!r}"
    return classes_from_mask(response_mask, options), "the response mask"


def classes_from_field(values: Sequence[Any], options: IFPOOptions) -> list[str]:
    """Map one non-tensor field to classes: strings are class labels, anything else is a number of tool calls.

    A list (such as verl's `tool_rewards`, one entry per tool call) counts its
    entries, a number counts itself, a bool counts as 0 or 1 and None as 0.
    """
    entries = list(values)
    labels = [isinstance(entry, str) for entry in entries]
    if any(labels):
        if not all(labels):
            first = labels.index(False)
            raise ValueError(
                f"non-tensor field {options.class_field!r} mixes class labels (strings) with other values: "
                f"entry {first} is {entries[first]!r}"
            )
        return entries
    counts = [_call_count(entry, options.class_field, position) for position, entry in enumerate(entries)]
    return classes_from_counts(counts, options.class_scheme, options.max_calls)


def _call_count(entry: Any, field: str, position: int) -> int:
    if entry is None:
        return 0
    if isinstance(entry, (bool, np.bool_)):
        return int(entry)
    if isinstance(entry, (int, np.integer)) or (isinstance(entry, (float, np.floating)) and float(entry).is_integer()):
        if entry < 0:
            raise ValueError(f"non-tensor field {field!r} entry {position} is {entry}; a tool-call count must be >= 0")
        return int(entry)
    if isinstance(entry, (list, tuple, np.ndarray)):
        return len(entry)
    raise ValueError(
        f"non-tensor field {field!r} entry {position} is {entry!r} ({type(entry).__name__}); expected a list of "
        "tool calls, a whole number of calls, a bool or a class label string"
    )


__all__ = ["DEFAULT_EPSILON", "classes_from_field", "ifpo_outcome_advantage", "resolve_classes"]
