"""The arithmetic behind the verl `ifpo` estimator and the IFPO options, without verl installed."""

import numpy as np
import pytest
import torch

from trainer.advantages import broadcast_to_tokens, ifpo_advantages
from trainer.behaviour import CONSULTED, NOT_CONSULTED
from trainer.integrations.options import IFPOOptions, classes_from_counts, classes_from_mask, parse_options
from trainer.integrations.outcome import classes_from_field, ifpo_outcome_advantage, resolve_classes

MASK = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 1]])
REWARDS = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.5, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
UIDS = np.array(["p", "p", "p", "p"], dtype=object)


def test_outcome_advantage_sums_rewards():
    advantages, returns = ifpo_outcome_advantage(REWARDS, MASK, UIDS, IFPOOptions())

    per_rollout = ifpo_advantages(torch.tensor([1.0, 0.5, 2.0, 0.0]), list(UIDS),
                                  [CONSULTED, NOT_CONSULTED, NOT_CONSULTED, CONSULTED])
    torch.testing.assert_close(advantages, broadcast_to_tokens(per_rollout, MASK)[0])
    torch.testing.assert_close(returns, advantages)
    assert advantages.dtype == torch.float32


def test_outcome_advantage_numpy_inputs():
    advantages, _ = ifpo_outcome_advantage(REWARDS.numpy(), MASK.numpy(), UIDS, IFPOOptions())

    expected, _ = ifpo_outcome_advantage(REWARDS.double(), MASK, UIDS, IFPOOptions())
    assert isinstance(advantages, np.ndarray)
    np.testing.assert_allclose(advantages, expected.numpy())


def test_outcome_advantage_epsilon_from_options():
    options = IFPOOptions(epsilon=10.0)

    advantages, _ = ifpo_outcome_advantage(REWARDS, MASK, UIDS, options)

    per_rollout = ifpo_advantages(torch.tensor([1.0, 0.5, 2.0, 0.0]), list(UIDS),
                                  [CONSULTED, NOT_CONSULTED, NOT_CONSULTED, CONSULTED], epsilon=10.0)
    torch.testing.assert_close(advantages, broadcast_to_tokens(per_rollout, MASK)[0])


def test_outcome_advantage_needs_index():
    with pytest.raises(ValueError, match="uid"):
        ifpo_outcome_advantage(REWARDS, MASK, None, IFPOOptions())


def test_outcome_advantage_class_count_mismatch():
    with pytest.raises(ValueError, match="got 3 behaviour classes from the classes passed in for 4 rollouts"):
        ifpo_outcome_advantage(REWARDS, MASK, UIDS, IFPOOptions(), classes=["a", "b", "a"])


def test_resolve_classes_order():
    options = IFPOOptions(class_field="calls")
    field = {"calls": np.array([0, 0, 2, 1])}

    assert resolve_classes(MASK, options, classes=["x"] * 4, non_tensor_batch=field)[1] == "the classes passed in"
    assert resolve_classes(MASK, options, non_tensor_batch=field) == (
        [NOT_CONSULTED, NOT_CONSULTED, CONSULTED, CONSULTED], "the non-tensor field 'calls'")
    assert resolve_classes(MASK, options, non_tensor_batch={})[1] == "the response mask"


@pytest.mark.parametrize(("values", "scheme", "classes"), [
    ([None, [], [0.0], [0.0, 1.0]], "consulted", [NOT_CONSULTED, NOT_CONSULTED, CONSULTED, CONSULTED]),
    ([0, 1, 2, 7], "tool_calls", ["0", "1", "2", "3+"]),
    ([True, False, np.int64(4), 2.0], "tool_calls", ["1", "0", "3+", "2"]),
    (["refused", "answered"], "consulted", ["refused", "answered"]),
])
def test_classes_from_field(values, scheme, classes):
    assert classes_from_field(values, IFPOOptions(class_scheme=scheme)) == classes


@pytest.mark.parametrize(("values", "message"), [
    (["a", 1], "mixes class labels"),
    ([1, -1], "entry 1 is -1; a tool-call count must be >= 0"),
    ([1.5], r"entry 0 is 1.5 \(float\)"),
    ([{"calls": 1}], "expected a list of tool calls"),
])
def test_classes_from_field_rejects(values, message):
    with pytest.raises(ValueError, match=message):
        classes_from_field(values, IFPOOptions())


def test_mask_counts_tool_rounds():
    mask = np.array([[1, 0, 1, 0, 0, 1, 0], [1, 1, 1, 0, 0, 0, 0], [0, 1, 0, 1, 0, 1, 1], [0, 0, 0, 0, 0, 0, 0]])

    assert classes_from_mask(mask, IFPOOptions(class_scheme="tool_calls", max_calls=5)) == ["2", "0", "2", "0"]
    assert classes_from_mask(mask, IFPOOptions()) == [CONSULTED, NOT_CONSULTED, CONSULTED, NOT_CONSULTED]


def test_classes_from_counts_merges_at_max_calls():
    assert classes_from_counts([0, 1, 2, 3], "tool_calls", 2) == ["0", "1", "2+", "2+"]


def test_parse_options_defaults():
    assert parse_options(None) == IFPOOptions()
    assert parse_options({}).scope == "group"


@pytest.mark.parametrize(("value", "message"), [
    ({"scope": "prompt"}, r"algorithm\.ifpo\.scope='prompt'"),
    ({"w_min": 0}, r"algorithm\.ifpo\.w_min=0: Input should be greater than 0"),
    ({"w_min": 2.0, "w_max": 1.0}, r"w_max \(1.0\) must be >= w_min \(2.0\)"),
    ({"smooth": 1.0}, r"algorithm\.ifpo\.smooth is not an IFPO option \(allowed: scope, smoothing"),
    ({"max_calls": 0}, r"algorithm\.ifpo\.max_calls=0"),
    ([1, 2], "must be a mapping"),
])
def test_parse_options_rejects(value, message):
    with pytest.raises(ValueError, match=message):
        parse_options(value, "algorithm.ifpo")
