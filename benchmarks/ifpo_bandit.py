"""GRPO versus IFPO on a simulated contextual bandit: when does the policy consult the rules?

Each prompt is one of three kinds, and the only action is whether to consult
the rules before answering:
- harmful: consulting raises the chance of a safe answer (reward 1 if safe);
- benign: the answer is helpful (reward 1) with the same chance either way,
  and consulting costs a little;
- reasoning: the answer is correct (reward 1) with the same chance either
  way; consulting costs `--reasoning-cost` (0 by default).

The policy consults with probability sigmoid(b + w_kind). The bias b is shared
by all kinds, so a push on harmful prompts also moves benign and reasoning
prompts, as shared weights do in a language model. Every step samples
`--prompts` prompts, `--group-size` rollouts each, scores them, computes
advantages with `trainer.advantages.grpo_advantages` or `ifpo_advantages`
(group = prompt, class = consulted or not) and takes one REINFORCE step with
the exact gradient of the log-probability (plain SGD or Adam).

Both methods run from the same seeds with common random numbers: the same
prompt kinds, and the same uniform draws behind every action and reward, so
they differ only through the policy. Consult rates are the policy's exact
probabilities, and the expected reward is exact under the prompt mix.

Prints a Markdown table (mean ± std over seeds), writes JSON and a PNG plot.
Run: .venv/bin/python benchmarks/ifpo_bandit.py [--seeds 10] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError, model_validator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ifpo_bandit_report import paired_difference, plot_curves, summarize, table_markdown  # noqa: E402

from rule_service.index import write_atomic  # noqa: E402
from trainer.advantages import grpo_advantages, ifpo_advantages  # noqa: E402

KINDS = ("harmful", "benign", "reasoning")
METHODS = ("grpo", "ifpo")
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results"


class BanditConfig(BaseModel):
    """Reward model of the bandit. Every probability is the chance of reward 1, before any consult cost."""

    p_safe_consult: float = Field(0.9, ge=0, le=1, description="harmful: P(safe answer) after consulting")
    p_safe_direct: float = Field(0.5, ge=0, le=1, description="harmful: P(safe answer) without consulting")
    p_benign_ok: float = Field(0.9, ge=0, le=1, description="benign: P(helpful answer), either way")
    benign_cost: float = Field(0.05, ge=0, le=1, description="benign: reward subtracted for consulting")
    p_reasoning_ok: float = Field(0.6, ge=0, le=1, description="reasoning: P(correct answer), either way")
    reasoning_cost: float = Field(0.0, ge=0, le=1, description="reasoning: reward subtracted for consulting")
    mix: tuple[float, float, float] = Field((1 / 3, 1 / 3, 1 / 3), description="share of harmful, benign, reasoning")

    @model_validator(mode="after")
    def _check_mix(self) -> BanditConfig:
        if any(share < 0 for share in self.mix) or not np.isclose(sum(self.mix), 1.0):
            raise ValueError(f"mix must hold three shares >= 0 that sum to 1, got {self.mix}")
        return self

    def success_probability(self) -> np.ndarray:
        """P(reward 1) of shape (kind, action), action 0 = answer directly, 1 = consult."""
        return np.array([
            [self.p_safe_direct, self.p_safe_consult],
            [self.p_benign_ok, self.p_benign_ok],
            [self.p_reasoning_ok, self.p_reasoning_ok],
        ])

    def consult_cost(self) -> np.ndarray:
        return np.array([0.0, self.benign_cost, self.reasoning_cost])

    def mean_reward(self) -> np.ndarray:
        """Expected reward of shape (kind, action)."""
        mean = self.success_probability().copy()
        mean[:, 1] -= self.consult_cost()
        return mean


class TrainConfig(BaseModel):
    seeds: int = Field(10, ge=1, le=1000)
    steps: int = Field(300, ge=1, le=100_000)
    group_size: int = Field(8, ge=2, le=1024, description="rollouts per prompt; GRPO needs at least 2")
    prompts: int = Field(24, ge=1, le=4096, description="prompts per step")
    lr: float = Field(0.5, gt=0, le=100)
    optimizer: Literal["sgd", "adam"] = "sgd"
    init_consult: float = Field(0.5, gt=0, lt=1, description="consult probability of every kind at step 0")
    normalize_std: bool = True


class Policy:
    """Logistic consult policy with parameters [b, w_harmful, w_benign, w_reasoning]."""

    def __init__(self, init_consult: float) -> None:
        self.theta = np.zeros(1 + len(KINDS))
        self.theta[0] = np.log(init_consult / (1 - init_consult))

    def consult_probability(self) -> np.ndarray:
        """P(consult) for every kind, shape (kind,)."""
        logits = self.theta[0] + self.theta[1:]
        return 1.0 / (1.0 + np.exp(-logits))

    def log_prob_gradient(self, kinds: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """d log pi(action | kind) / d theta for every rollout, shape (rollout, parameter).

        For a Bernoulli with p = sigmoid(logit), d log pi / d logit = action - p,
        and d logit / d theta is 1 on the bias and on the rollout's own kind.
        """
        residual = actions - self.consult_probability()[kinds]
        gradient = np.zeros((len(kinds), len(self.theta)))
        gradient[:, 0] = residual
        gradient[np.arange(len(kinds)), 1 + kinds] = residual
        return gradient


class Adam:
    def __init__(self, size: int, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = np.zeros(size)
        self.v = np.zeros(size)
        self.t = 0

    def step(self, gradient: np.ndarray) -> np.ndarray:
        """Return the ascent step for `gradient`."""
        self.t += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * gradient
        self.v = self.beta2 * self.v + (1 - self.beta2) * gradient**2
        m_hat = self.m / (1 - self.beta1**self.t)
        v_hat = self.v / (1 - self.beta2**self.t)
        return self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def compute_advantages(method: str, rewards: np.ndarray, groups: np.ndarray, actions: np.ndarray,
                       normalize_std: bool) -> np.ndarray:
    if method == "grpo":
        return grpo_advantages(rewards, groups, normalize_std=normalize_std)
    return ifpo_advantages(rewards, groups, actions, normalize_std=normalize_std)


def train(method: str, seed: int, bandit: BanditConfig, config: TrainConfig) -> dict[str, np.ndarray]:
    """Train one policy and return its per-step consult probabilities, expected reward and sampled reward.

    `consult` and `expected_reward` have one row per step plus the initial
    policy; `batch_reward` has one value per step.
    """
    # One stream per source of randomness, so both methods see the same kinds and uniform draws.
    kind_rng, action_rng, reward_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    policy = Policy(config.init_consult)
    adam = Adam(len(policy.theta), config.lr) if config.optimizer == "adam" else None
    success, cost, mix = bandit.success_probability(), bandit.consult_cost(), np.array(bandit.mix)
    mean_reward = bandit.mean_reward()

    consult = np.empty((config.steps + 1, len(KINDS)))
    expected_reward = np.empty(config.steps + 1)
    batch_reward = np.empty(config.steps)
    groups = np.repeat(np.arange(config.prompts), config.group_size)

    for step in range(config.steps + 1):
        probability = policy.consult_probability()
        consult[step] = probability
        expected_reward[step] = mix @ (probability * mean_reward[:, 1] + (1 - probability) * mean_reward[:, 0])
        if step == config.steps:
            break

        kinds = np.repeat(kind_rng.choice(len(KINDS), size=config.prompts, p=mix), config.group_size)
        actions = (action_rng.random(len(kinds)) < probability[kinds]).astype(np.int64)
        rewards = (reward_rng.random(len(kinds)) < success[kinds, actions]) - cost[kinds] * actions
        batch_reward[step] = rewards.mean()

        advantages = compute_advantages(method, rewards, groups, actions, config.normalize_std)
        gradient = advantages @ policy.log_prob_gradient(kinds, actions) / len(kinds)
        policy.theta += adam.step(gradient) if adam else config.lr * gradient

    return {"consult": consult, "expected_reward": expected_reward, "batch_reward": batch_reward}


def optimum_reward(bandit: BanditConfig) -> float:
    """Expected reward of the best deterministic policy: per kind, the better action."""
    return float(np.array(bandit.mix) @ bandit.mean_reward().max(axis=1))


def run_benchmark(bandit: BanditConfig, config: TrainConfig) -> dict:
    """Train every method on every seed and return the JSON-ready summary."""
    started = time.perf_counter()
    methods = {}
    for method in METHODS:
        runs = [train(method, seed, bandit, config) for seed in range(config.seeds)]
        methods[method] = summarize(runs, KINDS)
    return {
        "bandit": bandit.model_dump(),
        "train": config.model_dump(),
        "kinds": list(KINDS),
        "optimum_expected_reward": optimum_reward(bandit),
        "methods": methods,
        "paired_difference": {"ifpo_minus_grpo": paired_difference(methods["ifpo"], methods["grpo"])},
        "runtime_s": time.perf_counter() - started,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--seeds", type=int, default=10, help="Number of seeds (0 .. seeds-1); both methods use each one.")
    add("--steps", type=int, default=300, help="Policy-gradient steps per run.")
    add("--group-size", type=int, default=8, help="Rollouts per prompt (G).")
    add("--prompts", type=int, default=24, help="Prompts per step; each prompt's kind is drawn from --mix.")
    add("--lr", type=float, default=0.5, help="Learning rate.")
    add("--optimizer", choices=("sgd", "adam"), default="sgd", help="Plain SGD or Adam on the policy parameters.")
    add("--init-consult", type=float, default=0.5, help="Consult probability of every kind at step 0.")
    add("--no-std", action="store_true", help="Do not divide advantages by the group's reward std.")
    add("--p-safe-consult", type=float, default=0.9, help="Harmful: probability of a safe answer after consulting.")
    add("--p-safe-direct", type=float, default=0.5, help="Harmful: probability of a safe answer without consulting.")
    add("--p-benign-ok", type=float, default=0.9, help="Benign: probability of a helpful answer, either way.")
    add("--benign-cost", type=float, default=0.05, help="Benign: reward subtracted when the policy consults.")
    add("--p-reasoning-ok", type=float, default=0.6, help="Reasoning: probability of a correct answer, either way.")
    add("--reasoning-cost", type=float, default=0.0, help="Reasoning: reward subtracted when the policy consults.")
    add("--mix", default="1/3,1/3,1/3", help="Shares of harmful,benign,reasoning prompts, e.g. 0.5,0.25,0.25.")
    add("--output-dir", type=Path, default=DEFAULT_OUTPUT, help="Folder for ifpo_bandit.json and ifpo_bandit.png.")
    return parser


def parse_mix(text: str) -> tuple[float, ...]:
    parts = text.split(",")
    try:
        shares = tuple(parse_fraction(part) for part in parts)
    except (ValueError, ZeroDivisionError) as error:
        raise ValueError(f"--mix must be three comma-separated numbers or fractions, got {text!r}") from error
    if len(shares) != 3:
        raise ValueError(f"--mix must have 3 shares (harmful,benign,reasoning), got {len(shares)} in {text!r}")
    return shares


def parse_fraction(text: str) -> float:
    numerator, _, denominator = text.strip().partition("/")
    return float(numerator) / float(denominator) if denominator else float(numerator)


def configs_from_args(args: argparse.Namespace) -> tuple[BanditConfig, TrainConfig]:
    bandit = BanditConfig(
        p_safe_consult=args.p_safe_consult, p_safe_direct=args.p_safe_direct, p_benign_ok=args.p_benign_ok,
        benign_cost=args.benign_cost, p_reasoning_ok=args.p_reasoning_ok, reasoning_cost=args.reasoning_cost,
        mix=parse_mix(args.mix),
    )
    config = TrainConfig(
        seeds=args.seeds, steps=args.steps, group_size=args.group_size, prompts=args.prompts, lr=args.lr,
        optimizer=args.optimizer, init_consult=args.init_consult, normalize_std=not args.no_std,
    )
    return bandit, config


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark from command-line arguments, write JSON and PNG, print the table and return the summary."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        bandit, config = configs_from_args(args)
    except (ValidationError, ValueError) as error:
        parser.error(f"invalid option: {error}")  # exits with status 2

    summary = run_benchmark(bandit, config)
    summary["table"] = table_markdown(summary)
    json_path = args.output_dir / "ifpo_bandit.json"
    png_path = args.output_dir / "ifpo_bandit.png"
    write_atomic(json_path, json.dumps(summary, indent=1).encode())
    plot_curves(summary, png_path)

    print(summary["table"])
    print(f"\noptimum expected reward {summary['optimum_expected_reward']:.3f}; "
          f"{config.seeds} seeds x {config.steps} steps x {len(METHODS)} methods in {summary['runtime_s']:.1f} s")
    print(f"wrote {json_path} and {png_path}")
    return summary


if __name__ == "__main__":
    main()
