"""`IFPOGRPOTrainer`: real TRL 1.16 training steps on a tiny random model, with the advantages it used checked.

The model is a 2-layer Qwen2 with random weights and the tokenizer is trained
here (tests.trainer.export_support), so nothing is downloaded. Rewards and
classes are drawn by the test's reward and behaviour functions, which record
them, and a subclass records the inputs that each step returned.
"""

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
from trl import GRPOConfig
from trl.chat_template_utils import qwen2_5_chat_template

from agent.adapters.trl import make_trl_tool
from agent.clients import RuleClient
from rule_service.tool import TOOL_NAME
from tests.trainer.export_support import build_tokenizer
from trainer.advantages import grpo_advantages, ifpo_advantages
from trainer.behaviour import CONSULTED, NOT_CONSULTED, classes_from_response_mask
from trainer.integrations.trl_trainer import TRL_EPSILON, IFPOGRPOTrainer, count_tool_calls

NUM_GENERATIONS = 4
BATCH = 8


class RecordingTrainer(IFPOGRPOTrainer):
    """Keeps the inputs dict of every generation step, as the loss received it."""

    def __init__(self, *args, **kwargs):
        self.steps = []
        super().__init__(*args, **kwargs)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        step = {"advantages": output["advantages"].detach().clone()}
        if "tool_mask" in output:
            step["mask"] = output["completion_mask"] * output["tool_mask"]
        self.steps.append(step)
        return output


class ScriptedToolTrainer(RecordingTrainer):
    """Replaces the model's sampling with fixed text: the first completion of each group calls the rule tool.

    Everything after sampling is TRL's own: parsing the tool call, running the
    tool (here over HTTP against the live rule service), the reply after the
    tool result, rewards and the loss. A randomly initialised model would
    never write a parsable tool call.
    """

    CALL = ('<tool_call>\n{"name": "search_safety_rules", "arguments": {"query": "how do I make a pipe bomb", '
            '"top_k": 1}}\n</tool_call><|im_end|>')
    ANSWER = "I can't help with that.<|im_end|>"

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        first_turn = len(prompt_ids) == BATCH
        texts = [self.CALL if first_turn and index % NUM_GENERATIONS == 0 else self.ANSWER
                 for index in range(len(prompt_ids))]
        return [self.processing_class.encode(text, add_special_tokens=False) for text in texts], None


class Recorder:
    """A reward function and a behaviour function that draw values and record them per step."""

    def __init__(self, seed: int = 0, unscorable: int | None = None):
        self.rng = random.Random(seed)
        self.unscorable = unscorable
        self.rewards: list[list[float | None]] = []
        self.classes: list[list[str]] = []
        self.columns: list[list[str]] = []

    def reward(self, prompts, completions, **kwargs):
        values = [round(self.rng.uniform(-1, 2), 3) for _ in completions]
        if self.unscorable is not None:
            values[self.unscorable] = None
        self.rewards.append(values)
        # TRL passes dataset columns to reward functions, repeated for each completion.
        self.columns.append(kwargs["behaviour"])
        return values

    def behaviour(self, prompts, completions, **kwargs):
        # One completion in four consulted, so each group of four is unbalanced.
        classes = [CONSULTED if index % NUM_GENERATIONS == 0 else NOT_CONSULTED for index in range(len(completions))]
        self.classes.append(classes)
        return classes


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-qwen2")
    build_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.eos_token_id)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    return folder


def dataset(size: int = 16) -> Dataset:
    prompts = [[{"role": "user", "content": f"how do I bake bread {index}?"}] for index in range(size)]
    labels = [CONSULTED if index % 2 else NOT_CONSULTED for index in range(size)]
    return Dataset.from_dict({"prompt": prompts, "behaviour": labels})


def make_trainer(folder: Path, tmp_path: Path, reward, trainer_class=RecordingTrainer, chat_template=None,
                 prompts: int = 16, **options) -> RecordingTrainer:
    config_options = {key: options.pop(key) for key in ("scale_rewards", "max_completion_length") if key in options}
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=BATCH, num_generations=NUM_GENERATIONS,
        max_completion_length=config_options.pop("max_completion_length", 8), max_steps=options.pop("max_steps", 2),
        learning_rate=1e-3, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=0,
        disable_tqdm=True, **config_options,
    )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return trainer_class(model=str(folder), reward_funcs=reward, args=args, train_dataset=dataset(prompts),
                         processing_class=tokenizer, **options)


def expected_advantages(rewards, classes, **options) -> np.ndarray:
    """IFPO over one step's rewards, leaving unscorable (None) completions at 0 as TRL does."""
    values = np.array([np.nan if reward is None else reward for reward in rewards])
    groups = np.arange(len(values)) // NUM_GENERATIONS
    keep = ~np.isnan(values)
    result = np.zeros(len(values))
    result[keep] = ifpo_advantages(values[keep], groups[keep], np.array(classes)[keep],
                                   epsilon=TRL_EPSILON, **options)
    return result


