"""Token-level export: one record per episode, tokenized with the policy's own tokenizer and chat template.

Each record has `prompt_ids`, `response_ids`, `response_mask`, `reward_score`,
`num_turns` and `extra_fields`, the fields of verl's agent loop output.

Chat traces: the prompt (every message up to the last user message) is rendered
with `apply_chat_template(add_generation_prompt=True)`. The response is built by
rendering ever longer prefixes of the conversation and taking the text each step
adds. A step is one assistant message, or one run of consecutive tool messages,
which is rendered with the generation prompt of the next assistant turn when one
follows. Templates that group parallel tool results into one turn therefore work.
The mask is 1 on what the policy wrote, which is the text an assistant message
adds after the generation prompt, up to and including the last end-of-turn token
in it (`end_of_turn`, by default the tokenizer's `eos_token`). That covers the
reasoning (when the template renders `reasoning_content`), the content, the tool
calls in the template's syntax and the end-of-turn token. The mask is 0 on tool
results with their role markers, on the generation prompt of later turns and on
text the template adds after the end-of-turn token (such as a newline). When
an episode stopped at the token limit (`finish_reason` "length"), its last
assistant turn ends without the end-of-turn token, as the model left it.
Tool-call arguments are given to the template as objects when they parse as a
JSON object (the form transformers' templates expect), else as the raw string.
In `adaptive` mode the rule tool's definition is passed as `tools`.

Text-tag traces: the prompt is tokenized as a completions endpoint does, with
special tokens added. Each text segment is tokenized on its own, with mask 1 on
model segments and 0 on inserted rules. When the episode ended normally
(`finish_reason` "stop"), the tokenizer's EOS token follows with mask 1,
because the model generated it.

Pieces are tokenized separately, as a rollout engine joins generated ids and
tokenized tool results, so decoding the mask-1 ids gives back exactly the
policy's text for tokenizers that decode what they encode (byte-level BPE does).
"""

import json
import logging
from pathlib import Path
from typing import Any

from agent.trace import FINISH_LENGTH, FINISH_STOP, Trace
from rule_service.tool import openai_tool
from trainer.export.common import ExportError, kind_of, prompt_length, rule_ids_of, write_jsonl

logger = logging.getLogger(__name__)

Piece = tuple[str, int]  # text and its mask value


def load_tokenizer(path: str | Path) -> Any:
    """Load a tokenizer from a local folder (never from a model hub)."""
    from transformers import AutoTokenizer

    folder = Path(path)
    if not folder.is_dir():
        raise ExportError(f"--tokenizer {folder}: folder not found; give the folder where the policy's tokenizer "
                          "was saved (save_pretrained)")
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    # from_pretrained raises OSError, ValueError, KeyError and others for a folder it cannot use.
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"--tokenizer {folder}: could not load a tokenizer ({type(exc).__name__}: {exc})") from None


def token_records(traces: list[Trace], tokenizer: Any, end_of_turn: str | None = None) -> tuple[list[dict], int]:
    """Build one token record per successful trace; return the records and the number of failed traces skipped."""
    eot = end_of_turn if end_of_turn is not None else tokenizer.eos_token
    records, skipped = [], 0
    for trace in traces:
        if trace.error is not None:
            skipped += 1
            continue
        records.append(token_record(trace, tokenizer, eot))
    if skipped:
        logger.info("skipped %d failed trace(s): an episode that failed has no complete response to train on", skipped)
    return records, skipped


def token_record(trace: Trace, tokenizer: Any, end_of_turn: str | None) -> dict[str, Any]:
    """Build the token record of one trace."""
    if trace.protocol == "text":
        prompt_ids, pieces, turns = _text_pieces(trace, tokenizer)
    else:
        prompt_text, pieces, turns = _chat_pieces(trace, tokenizer, end_of_turn)
        prompt_ids = _encode(tokenizer, prompt_text)
    response_ids: list[int] = []
    response_mask: list[int] = []
    for text, mask in pieces:
        ids = _encode(tokenizer, text)
        response_ids.extend(ids)
        response_mask.extend([mask] * len(ids))
    if trace.protocol == "text" and trace.finish_reason == FINISH_STOP and tokenizer.eos_token_id is not None:
        response_ids.append(tokenizer.eos_token_id)
        response_mask.append(1)
    return {
        "prompt_ids": prompt_ids,
        "response_ids": response_ids,
        "response_mask": response_mask,
        "reward_score": (trace.rewards or {}).get("total"),
        "num_turns": turns,
        "extra_fields": _extra_fields(trace),
    }


