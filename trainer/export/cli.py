"""`ascl export`: write a trace file in the format of an RL training backend.

Exit codes: 0 success, 1 unexpected error, 2 input the export cannot use
(a bad trace line or an unknown schema_version, a missing --tokenizer, a chat
template that cannot be cut into turns), 74 the output could not be written
(a full disk, no permission). On any error the output is left as it was.
"""

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from trainer.export import ExportError, ExportFormat, export_traces

console = Console()
error_console = Console(stderr=True)

EXIT_BAD_INPUT = 2
EXIT_WRITE_FAILED = 74  # EX_IOERR of sysexits.h
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def register(app: typer.Typer) -> None:
    """Add `ascl export` to the `ascl` command."""
    app.command("export")(export)


def export(
    traces: Annotated[Path, typer.Option("--traces", help="Trace file written by `ascl agent run` (JSON Lines).", dir_okay=False)],
    export_format: Annotated[ExportFormat, typer.Option("--format", help="verl (Parquet prompts), trl (Parquet prompts), openrlhf (JSON Lines prompts) or tokens (JSON Lines token records).")],
    output: Annotated[Path, typer.Option("--output", help="File to write; replaced in one rename when the export is complete.", dir_okay=False)],
    tokenizer: Annotated[Path | None, typer.Option("--tokenizer", help="Local folder of the policy's tokenizer with its chat template; required by --format tokens.", file_okay=False)] = None,
    split: Annotated[str, typer.Option("--split", help="Split name written into each prompt row (verl extra_info.split, trl and openrlhf `split`).")] = "train",
    end_of_turn: Annotated[str | None, typer.Option("--end-of-turn", help="Token that ends an assistant turn in the chat template; the tokens export counts it as written by the policy. Default: the tokenizer's eos_token.")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR. Logs go to stderr.")] = "WARNING",
) -> None:
    """Export traces for verl, TRL or OpenRLHF training, or as token-level records."""
    if log_level.upper() not in LOG_LEVELS:
        raise typer.BadParameter(f"{log_level!r}: use one of {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = export_traces(traces, export_format, output, tokenizer=tokenizer, split=split,
                                end_of_turn=end_of_turn)
    except ExportError as exc:
        error_console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.filename is not None and Path(exc.filename) == traces:
            error_console.print(f"[red]cannot read {escape(str(traces))}: {escape(reason)}[/red]")
            raise typer.Exit(EXIT_BAD_INPUT) from None
        error_console.print(f"[red]cannot write {escape(str(exc.filename or output))}: {escape(reason)}; "
                            f"{escape(str(output))} was left as it was[/red]")
        raise typer.Exit(EXIT_WRITE_FAILED) from None

    unit = "record(s)" if export_format is ExportFormat.tokens else "prompt row(s)"
    console.print(f"read {summary.traces} trace(s); wrote {summary.rows} {unit} to {escape(str(summary.output))}")
    if summary.skipped_failed:
        console.print(f"skipped {summary.skipped_failed} failed trace(s): a failed episode has no response to train on")
