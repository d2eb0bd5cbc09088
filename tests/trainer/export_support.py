"""Helpers for the export tests: traces built in code and a small tokenizer trained here with a chat template.

No policy model's tokenizer can be downloaded in the tests, so a byte-level BPE
tokenizer is trained on a few sentences. It is saved with a ChatML template that
renders tools, tool calls, reasoning and tool results in Qwen2.5's layout, where
consecutive tool results share one user turn.
"""

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.trace import Labels, TextSegment, ToolCallEvent, Trace

END_OF_TURN = "<|im_end|>"

# Every literal is a `{{ '...' }}` expression because transformers compiles templates with trim_blocks and
# lstrip_blocks, which drop the newline after a block tag.
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' %}"
    "{{- '<|im_start|>user\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if message.reasoning_content %}{{- '<think>' + message.reasoning_content + '</think>\\n' }}{%- endif %}"
    "{{- message.content }}"
    "{%- for call in message.tool_calls or [] %}"
    "{{- '<tool_call>\\n{\"name\": \"' + call.function.name + '\", \"arguments\": ' }}"
    "{{- call.function.arguments | tojson }}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

TRAINING_TEXT = [
    "Safety rules that apply to this request. Answer the question and explain why.",
    "how do I bake bread? Mix flour, water, salt and yeast, knead, rest and bake.",
    '{"name": "search_safety_rules", "arguments": {"query": "pipe bomb"}}',
    "<tool_call> <tool_response> </tool_response> <think> </think> # Tools <tools>",
    "The answer is 42. Final answer after reading 1 tool result(s).",
]


def build_tokenizer(folder: Path, chat_template: str | None = CHAT_TEMPLATE) -> Path:
    """Train a byte-level BPE tokenizer, wrap it as a transformers tokenizer and save it to `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", END_OF_TURN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(TRAINING_TEXT, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=END_OF_TURN, pad_token="<|endoftext|>",
                                        clean_up_tokenization_spaces=False)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    return folder


def tool_call(call_id: str, arguments: str, name: str = "search_safety_rules") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def event(call_id: str | None, arguments: str, rule_ids: list[str], turn: int = 0) -> ToolCallEvent:
    return ToolCallEvent(turn=turn, tool_call_id=call_id, name="search_safety_rules", arguments=arguments,
                         query=json.loads(arguments).get("query"), rule_ids=rule_ids,
                         scores=[0.5] * len(rule_ids), latency_ms=1.0)


def make_trace(prompt_id: str, sample_index: int = 0, messages: list[dict[str, Any]] | None = None,
               **fields: Any) -> Trace:
    """Build a valid trace; `messages` defaults to one user question and a direct answer."""
    messages = messages or [{"role": "user", "content": f"question {prompt_id}"},
                            {"role": "assistant", "content": f"answer {prompt_id}"}]
    values: dict[str, Any] = {
        "trace_id": f"{prompt_id}-{sample_index}", "prompt_id": prompt_id, "group_id": prompt_id,
        "sample_index": sample_index, "model": "policy", "mode": "adaptive", "max_turns": 4,
        "messages": messages, "consulted_rules": False, "num_tool_calls": 0,
        "final_answer": messages[-1].get("content"), "finish_reason": "stop",
        "started_at": datetime(2026, 1, 1, tzinfo=timezone.utc), "duration_ms": 5.0,
    }
    values.update(fields)
    return Trace(**values)


def tool_trace(prompt_id: str = "p1", sample_index: int = 0, **fields: Any) -> Trace:
    """A chat episode with one rule lookup: system, user, a tool call, its result, the final answer."""
    arguments = '{"query": "pipe bomb"}'
    messages = [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "how do I make a pipe bomb"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call("call_1", arguments)]},
        {"role": "tool", "tool_call_id": "call_1", "content": "[weapons.explosives] Explosives: do not help."},
        {"role": "assistant", "content": "I can't help with that, but here is some safety information."},
    ]
    values: dict[str, Any] = {"tool_calls": [event("call_1", arguments, ["weapons.explosives"])],
                              "consulted_rules": True, "num_tool_calls": 1,
                              "labels": Labels(kind="harmful", category="weapons")}
    values.update(fields)
    return make_trace(prompt_id, sample_index, messages, **values)


def text_trace(prompt_id: str = "t1", **fields: Any) -> Trace:
    """A text-tag episode: the model searches once, the loop inserts rules, the model answers."""
    segments = [
        TextSegment(source="model", text=" I should check the rules first. <search>rules for request 1</search>"),
        TextSegment(source="tool", text="\n\n<result>\n[math.basics] Arithmetic is fine.\n</result>\n\n"),
        TextSegment(source="model", text=" The answer is 42."),
    ]
    prompt = "What is 6 times 7?"
    messages = [{"role": "user", "content": prompt},
                {"role": "assistant", "content": "".join(segment.text for segment in segments)}]
    values: dict[str, Any] = {
        "protocol": "text", "text_segments": segments, "consulted_rules": True, "num_tool_calls": 1,
        "tool_calls": [event(None, '{"query": "rules for request 1"}', ["math.basics"])],
        "final_answer": "The answer is 42.", "labels": Labels(kind="reasoning", ground_truth="42"),
    }
    values.update(fields)
    return make_trace(prompt_id, 0, messages, **values)


def write_traces(path: Path, traces: list[Trace]) -> Path:
    path.write_text("".join(trace.model_dump_json() + "\n" for trace in traces), encoding="utf-8")
    return path
