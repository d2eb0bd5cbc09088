"""Prompt exports: one row per prompt for trainers that sample their own rollouts (verl, TRL, OpenRLHF).

Failed traces still give their prompt: the prompt is valid even when the episode failed.
"""

import json
from pathlib import Path
from typing import Any

from agent.trace import Trace
from rule_service.tool import TOOL_NAME
from trainer.export.common import (
    data_source_of, first_per_prompt, ground_truth_text, kind_of, prompt_messages, write_jsonl, write_parquet,
)

# The name under which verl 0.9.1 registers its multi-turn loop (verl.experimental.agent_loop.tool_agent_loop).
# That loop runs the tools of the rollout's tool config, so rows that name it get the rule tool during rollouts.
VERL_AGENT_NAME = "tool_agent"
# Kinds whose reward a rule-based verifier computes (the final answer is checked against the ground truth).
# A judge model scores every other kind.
RULE_SCORED_KINDS = frozenset({"reasoning"})
OPENRLHF_INPUT_KEY = "context_messages"
OPENRLHF_LABEL_KEY = "label"


def verl_rows(traces: list[Trace], split: str) -> list[dict[str, Any]]:
    """Build verl RL dataset rows (the columns `verl.utils.dataset.RLHFDataset` reads), one per prompt."""
    rows = []
    for index, trace in enumerate(first_per_prompt(traces)):
        kind = kind_of(trace)
        create_kwargs = {"prompt_id": trace.prompt_id, "kind": kind, "category": trace.labels.category}
        rows.append({
            "data_source": data_source_of(trace),
            "agent_name": VERL_AGENT_NAME,
            "prompt": prompt_messages(trace),
            "ability": kind,
            "reward_model": {
                "style": "rule" if kind in RULE_SCORED_KINDS else "model",
                "ground_truth": ground_truth_text(trace.labels.ground_truth),
            },
            "extra_info": {
                "split": split,
                "index": index,
                "prompt_id": trace.prompt_id,
                "kind": kind,
                "category": trace.labels.category,
                "need_tools_kwargs": True,
                "tools_kwargs": {TOOL_NAME: {"create_kwargs": create_kwargs}},
            },
        })
    return rows


def trl_rows(traces: list[Trace], split: str) -> list[dict[str, Any]]:
    """Build TRL rows: a conversational `prompt` column plus label columns, which `GRPOTrainer` passes to reward functions."""
    return [
        {
            "prompt": prompt_messages(trace),
            "prompt_id": trace.prompt_id,
            "kind": kind_of(trace),
            "category": trace.labels.category,
            "ground_truth": ground_truth_text(trace.labels.ground_truth),
            "data_source": data_source_of(trace),
            "split": split,
        }
        for trace in first_per_prompt(traces)
    ]


def openrlhf_rows(traces: list[Trace], split: str) -> list[dict[str, Any]]:
    """Build OpenRLHF prompt rows for `--input_key context_messages --label_key label --apply_chat_template`.

    OpenRLHF's PromptDataset passes the `label_key` column to the reward function
    as one string per prompt, so `label` is a JSON object in a string that carries
    the kind as well, for a reward function that scores each kind differently.
    `ground_truth` alone serves `--label_key ground_truth`.
    """
    rows = []
    for trace in first_per_prompt(traces):
        ground_truth = ground_truth_text(trace.labels.ground_truth)
        label = {"prompt_id": trace.prompt_id, "kind": kind_of(trace), "category": trace.labels.category,
                 "ground_truth": ground_truth}
        rows.append({
            OPENRLHF_INPUT_KEY: prompt_messages(trace),
            OPENRLHF_LABEL_KEY: json.dumps(label, ensure_ascii=False, sort_keys=True, separators=(",", ":")),
            "ground_truth": ground_truth,
            "datasource": data_source_of(trace),
            "prompt_id": trace.prompt_id,
            "kind": kind_of(trace),
            "category": trace.labels.category,
            "split": split,
        })
    return rows


def _messages_type() -> Any:
    import pyarrow as pa

    return pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def verl_schema() -> Any:
    import pyarrow as pa

    create_kwargs = pa.struct([("prompt_id", pa.string()), ("kind", pa.string()), ("category", pa.string())])
    tools_kwargs = pa.struct([(TOOL_NAME, pa.struct([("create_kwargs", create_kwargs)]))])
    extra_info = pa.struct([
        ("split", pa.string()), ("index", pa.int64()), ("prompt_id", pa.string()), ("kind", pa.string()),
        ("category", pa.string()), ("need_tools_kwargs", pa.bool_()), ("tools_kwargs", tools_kwargs),
    ])
    return pa.schema([
        ("data_source", pa.string()),
        ("agent_name", pa.string()),
        ("prompt", _messages_type()),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", extra_info),
    ])


def trl_schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("prompt", _messages_type()),
        ("prompt_id", pa.string()),
        ("kind", pa.string()),
        ("category", pa.string()),
        ("ground_truth", pa.string()),
        ("data_source", pa.string()),
        ("split", pa.string()),
    ])


def write_verl(traces: list[Trace], output: Path, split: str) -> int:
    rows = verl_rows(traces, split)
    write_parquet(output, rows, verl_schema())
    return len(rows)


def write_trl(traces: list[Trace], output: Path, split: str) -> int:
    rows = trl_rows(traces, split)
    write_parquet(output, rows, trl_schema())
    return len(rows)


def write_openrlhf(traces: list[Trace], output: Path, split: str) -> int:
    rows = openrlhf_rows(traces, split)
    write_jsonl(output, rows)
    return len(rows)
