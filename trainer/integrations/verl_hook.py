"""Pass verl's non-tensor batch to the `ifpo` estimator, so that classes can come from a rollout field.

verl 0.9.1 does not give custom estimators the non-tensor batch. Importing this
module (for example with VERL_USE_EXTERNAL_MODULES=trainer.integrations.verl_hook,
which also registers `ifpo`) wraps `verl.trainer.ppo.ray_trainer.compute_advantage`
so that, while it runs, the `ifpo` estimator can read `data.non_tensor_batch`.

Where it helps: the legacy trainer (`trainer.use_v1=False`) calls that function
with the whole batch. Its non-tensor fields include the agent loop's
`tool_rewards`, with one entry per tool call that returned a reward, and the
rule tool always returns 0.0. The v1 trainer, the default in 0.9.1, calls it with only
`uid` and tensors, so there the classes still come from the response mask.
Modules that bound `compute_advantage` by name before this import keep the
original function.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from verl.trainer.ppo import ray_trainer

from trainer.integrations.verl_estimator import current_non_tensor_batch

logger = logging.getLogger(__name__)

_MARK = "_ifpo_passes_non_tensor_batch"


def install() -> None:
    """Wrap `ray_trainer.compute_advantage`; a second call changes nothing."""
    original = ray_trainer.compute_advantage
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def compute_advantage(data: Any, *args: Any, **kwargs: Any) -> Any:
        token = current_non_tensor_batch.set(getattr(data, "non_tensor_batch", None))
        try:
            return original(data, *args, **kwargs)
        finally:
            current_non_tensor_batch.reset(token)

    setattr(compute_advantage, _MARK, True)
    ray_trainer.compute_advantage = compute_advantage
    logger.info("ifpo: verl's compute_advantage now passes the non-tensor batch to the ifpo estimator")


install()