def test_two_steps_use_ifpo_advantages(tiny_model, tmp_path):
    recorder = Recorder()
    trainer = make_trainer(tiny_model, tmp_path, recorder.reward, behaviour_fn=recorder.behaviour)

    trainer.train()

    assert trainer.state.global_step == 2
    assert len(trainer.steps) == 2
    for step, rewards, classes in zip(trainer.steps, recorder.rewards, recorder.classes, strict=True):
        expected = expected_advantages(rewards, classes)
        np.testing.assert_allclose(step["advantages"].numpy(), expected, rtol=1e-5, atol=1e-6)
        grpo = grpo_advantages(np.array(rewards), np.arange(BATCH) // NUM_GENERATIONS, epsilon=TRL_EPSILON)
        assert not np.allclose(step["advantages"].numpy(), grpo, atol=1e-4)


def test_logged_advantages_are_ifpo(tiny_model, tmp_path):
    recorder = Recorder(seed=1)
    trainer = make_trainer(tiny_model, tmp_path, recorder.reward, behaviour_fn=recorder.behaviour, max_steps=1)

    trainer.train()

    expected = expected_advantages(recorder.rewards[0], recorder.classes[0])
    np.testing.assert_allclose(list(trainer._logs["advantages"])[-BATCH:], expected, rtol=1e-5, atol=1e-6)


def test_class_column_options_and_unscorable(tiny_model, tmp_path):
    recorder = Recorder(seed=2, unscorable=1)
    options = {"w_max": 1.5, "scope": "batch"}
    # With two prompts, each batch of 2 x 4 completions contains one prompt of each class.
    trainer = make_trainer(tiny_model, tmp_path, recorder.reward, class_column="behaviour", ifpo=options,
                           scale_rewards="none", max_steps=1, prompts=2)

    trainer.train()

    classes = recorder.columns[0]
    assert len(set(classes[:NUM_GENERATIONS])) == 1
    assert set(classes) == {CONSULTED, NOT_CONSULTED}
    advantages = trainer.steps[0]["advantages"].numpy()
    np.testing.assert_allclose(advantages, expected_advantages(recorder.rewards[0], classes, normalize_std=False,
                                                               **options), rtol=1e-5, atol=1e-6)
    assert advantages[1] == 0.0


def test_no_tool_calls_is_grpo(tiny_model, tmp_path):
    recorder = Recorder(seed=3)
    trainer = make_trainer(tiny_model, tmp_path, recorder.reward, max_steps=1)

    trainer.train()

    # A random model writes no tool calls, so every completion is one class and IFPO equals GRPO.
    grpo = grpo_advantages(np.array(recorder.rewards[0]), np.arange(BATCH) // NUM_GENERATIONS, epsilon=TRL_EPSILON)
    np.testing.assert_allclose(trainer.steps[0]["advantages"].numpy(), grpo, rtol=1e-5, atol=1e-6)


def test_default_classes_from_rule_tool_calls(tiny_model, tmp_path, server):
    recorder = Recorder(seed=4)
    calls = []

    def reward(prompts, completions, **kwargs):
        calls.append([count_tool_calls(completion) for completion in completions])
        return recorder.reward(prompts, completions, **kwargs)

    # TRL parses tool calls only for chat templates in its own list, such as Qwen2.5's.
    with RuleClient(server.base_url) as rules:
        trainer = make_trainer(tiny_model, tmp_path, reward, trainer_class=ScriptedToolTrainer,
                               chat_template=qwen2_5_chat_template, tools=[make_trl_tool(rules)],
                               max_completion_length=1024, max_steps=1)
        trainer.train()

    assert calls[0] == [1, 0, 0, 0, 1, 0, 0, 0]
    classes = [CONSULTED if count else NOT_CONSULTED for count in calls[0]]
    # The rule text came back from the service and sits in the completion, masked out.
    assert classes_from_response_mask(trainer.steps[0]["mask"]) == classes
    np.testing.assert_allclose(trainer.steps[0]["advantages"].numpy(),
                               expected_advantages(recorder.rewards[0], classes), rtol=1e-5, atol=1e-6)


def test_count_tool_calls():
    call = {"type": "function", "function": {"name": TOOL_NAME, "arguments": {"query": "pipe bomb"}}}
    other = {"type": "function", "function": {"name": "calculator", "arguments": {}}}
    completion = [
        {"role": "assistant", "content": "", "tool_calls": [call, other]},
        {"role": "tool", "name": TOOL_NAME, "content": "[weapons.explosives] ..."},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "assistant", "content": "I can't help with that."},
    ]

    assert count_tool_calls(completion) == 2
    assert count_tool_calls(completion, "calculator") == 1
    assert count_tool_calls([{"role": "assistant", "content": "hi"}]) == 0
    assert count_tool_calls("plain text mentioning search_safety_rules") == 0


def test_batch_scaling_rejected(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="scale_rewards 'group' or 'none', got 'batch'"):
        make_trainer(tiny_model, tmp_path, Recorder().reward, scale_rewards="batch")


def test_both_class_sources_rejected(tiny_model, tmp_path):
    recorder = Recorder()
    with pytest.raises(ValueError, match="behaviour_fn or class_column, not both"):
        make_trainer(tiny_model, tmp_path, recorder.reward, behaviour_fn=recorder.behaviour, class_column="behaviour")


def test_invalid_ifpo_option(tiny_model, tmp_path):
    with pytest.raises(ValueError, match=r"ifpo\.w_min=-1"):
        make_trainer(tiny_model, tmp_path, Recorder().reward, ifpo={"w_min": -1})
