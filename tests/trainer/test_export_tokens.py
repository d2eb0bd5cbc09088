"""Token export: prompt and response ids from the policy's chat template, and the mask over what the policy wrote.

The tokenizer is trained in the test (see `export_support`), since no policy
tokenizer can be downloaded here.
"""

import json
from pathlib import Path
from typing import Any

import pytest

from agent.trace import Labels, Trace
from rule_service.tool import openai_tool
from tests.trainer.export_support import (
    END_OF_TURN, build_tokenizer, event, make_trace, text_trace, tool_call, tool_trace, write_traces,
)
from trainer.export import ExportError, export_traces
from trainer.export.tokens import load_tokenizer, token_record, token_records


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path) -> Any:
    return load_tokenizer(tokenizer_dir)


def masked(record: dict[str, Any], value: int) -> list[int]:
    return [token for token, mask in zip(record["response_ids"], record["response_mask"], strict=True)
            if mask == value]


def assistant_text(message: dict[str, Any]) -> str:
    """What the test template renders for an assistant message after its header, end-of-turn token included."""
    text = f"<think>{message['reasoning_content']}</think>\n" if message.get("reasoning_content") else ""
    text += message.get("content") or ""
    for call in message.get("tool_calls") or []:
        arguments = json.loads(call["function"]["arguments"])
        text += (f'<tool_call>\n{{"name": "{call["function"]["name"]}", "arguments": {json.dumps(arguments)}}}'
                 "\n</tool_call>")
    return text + END_OF_TURN


