"""The IFPO advantage estimator for verl 0.9.1, registered as `ifpo` when this module is imported.

Load it in a verl run with

    VERL_USE_EXTERNAL_MODULES=trainer.integrations.verl_estimator  (verl imports it on `import verl`)
    algorithm.adv_estimator=ifpo
    +algorithm.ifpo.scope=group  +algorithm.ifpo.w_max=4.0  ...  (optional; keys of `IFPOOptions`)

In verl 0.9.1, `ray_trainer.compute_advantage` calls an estimator registered
under a new name with `token_level_rewards`, `response_mask` and `config` (the
`algorithm` section of the run's config, or None). It adds `index` (the `uid`
of each rollout's prompt) and `reward_baselines` when the batch has them. It
passes neither `epsilon` nor `norm_adv_by_std_in_grpo`, and it passes the
non-tensor batch only to its own GDPO estimator. So, by default, the
behaviour classes come from the response mask. `trainer.integrations.verl_hook`
passes the non-tensor batch through in the legacy trainer; see there.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from verl.trainer.ppo.core_algos import register_adv_est

from trainer.integrations.options import IFPOOptions, parse_options
from trainer.integrations.outcome import ifpo_outcome_advantage

ESTIMATOR_NAME = "ifpo"
CONFIG_KEY = "ifpo"

# The non-tensor batch of the `compute_advantage` call in progress, set by `verl_hook`.
current_non_tensor_batch: ContextVar[Any] = ContextVar("ifpo_non_tensor_batch", default=None)


@register_adv_est(ESTIMATOR_NAME)
def compute_ifpo_outcome_advantage(
    token_level_rewards: Any,
    response_mask: Any,
    index: Any = None,
    epsilon: float | None = None,
    norm_adv_by_std_in_grpo: bool | None = None,
    config: Any = None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """Compute IFPO advantages for outcome rewards, with the arguments of verl's GRPO estimator.

    Returns `(advantages, returns)`, equal tensors of shape (batch, response_length).
    Arguments left as None come from `config`: `epsilon` from `config.ifpo.epsilon`
    (else 1e-6) and `norm_adv_by_std_in_grpo` from `config.norm_adv_by_std_in_grpo`
    (else True). Classes come from the keyword `behaviour_classes` when given,
    else from the non-tensor field `config.ifpo.class_field` when the batch
    reaches the estimator (keyword `non_tensor_batch`, or `verl_hook`), else from the
    response mask. Other keywords that verl passes (`reward_baselines`) are ignored.
    """
    options = options_from_config(config)
    if norm_adv_by_std_in_grpo is None:
        norm_adv_by_std_in_grpo = bool(_config_get(config, "norm_adv_by_std_in_grpo", True))
    non_tensor_batch = kwargs.get("non_tensor_batch")
    if non_tensor_batch is None:
        non_tensor_batch = current_non_tensor_batch.get()

    return ifpo_outcome_advantage(
        token_level_rewards, response_mask, index, options,
        normalize_std=norm_adv_by_std_in_grpo, epsilon=epsilon,
        classes=kwargs.get("behaviour_classes"), non_tensor_batch=non_tensor_batch,
    )


def options_from_config(config: Any) -> IFPOOptions:
    """Read `IFPOOptions` from the `ifpo` key of verl's algorithm config (a DictConfig, an AlgoConfig, a dict or None).

    verl's `AlgoConfig` dataclass has no `ifpo` field, so options only reach the
    estimator through the DictConfig that verl's trainers pass (`+algorithm.ifpo.<key>=...`).
    """
    return parse_options(_config_get(config, CONFIG_KEY, None), "algorithm.ifpo")


def _config_get(config: Any, key: str, default: Any) -> Any:
    if config is None or not hasattr(config, "get"):
        return default
    value = config.get(key, default)
    return default if value is None else value


__all__ = ["CONFIG_KEY", "ESTIMATOR_NAME", "compute_ifpo_outcome_advantage", "current_non_tensor_batch",
           "options_from_config"]
