"""Export agent traces to RL training backends (`ascl export`).

Formats (every output is written to a temporary file and renamed into place,
and the same input gives byte-identical output):

- `verl`: Parquet, one row per prompt id (verl samples its own G rollouts),
  with the columns verl's RLHFDataset reads: `data_source` ("ascl/<kind>"),
  `agent_name` ("tool_agent"), `prompt` (the prompt messages), `ability` (the
  kind), `reward_model` ({"style": "rule" for reasoning prompts, "model" for
  judge-scored kinds, "ground_truth": text}) and `extra_info` ({"split",
  "index", "prompt_id", "kind", "category", "need_tools_kwargs": true,
  "tools_kwargs": {"search_safety_rules": {"create_kwargs": {"prompt_id",
  "kind", "category"}}}}).
- `trl`: Parquet, one row per prompt id, with a conversational `prompt`
  column and the label columns `prompt_id`, `kind`, `category`,
  `ground_truth`, `data_source` and `split`. Load it with
  `datasets.load_dataset("parquet", data_files=OUT)`. `GRPOTrainer` passes
  the label columns to reward functions as keyword arguments.
- `openrlhf`: JSON Lines, one row per prompt id, for
  `--input_key context_messages --label_key label --apply_chat_template`:
  `context_messages` (the prompt messages), `label` (a JSON object in a
  string: prompt_id, kind, category, ground_truth), `ground_truth`,
  `datasource` ("ascl/<kind>"), `prompt_id`, `kind`, `category`, `split`.
- `tokens`: JSON Lines, one record per successful episode, tokenized with the
  policy's tokenizer (`--tokenizer`). See `trainer.export.tokens` for the
  mask rules.

The prompt of a trace is every message up to its last user message, with
text content. Ground truths are text: strings unchanged, none as "", other
values as compact JSON. Failed traces still give their prompt to the prompt
formats. The `tokens` format skips them and counts them.
"""

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from trainer.export.common import ExportError, load_traces


class ExportFormat(str, Enum):
    verl = "verl"
    trl = "trl"
    openrlhf = "openrlhf"
    tokens = "tokens"


@dataclass(frozen=True)
class ExportSummary:
    """Counts of one export: traces read, rows or records written, failed traces skipped."""

    format: ExportFormat
    output: Path
    traces: int
    rows: int
    skipped_failed: int = 0


def export_traces(traces_path: str | Path, export_format: ExportFormat | str, output: str | Path, *,
                  tokenizer: str | Path | None = None, split: str = "train",
                  end_of_turn: str | None = None) -> ExportSummary:
    """Export a trace file to one format; raise `ExportError` for input it cannot use, leaving `output` untouched."""
    from trainer.export.prompts import write_openrlhf, write_trl, write_verl
    from trainer.export.tokens import load_tokenizer, write_tokens

    export_format = ExportFormat(export_format)
    output = Path(output)
    if not split:
        raise ExportError("--split must not be empty")
    if export_format is ExportFormat.tokens and tokenizer is None:
        raise ExportError("--tokenizer is required for --format tokens: give the folder of the policy's tokenizer")
    if output.is_dir():
        raise ExportError(f"--output {output} is a folder; give a file path")
    traces = load_traces(traces_path)

    skipped = 0
    if export_format is ExportFormat.verl:
        rows = write_verl(traces, output, split)
    elif export_format is ExportFormat.trl:
        rows = write_trl(traces, output, split)
    elif export_format is ExportFormat.openrlhf:
        rows = write_openrlhf(traces, output, split)
    else:
        rows, skipped = write_tokens(traces, output, load_tokenizer(tokenizer), end_of_turn)
    return ExportSummary(export_format, output, len(traces), rows, skipped)


__all__ = ["ExportError", "ExportFormat", "ExportSummary", "export_traces"]
