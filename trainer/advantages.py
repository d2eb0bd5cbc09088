"""GRPO and IFPO advantages over a batch of scored rollouts, for NumPy arrays and PyTorch tensors.

A batch holds several groups (the G rollouts of one prompt). GRPO centres each
score on its group's mean and optionally divides by the group's standard
deviation:

    Â_i = (r_i - mean_g(r)) / (std_g(r) + epsilon)

IFPO multiplies that by an inverse-frequency weight of the rollout's behaviour
class c(i) (for example "consulted the rules" or "did not"):

    w_i = |g| / (K_g * n_{g,c(i)})        A_i = w_i * Â_i

where n_{g,c} counts rollouts of class c in group g and K_g counts the classes
present in g. Every class present then carries the same total weight, the
weights of a group sum to |g|, and a group with one class gets plain GRPO.

The arithmetic runs in float64 NumPy whatever the input type, so both input
types give the same numbers; a tensor input gets a tensor of its own dtype and
device back. Advantages are not differentiated, so nothing is lost by leaving
torch for the computation.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Literal, TypeVar

import numpy as np

Scope = Literal["group", "batch"]
ArrayLike = TypeVar("ArrayLike")


def grpo_advantages(
    scores: ArrayLike,
    group_ids: Sequence[Hashable] | Any,
    *,
    normalize_std: bool = True,
    epsilon: float = 1e-6,
) -> ArrayLike:
    """Compute GRPO advantages for scores of shape (batch,), returned in the type and dtype of `scores`.

    `group_ids` has one hashable id per rollout (a list, NumPy array or tensor).
    The standard deviation is the unbiased one (as `torch.std`, which verl and
    TRL use). A group of one rollout, or of equal scores, gets zero advantage.
    """
    values = _scores_as_float64(scores)
    groups = _labels(group_ids, "group_ids", len(values))
    _check_epsilon(epsilon)

    advantages = _grpo(values, groups, normalize_std, epsilon)
    return _like(advantages, scores)


def ifpo_weights(
    group_ids: Sequence[Hashable] | Any,
    classes: Sequence[Hashable] | Any,
    *,
    scope: Scope = "group",
    smoothing: float = 0.0,
    w_min: float | None = None,
    w_max: float | None = None,
) -> np.ndarray:
    """Compute the IFPO weight of every rollout as a float64 array of shape (batch,).

    `scope="group"` counts classes within each group; `scope="batch"` counts them
    over the whole batch, so the weights of the batch sum to its size instead.
    `smoothing` adds a pseudo-count to every class count and rescales so the
    weights of a counting unit still sum to its size; large values approach
    GRPO. `w_min` and `w_max` clip the weights last, so clipped weights no
    longer sum to the group size.
    """
    groups = _labels(group_ids, "group_ids")
    behaviour = _labels(classes, "classes", len(groups))
    _check_weight_options(scope, smoothing, w_min, w_max)

    if scope == "batch":
        groups = np.zeros(len(groups), dtype=np.int64)
    weights = _inverse_frequency(groups, behaviour, smoothing)

    if w_min is not None or w_max is not None:
        weights = np.clip(weights, w_min, w_max)
    return weights


def ifpo_advantages(
    scores: ArrayLike,
    group_ids: Sequence[Hashable] | Any,
    classes: Sequence[Hashable] | Any,
    *,
    normalize_std: bool = True,
    epsilon: float = 1e-6,
    scope: Scope = "group",
    smoothing: float = 0.0,
    w_min: float | None = None,
    w_max: float | None = None,
) -> ArrayLike:
    """Compute IFPO advantages for scores of shape (batch,), returned in the type and dtype of `scores`.

    The GRPO advantage is always taken within the rollout's group; `scope`,
    `smoothing`, `w_min` and `w_max` only change the weights (see `ifpo_weights`).
    `classes` may hold any number of distinct hashable classes.
    """
    values = _scores_as_float64(scores)
    groups = _labels(group_ids, "group_ids", len(values))
    _check_epsilon(epsilon)

    weights = ifpo_weights(groups, classes, scope=scope, smoothing=smoothing, w_min=w_min, w_max=w_max)
    advantages = weights * _grpo(values, groups, normalize_std, epsilon)
    return _like(advantages, scores)


def broadcast_to_tokens(advantages: ArrayLike, response_mask: Any) -> tuple[Any, Any]:
    """Spread per-rollout advantages of shape (batch,) over a response mask of shape (batch, response_length).

    Returns `(advantages, returns)`, both of the mask's shape and equal, as the
    outcome-reward estimators of verl return them: each token the mask keeps
    gets its rollout's advantage and every other token gets 0. The result is a
    tensor on the mask's device when the mask is a tensor (dtype of
    `advantages` if that is a floating tensor, else float32), else a float64
    NumPy array. A row with an empty mask is all zeros.
    """
    values = _scores_as_float64(advantages)
    mask = _to_numpy(response_mask)
    if mask.ndim != 2 or mask.shape[0] != len(values):
        raise ValueError(
            f"response_mask must have shape (batch, response_length) with batch={len(values)}, got {tuple(mask.shape)}"
        )

    token_advantages = values[:, None] * (mask != 0)
    if not _is_tensor(response_mask):
        return token_advantages, token_advantages.copy()

    import torch

    dtype = advantages.dtype if _is_tensor(advantages) and advantages.is_floating_point() else torch.float32
    result = torch.as_tensor(token_advantages, dtype=dtype, device=response_mask.device)
    return result, result.clone()


def _grpo(values: np.ndarray, groups: np.ndarray, normalize_std: bool, epsilon: float) -> np.ndarray:
    advantages = np.zeros_like(values)
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)

    for group in np.flatnonzero(counts > 1):
        members = inverse == group
        centred = values[members] - values[members].mean()
        if normalize_std:
            std = values[members].std(ddof=1)
            # Equal scores give 0 / epsilon = 0; with epsilon 0 the guard avoids 0 / 0.
            centred = centred / (std + epsilon) if std > 0 else np.zeros_like(centred)
        advantages[members] = centred
    return advantages


def _inverse_frequency(groups: np.ndarray, classes: np.ndarray, smoothing: float) -> np.ndarray:
    weights = np.empty(len(groups), dtype=np.float64)
    _, group_index = np.unique(groups, return_inverse=True)

    for group in range(group_index.max() + 1 if len(groups) else 0):
        members = np.flatnonzero(group_index == group)
        _, class_index, class_counts = np.unique(classes[members], return_inverse=True, return_counts=True)
        raw = 1.0 / (class_counts[class_index] + smoothing)
        # With smoothing 0, sum(raw) is the number of classes K, so this is |g| / (K * n_c).
        weights[members] = len(members) * raw / raw.sum()
    return weights


def _scores_as_float64(scores: Any) -> np.ndarray:
    values = _to_numpy(scores).astype(np.float64, copy=False)
    if values.ndim != 1:
        raise ValueError(f"scores must have shape (batch,), got {tuple(values.shape)}")
    if not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ValueError(f"scores[{bad}] is {values[bad]}; every score must be a finite number")
    return values


def _labels(labels: Any, name: str, expected: int | None = None) -> np.ndarray:
    array = _to_numpy(labels) if _is_tensor(labels) or isinstance(labels, np.ndarray) else None
    if array is None:
        array = np.empty(len(labels), dtype=object)
        array[:] = list(labels)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {tuple(array.shape)}")
    if expected is not None and len(array) != expected:
        raise ValueError(f"{name} has {len(array)} entries but there are {expected} scores")
    if array.dtype == object:
        # np.unique sorts, so mixed types such as 1 and "1" must compare: key them by their repr.
        array = np.array([f"{type(item).__name__}:{item!r}" for item in array], dtype=object)
    return array


def _check_epsilon(epsilon: float) -> None:
    if not (epsilon >= 0 and np.isfinite(epsilon)):
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon}")


def _check_weight_options(scope: str, smoothing: float, w_min: float | None, w_max: float | None) -> None:
    if scope not in ("group", "batch"):
        raise ValueError(f"scope must be 'group' or 'batch', got {scope!r}")
    if not (smoothing >= 0 and np.isfinite(smoothing)):
        raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing}")
    if w_min is not None and not w_min > 0:
        raise ValueError(f"w_min must be > 0 so that no advantage changes sign or vanishes, got {w_min}")
    if w_max is not None and not w_max > 0:
        raise ValueError(f"w_max must be > 0, got {w_max}")
    if w_min is not None and w_max is not None and w_max < w_min:
        raise ValueError(f"w_max ({w_max}) must be >= w_min ({w_min})")


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _to_numpy(value: Any) -> np.ndarray:
    if _is_tensor(value):
        tensor = value.detach().cpu()
        # NumPy has no bfloat16, so floating tensors cross as float64.
        return (tensor.double() if tensor.is_floating_point() else tensor).numpy()
    return np.asarray(value)


def _like(values: np.ndarray, template: Any) -> Any:
    if not _is_tensor(template):
        return values
    import torch

    dtype = template.dtype if template.is_floating_point() else torch.float32
    return torch.as_tensor(values, dtype=dtype, device=template.device)


__all__ = ["Scope", "broadcast_to_tokens", "grpo_advantages", "ifpo_advantages", "ifpo_weights"]
