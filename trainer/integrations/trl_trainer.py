"""`IFPOGRPOTrainer`: TRL 1.16's `GRPOTrainer` with IFPO advantages in place of GRPO's.

TRL 1.16 computes advantages inline in `_generate_and_score_completions`, right
after `_calculate_rewards` returns the rewards of the whole generation batch
(gathered over processes). This subclass keeps both: it records the rewards
and the behaviour classes in `_calculate_rewards`, lets TRL finish the step,
then replaces `advantages` in the returned inputs (and in the completions log)
with `trainer.advantages.ifpo_advantages` of the same rewards.

The behaviour class of a completion comes from `behaviour_fn(prompts=...,
completions=..., completion_ids=..., **dataset_columns)` when that is given.
Else it is the dataset column `class_column`. Else it is the number of rule
tool calls in the completion: the assistant messages' `tool_calls` named
`search_safety_rules`, as TRL's tool loop records them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer

from rule_service.tool import TOOL_NAME
from trainer.advantages import ifpo_advantages
from trainer.integrations.options import IFPOOptions, classes_from_counts, parse_options

logger = logging.getLogger(__name__)

# TRL 1.16 divides by the group's standard deviation plus this constant.
TRL_EPSILON = 1e-4

BehaviourFn = Callable[..., Sequence[Hashable]]


class IFPOGRPOTrainer(GRPOTrainer):
    """A `GRPOTrainer` whose advantages are IFPO's; every argument of `GRPOTrainer` works as there.

    `ifpo` takes `IFPOOptions` or a dict of them (`scope`, `smoothing`, `w_min`,
    `w_max`, `class_scheme`, `max_calls`, `epsilon`). Only the reward settings of
    `GRPOConfig` that IFPO can reproduce are accepted: `scale_rewards` "group" or
    "none", and `multi_objective_aggregation` "sum_then_normalize".
    """

    def __init__(
        self,
        *args: Any,
        ifpo: IFPOOptions | dict[str, Any] | None = None,
        behaviour_fn: BehaviourFn | None = None,
        class_column: str | None = None,
        rule_tool_name: str = TOOL_NAME,
        **kwargs: Any,
    ) -> None:
        if behaviour_fn is not None and class_column is not None:
            raise ValueError("pass behaviour_fn or class_column, not both")
        self.ifpo_options = parse_options(ifpo, "ifpo")
        self.behaviour_fn = behaviour_fn
        self.class_column = class_column
        self.rule_tool_name = rule_tool_name
        self._ifpo_rewards: torch.Tensor | None = None
        self._ifpo_classes: list[Hashable] | None = None
        super().__init__(*args, **kwargs)
        _check_reward_settings(self.args)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        local = self._behaviour_classes(inputs, prompts, completions, completion_ids_list)
        # gather_object keeps process order, as TRL's gather of the rewards does.
        self._ifpo_classes = list(gather_object(local))
        self._ifpo_rewards = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self._ifpo_rewards is None or self._ifpo_classes is None:
            raise RuntimeError("TRL did not call _calculate_rewards during this step; IFPO cannot replace advantages")

        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        all_advantages = self._ifpo_advantages(num_generations)
        self._ifpo_rewards = self._ifpo_classes = None

        local = len(output["advantages"])
        start = self.accelerator.process_index * local
        output["advantages"] = all_advantages[start : start + local].to(output["advantages"])
        self._replace_logged_advantages(all_advantages)
        return output

    def _ifpo_advantages(self, num_generations: int) -> torch.Tensor:
        """Compute IFPO advantages for the whole generation batch, with TRL's reward aggregation."""
        rewards_per_func = self._ifpo_rewards
        weights = self.reward_weights.to(rewards_per_func.device)
        rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
        # TRL leaves completions that every reward function scored None out of the baseline and gives them 0.
        scorable = ~torch.isnan(rewards_per_func).all(dim=1)

        classes = self._ifpo_classes
        if len(classes) != len(rewards):
            raise ValueError(f"got {len(classes)} behaviour classes for {len(rewards)} completions")
        groups = np.arange(len(rewards)) // num_generations
        keep = scorable.cpu().numpy()

        options = self.ifpo_options
        epsilon = options.epsilon if options.epsilon is not None else TRL_EPSILON
        advantages = torch.zeros_like(rewards)
        if keep.any():
            advantages[scorable] = ifpo_advantages(
                rewards[scorable], groups[keep], [c for c, k in zip(classes, keep, strict=True) if k],
                normalize_std=self.scale_rewards == "group", epsilon=epsilon, **options.weight_kwargs(),
            )
        self._log_mixed_groups(groups, classes)
        return advantages

    def _behaviour_classes(self, inputs, prompts, completions, completion_ids_list) -> list[Hashable]:
        if self.behaviour_fn is not None:
            # The dataset columns, as TRL passes them to reward functions.
            skipped = ("prompt", "completion", "completion_ids")
            columns = {key: [row[key] for row in inputs] for key in inputs[0] if key not in skipped}
            classes = list(self.behaviour_fn(prompts=prompts, completions=completions,
                                             completion_ids=completion_ids_list, trainer_state=self.state, **columns))
            if len(classes) != len(completions):
                raise ValueError(f"behaviour_fn returned {len(classes)} classes for {len(completions)} completions")
            return classes
        if self.class_column is not None:
            missing = [position for position, row in enumerate(inputs) if self.class_column not in row]
            if missing:
                raise ValueError(f"class_column {self.class_column!r} is missing from dataset row {missing[0]} "
                                 f"(columns: {sorted(inputs[missing[0]])})")
            return [row[self.class_column] for row in inputs]
        counts = [count_tool_calls(completion, self.rule_tool_name) for completion in completions]
        return classes_from_counts(counts, self.ifpo_options.class_scheme, self.ifpo_options.max_calls)

    def _replace_logged_advantages(self, advantages: torch.Tensor) -> None:
        logged = self._logs["advantages"]
        for _ in range(min(len(advantages), len(logged))):
            logged.pop()
        logged.extend(advantages.tolist())

    def _log_mixed_groups(self, groups: np.ndarray, classes: Sequence[Hashable]) -> None:
        """Log the share of groups with more than one class: the groups where IFPO differs from GRPO."""
        mode = "train" if self.model.training else "eval"
        by_group: dict[int, set[Hashable]] = {}
        for group, behaviour in zip(groups.tolist(), classes, strict=True):
            by_group.setdefault(group, set()).add(behaviour)
        mixed = sum(len(present) > 1 for present in by_group.values())
        self._metrics[mode]["ifpo/mixed_group_fraction"].append(mixed / max(len(by_group), 1))


def count_tool_calls(completion: Any, tool_name: str = TOOL_NAME) -> int:
    """Count the calls of `tool_name` in a conversational completion; a plain-text completion has none."""
    if isinstance(completion, str):
        return 0
    calls = 0
    for message in completion:
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            if (function.get("name") or call.get("name")) == tool_name:
                calls += 1
    return calls


def _check_reward_settings(args: Any) -> None:
    if args.scale_rewards not in ("group", "none"):
        raise ValueError(
            f"IFPOGRPOTrainer supports scale_rewards 'group' or 'none', got {args.scale_rewards!r}: "
            "IFPO centres and scales within each group"
        )
    if args.multi_objective_aggregation != "sum_then_normalize":
        raise ValueError(
            "IFPOGRPOTrainer supports multi_objective_aggregation 'sum_then_normalize', "
            f"got {args.multi_objective_aggregation!r}"
        )


__all__ = ["TRL_EPSILON", "IFPOGRPOTrainer", "count_tool_calls"]
