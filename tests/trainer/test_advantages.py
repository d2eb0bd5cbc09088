"""GRPO and IFPO advantages: the properties IFPO is defined by, on random batches, for NumPy and torch."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.advantages import broadcast_to_tokens, grpo_advantages, ifpo_advantages, ifpo_weights
from trainer.behaviour import CONSULTED, NOT_CONSULTED, classes_from_response_mask

# Rewards drawn from a few values so that ties and equal-reward groups are common.
rewards = st.one_of(st.sampled_from([0.0, 0.5, 1.0, -1.0]), st.floats(-10, 10, allow_nan=False))


@st.composite
def batches(draw, max_classes=3):
    """A batch of groups: (scores, group ids, classes)."""
    sizes = draw(st.lists(st.integers(1, 8), min_size=1, max_size=6))
    scores, groups, classes = [], [], []
    for group, size in enumerate(sizes):
        for _ in range(size):
            scores.append(draw(rewards))
            groups.append(f"prompt-{group}")
            classes.append(draw(st.integers(0, max_classes - 1)))
    return np.array(scores), groups, classes


def members(groups, group):
    return np.array([g == group for g in groups])


@given(batches())
@settings(max_examples=300, deadline=None)
def test_weights_sum_to_group_size(batch):
    _, groups, classes = batch
    weights = ifpo_weights(groups, classes)

    for group in set(groups):
        inside = members(groups, group)
        assert weights[inside].sum() == pytest.approx(inside.sum())


@given(batches())
@settings(max_examples=300, deadline=None)
def test_classes_get_equal_total_weight(batch):
    _, groups, classes = batch
    weights = ifpo_weights(groups, classes)

    for group in set(groups):
        inside = members(groups, group)
        present = sorted(set(np.array(classes)[inside]))
        totals = [weights[inside & (np.array(classes) == c)].sum() for c in present]
        assert totals == pytest.approx([inside.sum() / len(present)] * len(present))


@given(batches(max_classes=1))
@settings(max_examples=200, deadline=None)
def test_one_class_is_grpo(batch):
    scores, groups, classes = batch
    assert ifpo_advantages(scores, groups, classes) == pytest.approx(grpo_advantages(scores, groups))


@given(batches())
@settings(max_examples=300, deadline=None)
def test_signs_never_change(batch):
    scores, groups, classes = batch
    grpo = grpo_advantages(scores, groups)
    ifpo = ifpo_advantages(scores, groups, classes)

    assert np.array_equal(np.sign(grpo), np.sign(ifpo))


@given(batches(), st.booleans())
@settings(max_examples=300, deadline=None)
def test_never_nan(batch, normalize_std):
    scores, groups, classes = batch
    for epsilon in (0.0, 1e-6):
        advantages = ifpo_advantages(scores, groups, classes, normalize_std=normalize_std, epsilon=epsilon)
        assert np.all(np.isfinite(advantages))


def test_singleton_groups_get_zero():
    scores = np.array([3.0, 1.0, 0.0, 1.0])
    groups = ["a", "b", "b", "c"]

    assert grpo_advantages(scores, groups)[[0, 3]] == pytest.approx([0.0, 0.0])
    assert ifpo_advantages(scores, groups, [0, 1, 0, 1])[[0, 3]] == pytest.approx([0.0, 0.0])


def test_equal_rewards_get_zero():
    scores = np.ones(4)

    assert ifpo_advantages(scores, ["g"] * 4, [0, 0, 1, 1], epsilon=0.0) == pytest.approx(np.zeros(4))


def test_worked_example():
    # One consulting rollout among four: GRPO pushes three times toward not consulting.
    scores = np.array([1.0, 1.0, 1.0, 0.0])
    classes = [NOT_CONSULTED] * 3 + [CONSULTED]
    grpo = grpo_advantages(scores, ["g"] * 4, epsilon=0.0)
    weights = ifpo_weights(["g"] * 4, classes)

    assert grpo == pytest.approx([0.5, 0.5, 0.5, -1.5])
    assert weights == pytest.approx([4 / 6, 4 / 6, 4 / 6, 2.0])
    assert ifpo_advantages(scores, ["g"] * 4, classes, epsilon=0.0) == pytest.approx(weights * grpo)


def test_std_division_optional():
    scores = np.array([2.0, 0.0])

    assert grpo_advantages(scores, [0, 0], normalize_std=False) == pytest.approx([1.0, -1.0])
    assert grpo_advantages(scores, [0, 0], epsilon=0.0) == pytest.approx([1 / np.sqrt(2), -1 / np.sqrt(2)])


def test_batch_scope_counts_across_groups():
    groups = ["a", "a", "b", "b"]
    classes = [0, 1, 1, 1]
    weights = ifpo_weights(groups, classes, scope="batch")

    # Over the batch: one rollout of class 0 and three of class 1, two classes.
    assert weights == pytest.approx([2.0, 4 / 6, 4 / 6, 4 / 6])
    assert weights.sum() == pytest.approx(4)


def test_smoothing_moves_toward_grpo():
    groups, classes = ["g"] * 4, [0, 1, 1, 1]
    plain = ifpo_weights(groups, classes)
    smoothed = ifpo_weights(groups, classes, smoothing=2.0)
    flat = ifpo_weights(groups, classes, smoothing=1e9)

    assert smoothed.sum() == pytest.approx(4)
    assert 1.0 < smoothed[0] < plain[0]
    assert flat == pytest.approx(np.ones(4))


def test_clipping_bounds_weights():
    weights = ifpo_weights(["g"] * 5, [0, 1, 1, 1, 1], w_min=0.7, w_max=2.0)

    assert weights == pytest.approx([2.0, 0.7, 0.7, 0.7, 0.7])


def test_more_than_two_classes():
    weights = ifpo_weights(["g"] * 6, ["0", "1", "1", "2+", "2+", "2+"])

    assert weights == pytest.approx([2.0, 1.0, 1.0, 2 / 3, 2 / 3, 2 / 3])


@given(batches())
@settings(max_examples=100, deadline=None)
def test_torch_matches_numpy(batch):
    scores, groups, classes = batch
    group_index = torch.tensor([int(g.split("-")[1]) for g in groups])
    expected = ifpo_advantages(scores, groups, classes)

    result = ifpo_advantages(torch.tensor(scores, dtype=torch.float64), group_index, torch.tensor(classes))

    assert isinstance(result, torch.Tensor)
    assert result.dtype == torch.float64
    assert result.numpy() == pytest.approx(expected)


def test_tensor_keeps_dtype():
    result = grpo_advantages(torch.tensor([1.0, 0.0], dtype=torch.bfloat16), [0, 0])

    assert result.dtype == torch.bfloat16


def test_token_broadcast_shapes_and_mask():
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
    advantages, returns = broadcast_to_tokens(torch.tensor([0.5, 2.0, -1.0]), mask)

    assert advantages.shape == (3, 5)
    assert torch.equal(advantages, returns)
    assert advantages[0].tolist() == [0.5, 0.5, 0.0, 0.5, 0.0]
    assert advantages[1].tolist() == [0.0] * 5
    assert not torch.isnan(advantages).any()


def test_token_broadcast_numpy():
    advantages, returns = broadcast_to_tokens(np.array([1.0, -1.0]), np.array([[1, 0], [1, 1]]))

    assert advantages.tolist() == [[1.0, 0.0], [-1.0, -1.0]]
    assert returns is not advantages


def test_classes_from_mask():
    mask = [[1, 1, 0, 0, 1, 0], [1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 1, 1, 1, 1]]

    assert classes_from_response_mask(mask) == [CONSULTED, NOT_CONSULTED, NOT_CONSULTED, CONSULTED]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scope": "prompt"}, "scope must be"),
        ({"smoothing": -1.0}, "smoothing must be"),
        ({"w_min": 0.0}, "w_min must be > 0"),
        ({"w_min": 2.0, "w_max": 1.0}, "w_max"),
        ({"epsilon": -1e-6}, "epsilon must be"),
    ],
)
def test_invalid_options_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ifpo_advantages([1.0, 0.0], [0, 0], [0, 1], **kwargs)


def test_invalid_inputs_rejected():
    with pytest.raises(ValueError, match=r"scores\[1\] is nan"):
        grpo_advantages([1.0, float("nan")], [0, 0])
    with pytest.raises(ValueError, match="group_ids has 1 entries but there are 2 scores"):
        grpo_advantages([1.0, 0.0], [0])
    with pytest.raises(ValueError, match="classes has 3 entries"):
        ifpo_advantages([1.0, 0.0], [0, 0], [0, 1, 1])
    with pytest.raises(ValueError, match=r"shape \(batch,\)"):
        grpo_advantages([[1.0, 0.0]], [0])
    with pytest.raises(ValueError, match="response_mask must have shape"):
        broadcast_to_tokens(np.array([1.0]), np.array([1, 1]))
