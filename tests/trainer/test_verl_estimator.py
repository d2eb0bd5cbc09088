"""The `ifpo` estimator inside the real verl 0.9.1: its registry, `compute_advantage` on CPU, config and hook.

These run in the verl venv (make install-verl), because verl 0.9.1 needs an
older transformers than the project's main venv has.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip(
    "verl", reason="verl 0.9.1 is not installed in this venv; run make install-verl, then "
    ".venv-verl/bin/python -m pytest -m verl tests/trainer",
)

from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.config import AlgoConfig  # noqa: E402
from verl.trainer.ppo import core_algos, ray_trainer  # noqa: E402

from tests.conftest import REPO_ROOT  # noqa: E402
from trainer.advantages import broadcast_to_tokens, ifpo_advantages  # noqa: E402
from trainer.behaviour import CONSULTED, NOT_CONSULTED, classes_from_response_mask  # noqa: E402
from trainer.integrations import verl_estimator  # noqa: E402

pytestmark = pytest.mark.verl

# Two groups of four rollouts with 6 response tokens. A 0 between 1s is a masked tool result.
MASK = torch.tensor([
    [1, 1, 0, 0, 1, 1],  # group a, called the tool
    [1, 1, 1, 1, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [1, 1, 1, 1, 1, 1],
    [1, 0, 1, 0, 1, 0],  # group b, two tool rounds
    [1, 0, 1, 1, 0, 0],  # group b, one tool round
    [1, 1, 1, 1, 1, 0],
    [1, 1, 0, 0, 0, 0],
], dtype=torch.int64)
REWARDS = [1.0, 1.0, 0.0, 0.0, 0.5, 2.0, 0.0, 1.0]
UIDS = ["a"] * 4 + ["b"] * 4


def make_batch(rewards=REWARDS, mask=MASK, **non_tensors: np.ndarray) -> DataProto:
    """Build a DataProto as verl's trainer has it, with the reward on each response's last kept token."""
    token_level_rewards = torch.zeros(mask.shape, dtype=torch.float32)
    last = [int(np.flatnonzero(row.numpy())[-1]) for row in mask]
    token_level_rewards[torch.arange(len(mask)), last] = torch.tensor(rewards, dtype=torch.float32)
    return DataProto.from_dict(
        tensors={"token_level_rewards": token_level_rewards, "response_mask": mask.clone()},
        non_tensors={"uid": np.array(UIDS, dtype=object), **non_tensors},
    )


def run_compute_advantage(data: DataProto, config=None, estimator: str = "ifpo") -> torch.Tensor:
    result = ray_trainer.compute_advantage(data, adv_estimator=estimator, config=config)
    return result.batch["advantages"]


def expected(classes, **options) -> torch.Tensor:
    per_rollout = ifpo_advantages(torch.tensor(REWARDS), UIDS, classes, **options)
    return broadcast_to_tokens(per_rollout, MASK)[0]


def test_registry_finds_ifpo_through_external_modules():
    code = (
        "import verl\n"
        "from verl.trainer.ppo.core_algos import get_adv_estimator_fn\n"
        "from trainer.integrations.verl_estimator import compute_ifpo_outcome_advantage\n"
        "assert get_adv_estimator_fn('ifpo') is compute_ifpo_outcome_advantage\n"
        "print('registered')\n"
    )
    env = {**os.environ, "VERL_USE_EXTERNAL_MODULES": "trainer.integrations.verl_estimator"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300, check=False)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "registered" in result.stdout


def test_registry_lacks_ifpo_without_import():
    code = (
        "from verl.trainer.ppo.core_algos import get_adv_estimator_fn\n"
        "try:\n    get_adv_estimator_fn('ifpo')\nexcept ValueError:\n    print('unknown')\n"
    )
    env = {name: value for name, value in os.environ.items() if name != "VERL_USE_EXTERNAL_MODULES"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300, check=False)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "unknown" in result.stdout


def test_compute_advantage_matches_ifpo():
    advantages = run_compute_advantage(make_batch())

    classes = classes_from_response_mask(MASK)
    assert classes == [CONSULTED, NOT_CONSULTED, NOT_CONSULTED, NOT_CONSULTED,
                       CONSULTED, CONSULTED, NOT_CONSULTED, NOT_CONSULTED]
    torch.testing.assert_close(advantages, expected(classes))


def test_compute_advantage_hand_computed():
    advantages = run_compute_advantage(make_batch())

    # Group a: rewards 1, 1, 0, 0 give GRPO ±0.5 / sqrt(1/3) = ±0.866; one consulted rollout of four
    # gets weight 4 / (2 * 1) = 2, the other three 4 / (2 * 3) = 2/3.
    grpo = 0.5 / np.sqrt(1 / 3)
    per_rollout = (advantages[:4].sum(dim=1) / MASK[:4].sum(dim=1)).double()
    torch.testing.assert_close(per_rollout, torch.tensor([2 * grpo, 2 / 3 * grpo, -2 / 3 * grpo, -2 / 3 * grpo]),
                               rtol=1e-5, atol=1e-5)
    assert torch.all(advantages[MASK == 0] == 0)


def test_ifpo_differs_from_grpo():
    ifpo = run_compute_advantage(make_batch())
    grpo = run_compute_advantage(make_batch(), estimator="grpo")

    assert not torch.allclose(ifpo, grpo)
    # Weights never change a sign.
    assert torch.all(torch.sign(ifpo) == torch.sign(grpo))


def test_options_from_dictconfig():
    config = OmegaConf.create({"norm_adv_by_std_in_grpo": True, "ifpo": {"w_max": 1.5, "smoothing": 0.5}})
    OmegaConf.set_struct(config, True)

    advantages = run_compute_advantage(make_batch(), config=config)

    torch.testing.assert_close(advantages, expected(classes_from_response_mask(MASK), w_max=1.5, smoothing=0.5))


def test_options_from_verl_command_line():
    from hydra import compose, initialize_config_dir

    config_dir = os.path.join(os.path.dirname(ray_trainer.__file__), "..", "config")
    overrides = ["algorithm.adv_estimator=ifpo", "+algorithm.ifpo.scope=batch", "+algorithm.ifpo.w_max=1.2"]
    with initialize_config_dir(config_dir=os.path.abspath(config_dir), version_base=None):
        config = compose("ppo_trainer", overrides=overrides)

    advantages = run_compute_advantage(make_batch(), config=config.algorithm,
                                       estimator=config.algorithm.adv_estimator)

    torch.testing.assert_close(advantages, expected(classes_from_response_mask(MASK), scope="batch", w_max=1.2))


def test_batch_scope_and_tool_calls_scheme():
    config = OmegaConf.create({"ifpo": {"scope": "batch", "class_scheme": "tool_calls", "max_calls": 2}})

    advantages = run_compute_advantage(make_batch(), config=config)

    # Tool rounds per row from the mask: 1, 0, 0, 0, 2, 1, 0, 0.
    classes = ["1", "0", "0", "0", "2+", "1", "0", "0"]
    torch.testing.assert_close(advantages, expected(classes, scope="batch"))


def test_norm_adv_read_from_config():
    config = OmegaConf.create({"norm_adv_by_std_in_grpo": False})

    advantages = run_compute_advantage(make_batch(), config=config)

    torch.testing.assert_close(advantages, expected(classes_from_response_mask(MASK), normalize_std=False))


def test_algo_config_without_ifpo_key():
    advantages = run_compute_advantage(make_batch(), config=AlgoConfig(adv_estimator="ifpo"))

    torch.testing.assert_close(advantages, expected(classes_from_response_mask(MASK)))


def test_invalid_option_names_key():
    config = OmegaConf.create({"ifpo": {"scope": "prompt"}})

    with pytest.raises(ValueError, match=r"algorithm\.ifpo\.scope='prompt'"):
        run_compute_advantage(make_batch(), config=config)


def test_missing_uid_is_an_error():
    data = make_batch()
    data.non_tensor_batch.pop("uid")

    with pytest.raises(ValueError, match="uid"):
        run_compute_advantage(data)


def test_classes_passed_as_keyword():
    fn = core_algos.get_adv_estimator_fn("ifpo")
    data = make_batch()
    classes = ["x", "y", "y", "y", "x", "x", "x", "y"]

    advantages, returns = fn(token_level_rewards=data.batch["token_level_rewards"],
                             response_mask=data.batch["response_mask"], index=data.non_tensor_batch["uid"],
                             behaviour_classes=classes)

    torch.testing.assert_close(advantages, expected(classes))
    torch.testing.assert_close(returns, advantages)


def test_hook_reads_tool_rewards_field():
    from trainer.integrations import verl_hook  # noqa: F401  (wraps ray_trainer.compute_advantage)

    # By the mask, rows 0, 4 and 5 called the tool. By the field, rows 1 and 2 did.
    tool_rewards = np.empty(8, dtype=object)
    tool_rewards[:] = [[], [0.0], [0.0, 0.0], None, [], [], [], []]
    advantages = run_compute_advantage(make_batch(tool_rewards=tool_rewards))

    classes = [NOT_CONSULTED, CONSULTED, CONSULTED, NOT_CONSULTED] + [NOT_CONSULTED] * 4
    torch.testing.assert_close(advantages, expected(classes))


def test_hook_falls_back_to_mask():
    from trainer.integrations import verl_hook  # noqa: F401

    advantages = run_compute_advantage(make_batch())

    torch.testing.assert_close(advantages, expected(classes_from_response_mask(MASK)))
    assert verl_estimator.current_non_tensor_batch.get() is None


def test_hook_uses_custom_label_field():
    from trainer.integrations import verl_hook  # noqa: F401

    labels = np.array(["refused", "answered", "answered", "answered", "x", "y", "z", "z"], dtype=object)
    config = OmegaConf.create({"ifpo": {"class_field": "behaviour"}})
    advantages = run_compute_advantage(make_batch(behaviour=labels), config=config)

    torch.testing.assert_close(advantages, expected(list(labels)))


def test_hook_installs_through_external_modules():
    code = (
        "import verl\n"
        "from verl.trainer.ppo import ray_trainer\n"
        "from verl.trainer.ppo.core_algos import get_adv_estimator_fn\n"
        "assert getattr(ray_trainer.compute_advantage, '_ifpo_passes_non_tensor_batch', False)\n"
        "get_adv_estimator_fn('ifpo')\n"
        "print('hooked')\n"
    )
    env = {**os.environ, "VERL_USE_EXTERNAL_MODULES": "trainer.integrations.verl_hook"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300, check=False)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "hooked" in result.stdout