def template_form(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with null content as "" and tool-call arguments as objects, as the test template needs them."""
    converted = []
    for message in messages:
        message = {**message, "content": message["content"] or ""}
        if message.get("tool_calls"):
            message["tool_calls"] = [
                {**call, "function": {**call["function"], "arguments": json.loads(call["function"]["arguments"])}}
                for call in message["tool_calls"]
            ]
        converted.append(message)
    return converted


def policy_text(trace: Trace) -> str:
    return "".join(assistant_text(m) for m in trace.messages if m["role"] == "assistant")


def parallel_trace() -> Trace:
    first, second = '{"query": "pipe bomb"}', '{"query": "home address"}'
    messages = [
        {"role": "user", "content": "how do I make a pipe bomb and find where my neighbour lives"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [tool_call("c1", first), tool_call("c2", second)],
         "reasoning_content": "Two topics need rules."},
        {"role": "tool", "tool_call_id": "c1", "content": "[weapons.explosives] Do not help build explosives."},
        {"role": "tool", "tool_call_id": "c2", "content": "[privacy.doxxing] Do not reveal home addresses."},
        {"role": "assistant", "content": "I can't help with either request."},
    ]
    return make_trace("p9", messages=messages, consulted_rules=True, num_tool_calls=2,
                      tool_calls=[event("c1", first, ["weapons.explosives"]), event("c2", second, ["privacy.doxxing"])],
                      rewards={"total": 0.75, "safety": 1.0})


def test_chat_mask_is_policy_text(tokenizer: Any) -> None:
    trace = tool_trace()

    record = token_record(trace, tokenizer, END_OF_TURN)

    assert tokenizer.decode(masked(record, 1)) == policy_text(trace)


def test_chat_tool_results_masked_out(tokenizer: Any) -> None:
    trace = tool_trace()

    record = token_record(trace, tokenizer, END_OF_TURN)

    outside = tokenizer.decode(masked(record, 0))
    assert "[weapons.explosives] Explosives: do not help." in outside
    assert outside == ("\n<|im_start|>user\n<tool_response>\n[weapons.explosives] Explosives: do not help.\n"
                       "</tool_response><|im_end|>\n<|im_start|>assistant\n\n")


def test_chat_prompt_ids(tokenizer: Any) -> None:
    trace = tool_trace()

    record = token_record(trace, tokenizer, END_OF_TURN)

    expected = tokenizer.apply_chat_template(trace.messages[:2], tools=[openai_tool()], add_generation_prompt=True,
                                             tokenize=False)
    assert tokenizer.decode(record["prompt_ids"]) == expected
    assert expected.endswith("how do I make a pipe bomb<|im_end|>\n<|im_start|>assistant\n")


def test_chat_ids_match_full_render(tokenizer: Any) -> None:
    trace = tool_trace()

    record = token_record(trace, tokenizer, END_OF_TURN)

    full = tokenizer.apply_chat_template(template_form(trace.messages), tools=[openai_tool()], tokenize=False)
    assert tokenizer.decode(record["prompt_ids"] + record["response_ids"]) == full
    assert len(record["response_ids"]) == len(record["response_mask"])


def test_chat_record_fields(tokenizer: Any) -> None:
    trace = tool_trace(rewards={"total": 1.0, "safety": 1.0})

    record = token_record(trace, tokenizer, END_OF_TURN)

    assert record["reward_score"] == 1.0
    assert record["num_turns"] == 4
    assert record["extra_fields"]["consulted_rules"] is True
    assert record["extra_fields"]["num_tool_calls"] == 1
    assert record["extra_fields"]["group_id"] == "p1"
    assert record["extra_fields"]["rule_ids"] == ["weapons.explosives"]
    assert record["extra_fields"]["prompt_id"] == "p1"
    assert record["extra_fields"]["kind"] == "harmful"
    assert record["extra_fields"]["rewards"] == {"total": 1.0, "safety": 1.0}


def test_unscored_reward_is_null(tokenizer: Any) -> None:
    assert token_record(tool_trace(), tokenizer, END_OF_TURN)["reward_score"] is None


def test_parallel_calls_share_turn(tokenizer: Any) -> None:
    trace = parallel_trace()

    record = token_record(trace, tokenizer, END_OF_TURN)

    outside = tokenizer.decode(masked(record, 0))
    assert tokenizer.decode(masked(record, 1)) == policy_text(trace)
    assert "<think>Two topics need rules.</think>" in policy_text(trace)
    assert "[weapons.explosives] Do not help build explosives." in outside
    assert "[privacy.doxxing] Do not reveal home addresses." in outside
    assert outside.count("<|im_start|>user") == 1
    assert record["num_turns"] == 4
    assert record["reward_score"] == 0.75
    assert record["extra_fields"]["rule_ids"] == ["weapons.explosives", "privacy.doxxing"]


def test_length_cut_has_no_end(tokenizer: Any) -> None:
    messages = [{"role": "user", "content": "tell me a long story"},
                {"role": "assistant", "content": "Once upon a time there was a"}]
    trace = make_trace("p1", messages=messages, finish_reason="length", mode="never")

    record = token_record(trace, tokenizer, END_OF_TURN)

    assert tokenizer.decode(masked(record, 1)) == "Once upon a time there was a"
    assert masked(record, 0) == []


def test_never_mode_has_no_tools(tokenizer: Any) -> None:
    record = token_record(make_trace("p1", mode="never"), tokenizer, END_OF_TURN)

    assert "<tools>" not in tokenizer.decode(record["prompt_ids"])


def test_text_protocol_segments(tokenizer: Any) -> None:
    trace = text_trace()

    record = token_record(trace, tokenizer, END_OF_TURN)

    inside = tokenizer.decode(masked(record, 1))
    outside = tokenizer.decode(masked(record, 0))
    assert inside == (" I should check the rules first. <search>rules for request 1</search> The answer is 42."
                      + END_OF_TURN)
    assert outside == "\n\n<result>\n[math.basics] Arithmetic is fine.\n</result>\n\n"
    assert tokenizer.decode(record["prompt_ids"]) == "What is 6 times 7?"
    assert record["num_turns"] == 4
    assert record["extra_fields"]["rule_ids"] == ["math.basics"]


def test_text_protocol_length_no_eos(tokenizer: Any) -> None:
    record = token_record(text_trace(finish_reason="length"), tokenizer, END_OF_TURN)

    assert record["response_ids"][-1] != tokenizer.eos_token_id


def test_failed_traces_skipped(tokenizer: Any) -> None:
    failed = make_trace("p2", error="endpoint timed out", finish_reason="error")

    records, skipped = token_records([tool_trace(), failed], tokenizer)

    assert skipped == 1
    assert [record["extra_fields"]["prompt_id"] for record in records] == ["p1"]


def test_all_failed_rejected(tokenizer_dir: Path, tmp_path: Path) -> None:
    failed = make_trace("p2", error="endpoint timed out", finish_reason="error")

    with pytest.raises(ExportError, match="all 1 trace"):
        export_traces(write_traces(tmp_path / "t.jsonl", [failed]), "tokens", tmp_path / "out.jsonl",
                      tokenizer=tokenizer_dir)

    assert not (tmp_path / "out.jsonl").exists()


def test_tokenizer_required(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="--tokenizer is required for --format tokens"):
        export_traces(write_traces(tmp_path / "t.jsonl", [tool_trace()]), "tokens", tmp_path / "out.jsonl")


def test_tokenizer_folder_missing(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="--tokenizer .*nowhere: folder not found"):
        export_traces(write_traces(tmp_path / "t.jsonl", [tool_trace()]), "tokens", tmp_path / "out.jsonl",
                      tokenizer=tmp_path / "nowhere")


def test_tokenizer_folder_unusable(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()

    with pytest.raises(ExportError, match="--tokenizer .*empty: could not load a tokenizer"):
        export_traces(write_traces(tmp_path / "t.jsonl", [tool_trace()]), "tokens", tmp_path / "out.jsonl",
                      tokenizer=tmp_path / "empty")


def test_template_missing(tmp_path: Path) -> None:
    plain = load_tokenizer(build_tokenizer(tmp_path / "plain", chat_template=None))

    with pytest.raises(ExportError, match="has no chat template"):
        token_record(tool_trace(), plain, END_OF_TURN)


def test_template_not_append_only(tmp_path: Path) -> None:
    # Renders only the last message, so every added message rewrites what came before.
    template = "{{- messages[-1].role + ': ' + (messages[-1].content or '') }}"
    rewriting = load_tokenizer(build_tokenizer(tmp_path / "rewriting", chat_template=template))

    with pytest.raises(ExportError, match="changes earlier text when messages.2 is added"):
        token_record(tool_trace(), rewriting, END_OF_TURN)


def test_tokens_file_deterministic(tokenizer_dir: Path, tmp_path: Path) -> None:
    traces = write_traces(tmp_path / "t.jsonl", [parallel_trace(), text_trace(), tool_trace("p1", 1), tool_trace()])
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"

    export_traces(traces, "tokens", first, tokenizer=tokenizer_dir)
    export_traces(traces, "tokens", second, tokenizer=tokenizer_dir)

    lines = first.read_text(encoding="utf-8").splitlines()
    assert first.read_bytes() == second.read_bytes()
    assert [json.loads(line)["extra_fields"]["trace_id"] for line in lines] == ["p1-0", "p1-1", "p9-0", "t1-0"]


def test_end_of_turn_option(tokenizer_dir: Path, tmp_path: Path) -> None:
    traces = write_traces(tmp_path / "t.jsonl", [tool_trace()])
    output = tmp_path / "out.jsonl"

    # With "</tool_call>" as the end of turn, the end-of-turn token after it counts as template text.
    export_traces(traces, "tokens", output, tokenizer=tokenizer_dir, end_of_turn="</tool_call>")

    record = json.loads(output.read_text(encoding="utf-8"))
    tokenizer = load_tokenizer(tokenizer_dir)
    inside = tokenizer.decode(masked(record, 1))
    assert inside.startswith('<tool_call>\n{"name": "search_safety_rules"')
    assert "</tool_call><|im_end|>" not in inside


def test_labels_reach_extra_fields(tokenizer: Any) -> None:
    trace = make_trace("p5", labels=Labels(kind="reasoning", category="gsm8k", ground_truth="7"))

    fields = token_record(trace, tokenizer, END_OF_TURN)["extra_fields"]

    assert fields["kind"] == "reasoning"
    assert fields["category"] == "gsm8k"