def _extra_fields(trace: Trace) -> dict[str, Any]:
    return {
        "trace_id": trace.trace_id,
        "prompt_id": trace.prompt_id,
        "group_id": trace.group_id,
        "sample_index": trace.sample_index,
        "kind": kind_of(trace),
        "category": trace.labels.category,
        "mode": trace.mode,
        "protocol": trace.protocol,
        "finish_reason": trace.finish_reason,
        "consulted_rules": trace.consulted_rules,
        "num_tool_calls": trace.num_tool_calls,
        "rule_ids": rule_ids_of(trace),
        "rewards": trace.rewards,
    }


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def _text_pieces(trace: Trace, tokenizer: Any) -> tuple[list[int], list[Piece], int]:
    if trace.text_segments is None:
        raise ExportError(f"trace {trace.trace_id}: protocol is 'text' but text_segments is missing")
    prompt = trace.messages[0].get("content") if trace.messages else None
    if not isinstance(prompt, str):
        raise ExportError(f"trace {trace.trace_id}: a text-protocol trace needs the prompt as messages.0.content")
    prompt_ids = list(tokenizer.encode(prompt, add_special_tokens=True))
    pieces = [(segment.text, 1 if segment.source == "model" else 0) for segment in trace.text_segments]
    # Turns count as verl's agent loop counts them: the prompt, each generation and each inserted tool result.
    return prompt_ids, pieces, 1 + len(trace.text_segments)


def _chat_pieces(trace: Trace, tokenizer: Any, end_of_turn: str | None) -> tuple[str, list[Piece], int]:
    if not getattr(tokenizer, "chat_template", None):
        raise ExportError("--tokenizer: the tokenizer has no chat template; the token export of chat traces "
                          "renders them with the policy's own template")
    messages = _template_messages(trace)
    # NOTE: traces do not record the run's top_k maximum, so the tool definition is rendered without one; a run
    # with a maximum showed the policy a schema that also states it.
    tools = [openai_tool()] if trace.mode == "adaptive" else None
    start = prompt_length(trace)

    def render(count: int, generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages[:count], tools=tools, add_generation_prompt=generation_prompt,
                                             tokenize=False)

    prompt_text = previous = render(start, True)
    pieces: list[Piece] = []
    steps = _steps(messages, start)
    for number, (end, is_assistant) in enumerate(steps):
        current = render(end, not is_assistant and end < len(messages))
        if not current.startswith(previous):
            raise ExportError(
                f"trace {trace.trace_id}: the chat template changes earlier text when messages.{end - 1} is added, "
                "so the response cannot be cut into turns; the token export needs a template that only appends")
        added = current[len(previous):]
        previous = current
        if not is_assistant:
            pieces.append((added, 0))
            continue
        cut_off = number == len(steps) - 1 and trace.finish_reason == FINISH_LENGTH
        pieces.extend(_split_turn(added, end_of_turn, cut_off))
    # Turns count as verl's agent loop counts them: the prompt, each assistant turn and each run of tool results.
    return prompt_text, pieces, 1 + len(steps)


def _steps(messages: list[dict[str, Any]], start: int) -> list[tuple[int, bool]]:
    """Return (end, is_assistant) for each step after the prompt: one assistant message, or one run of others."""
    steps = []
    index = start
    while index < len(messages):
        if messages[index].get("role") == "assistant":
            index += 1
            steps.append((index, True))
            continue
        while index < len(messages) and messages[index].get("role") != "assistant":
            index += 1
        steps.append((index, False))
    return steps


def _split_turn(added: str, end_of_turn: str | None, cut_off: bool) -> list[Piece]:
    """Split the text an assistant message adds into the policy's part (mask 1) and template text after it (mask 0)."""
    if not end_of_turn or end_of_turn not in added:
        return [(added, 1)]
    end = added.rindex(end_of_turn)
    if cut_off:
        return [(added[:end], 1)]
    end += len(end_of_turn)
    return [(added[:end], 1), (added[end:], 0)]


def _template_messages(trace: Trace) -> list[dict[str, Any]]:
    """Return the trace's messages in the form chat templates expect: no null content, arguments as objects."""
    messages = []
    for message in trace.messages:
        message = dict(message)
        if message.get("content") is None:
            message["content"] = ""
        if message.get("tool_calls"):
            message["tool_calls"] = [_template_call(call) for call in message["tool_calls"]]
        messages.append(message)
    return messages


def _template_call(call: dict[str, Any]) -> dict[str, Any]:
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except (json.JSONDecodeError, RecursionError):
            parsed = None
        if isinstance(parsed, dict):
            function["arguments"] = parsed
    return {**call, "function": function}


def write_tokens(traces: list[Trace], output: Path, tokenizer: Any, end_of_turn: str | None = None) -> tuple[int, int]:
    """Write token records as JSON Lines; return the records written and the failed traces skipped."""
    records, skipped = token_records(traces, tokenizer, end_of_turn)
    if not records:
        raise ExportError(f"no token records to write: all {skipped} trace(s) failed (their error field is set)")
    write_jsonl(output, records)
    return len(records), skipped
