"""The GRPO-versus-IFPO bandit benchmark: its outputs, its table and the learning mechanics it relies on."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TINY = ["--seeds", "2", "--steps", "5", "--prompts", "6"]


def load(name: str):
    """Load a module from benchmarks/, which is a folder of scripts rather than a package."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # pydantic resolves the models' annotations through sys.modules.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bandit():
    return load("ifpo_bandit")


@pytest.fixture(scope="module")
def report():
    return load("ifpo_bandit_report")


def parse_table(text: str) -> dict[str, list[str]]:
    """Map each metric row of the printed Markdown table to its cells."""
    rows = {}
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith("| metric") or line.startswith("| ---"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def leaf(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def test_main_writes_json_and_plot(bandit, tmp_path, capsys):
    summary = bandit.main([*TINY, "--output-dir", str(tmp_path)])
    capsys.readouterr()

    written = json.loads((tmp_path / "ifpo_bandit.json").read_text())
    assert set(written) >= {"bandit", "train", "kinds", "optimum_expected_reward", "methods", "paired_difference",
                            "table", "runtime_s"}
    assert set(written["methods"]) == {"grpo", "ifpo"}
    assert written["kinds"] == ["harmful", "benign", "reasoning"]
    assert written["train"]["seeds"] == 2
    assert written["train"]["steps"] == 5
    assert written["methods"] == json.loads(json.dumps(summary["methods"]))
    assert (tmp_path / "ifpo_bandit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_consult_rates_are_probabilities(bandit, tmp_path, capsys):
    bandit.main([*TINY, "--output-dir", str(tmp_path)])
    capsys.readouterr()
    written = json.loads((tmp_path / "ifpo_bandit.json").read_text())

    for method, result in written["methods"].items():
        for kind in written["kinds"]:
            curve = np.array(result["curves"]["consult"][kind]["mean"])
            assert len(curve) == 6, (method, kind)
            assert np.all((curve >= 0) & (curve <= 1)), (method, kind)
            per_seed = result["per_seed"]["final"]["consult"][kind]
            assert len(per_seed) == 2, (method, kind)
            assert all(0 <= rate <= 1 for rate in per_seed), (method, kind)
            # Every run starts from the same policy: --init-consult for every kind.
            assert curve[0] == pytest.approx(0.5), (method, kind)
        assert result["final"]["expected_reward"]["mean"] <= written["optimum_expected_reward"] + 1e-12


def test_printed_table_matches_json(bandit, report, tmp_path, capsys):
    bandit.main([*TINY, "--output-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    written = json.loads((tmp_path / "ifpo_bandit.json").read_text())

    assert written["table"] in printed
    rows = parse_table(printed)
    assert len(rows) == 9
    for label, path in report.table_rows(written):
        grpo, ifpo, difference = rows[label]
        for cell, method in ((grpo, "grpo"), (ifpo, "ifpo")):
            statistic = leaf(written["methods"][method], path)
            assert cell == f"{statistic['mean']:.3f} ± {statistic['std']:.3f}", (label, method)
        paired = leaf(written["paired_difference"]["ifpo_minus_grpo"], path)
        assert difference == f"{paired['mean']:+.3f} ± {paired['std']:.3f}", label


def test_paired_difference_is_seed_by_seed(bandit, tmp_path, capsys):
    bandit.main([*TINY, "--output-dir", str(tmp_path)])
    capsys.readouterr()
    written = json.loads((tmp_path / "ifpo_bandit.json").read_text())

    grpo = np.array(written["methods"]["grpo"]["per_seed"]["final"]["consult"]["benign"])
    ifpo = np.array(written["methods"]["ifpo"]["per_seed"]["final"]["consult"]["benign"])
    paired = written["paired_difference"]["ifpo_minus_grpo"]["final"]["consult"]["benign"]
    assert paired["mean"] == pytest.approx(np.mean(ifpo - grpo))
    assert paired["std"] == pytest.approx(np.std(ifpo - grpo))


def test_same_seeds_give_same_results(bandit, tmp_path, capsys):
    first = bandit.main([*TINY, "--output-dir", str(tmp_path / "first")])
    second = bandit.main([*TINY, "--output-dir", str(tmp_path / "second")])
    capsys.readouterr()

    assert first["methods"] == second["methods"]


@pytest.mark.parametrize("method", ["grpo", "ifpo"])
def test_policy_learns_to_consult_when_it_helps(bandit, method):
    """Only harmful prompts, where consulting raises P(safe) from 0.5 to 0.9: consulting must rise."""
    config = bandit.TrainConfig(seeds=1, steps=60, prompts=8)
    run = bandit.train(method, 0, bandit.BanditConfig(mix=(1.0, 0.0, 0.0)), config)

    assert run["consult"][-1, 0] > 0.8
    assert run["expected_reward"][-1] > run["expected_reward"][0]


@pytest.mark.parametrize("method", ["grpo", "ifpo"])
def test_policy_stays_put_without_reward_spread(bandit, method):
    """Deterministic rewards, equal within every group, give zero advantages, so the policy never moves."""
    deterministic = bandit.BanditConfig(p_safe_consult=1, p_safe_direct=1, p_benign_ok=1, benign_cost=0,
                                        p_reasoning_ok=0, reasoning_cost=0)
    run = bandit.train(method, 3, deterministic, bandit.TrainConfig(seeds=1, steps=20, prompts=6, init_consult=0.3))

    assert np.allclose(run["consult"], 0.3)


def test_invalid_group_size_is_rejected(bandit, tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        bandit.main([*TINY, "--group-size", "1", "--output-dir", str(tmp_path)])

    message = capsys.readouterr().err
    assert raised.value.code == 2
    assert "group_size" in message
    assert "greater than or equal to 2" in message
    assert "input_value=1" in message
    assert not (tmp_path / "ifpo_bandit.json").exists()


@pytest.mark.parametrize(
    ("mix", "expected"),
    [("0.5,0.5", "must have 3 shares"), ("0.5,0.5,0.5", "sum to 1"), ("1/0,1,1", "numbers or fractions")],
)
def test_invalid_mix_is_rejected(bandit, tmp_path, capsys, mix, expected):
    with pytest.raises(SystemExit) as raised:
        bandit.main([*TINY, "--mix", mix, "--output-dir", str(tmp_path)])

    assert raised.value.code == 2
    assert expected in capsys.readouterr().err
