"""`ascl eval retrieval`: score each retriever on labelled queries and print the tables."""

import logging
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rule_service.cli import configure_logging, load_service_or_exit, make_settings
from rule_service.index import write_atomic
from rule_service.settings import EncoderBackend, Retriever, bundled_corpus_root

console = Console()
eval_app = typer.Typer(help="Measure retrieval quality and the safety-utility trade-off of the agent.", no_args_is_help=True)
logger = logging.getLogger(__name__)

OVERALL_COLUMNS = ("recall@1", "recall@3", "recall@5", "mrr", "ndcg@5", "category_recall@1", "category_recall@3", "category_recall@5")
COLUMN_LABELS = ("r@1", "r@3", "r@5", "MRR", "nDCG@5", "cat@1", "cat@3", "cat@5")


@eval_app.command("retrieval")
def retrieval(
    queries: Annotated[Path | None, typer.Option(help="Labelled queries (JSON Lines). Default: the bundled corpus/eval/retrieval.jsonl.")] = None,
    retrievers: Annotated[str, typer.Option(help="Comma-separated retrievers to compare: dense, bm25, hybrid.")] = "dense,bm25,hybrid",
    ruleset: Annotated[str | None, typer.Option(help="Ruleset to evaluate. Default: the server default.")] = None,
    output: Annotated[Path, typer.Option(help="Where to write the JSON report.")] = Path("eval-retrieval.json"),
    corpus_dir: Annotated[Path | None, typer.Option("--corpus-dir", help="Rule folder. Default: ASCL_CORPUS_DIR, else the bundled corpus.")] = None,
    index_dir: Annotated[Path | None, typer.Option("--index-dir", help="Index folder. Default: ASCL_INDEX_DIR, else ~/.cache/ascl/index.")] = None,
    encoder_backend: Annotated[EncoderBackend | None, typer.Option("--encoder-backend", help="torch, onnx or onnx_int8. Default: ASCL_ENCODER_BACKEND, else torch.")] = None,
    show_misses: Annotated[bool, typer.Option(help="List queries whose top 3 missed every expected category.")] = False,
) -> None:
    """Print recall@1/3/5, MRR and nDCG@5 per retriever and per query kind, and score separation."""
    from ascl.evaluation.retrieval import evaluate, load_queries, report_json

    try:
        chosen = [Retriever(name.strip()) for name in retrievers.split(",") if name.strip()]
    except ValueError:
        raise typer.BadParameter(f"{retrievers!r}: use names from dense, bm25, hybrid", param_hint="--retrievers") from None
    settings = make_settings(corpus_dir=corpus_dir, index_dir=index_dir, encoder_backend=encoder_backend, log_level="WARNING")
    configure_logging(settings.log_level)
    service = load_service_or_exit(settings)
    loaded = service.get(ruleset)
    path = queries or bundled_corpus_root() / "eval" / "retrieval.jsonl"
    try:
        labelled = load_queries(path, set(loaded.rules_by_id))
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot use {path}:[/red] {exc}")
        raise typer.Exit(2) from None

    reports = []
    for retriever in chosen:
        started = time.perf_counter()
        reports.append(evaluate(service, labelled, retriever, loaded.name))
        logger.info("evaluated %s in %.2f s", retriever.value, time.perf_counter() - started)

    _print_overall(reports)
    _print_by_kind(reports)
    _print_separation(reports)
    if show_misses:
        for report in reports:
            for miss in report.misses:
                console.print(f"{report.retriever} miss {miss}", markup=False)
    meta = {"encoder_backend": settings.encoder_backend.value, "queries_file": str(path), "ruleset": loaded.name, "index_version": loaded.index_version,
            "encoder": service.encoder.spec.name, "rules": len(loaded.ruleset.rules), "queries": len(labelled)}
    write_atomic(output, report_json(reports, meta).encode("utf-8"))
    console.print(f"JSON report written to {output}")


def _print_overall(reports: list) -> None:
    table = Table("retriever", *COLUMN_LABELS, title="Labelled queries, unrelated excluded (r = rule recall, cat = category recall)")
    for report in reports:
        table.add_row(report.retriever, *(f"{report.overall[c]:.3f}" for c in OVERALL_COLUMNS))
    console.print(table)


def _print_by_kind(reports: list) -> None:
    kinds = sorted({kind for report in reports for kind in report.by_kind})
    table = Table("kind", "queries", *(f"{r.retriever} cat@3 / rule@3 / mrr" for r in reports), title="By query kind")
    for kind in kinds:
        count = next(int(r.by_kind[kind]["queries"]) for r in reports if kind in r.by_kind)
        cells = []
        for report in reports:
            m = report.by_kind.get(kind, {})
            cells.append(f"{m.get('category_recall@3', 0):.3f} / {m.get('recall@3', 0):.3f} / {m.get('mrr', 0):.3f}")
        table.add_row(kind, str(count), *cells)
    console.print(table)


def _print_separation(reports: list) -> None:
    table = Table("retriever", "AUROC", "best floor", "TPR", "FPR",
                  title="Top score: relevant versus unrelated queries")
    for report in reports:
        s = report.separation
        table.add_row(report.retriever, f"{s['auroc']:.3f}", f"{s['best_floor']:.3f}", f"{s['tpr_at_floor']:.3f}", f"{s['fpr_at_floor']:.3f}")
    console.print(table)


def _register_agent_commands() -> None:
    from ascl.evaluation.cli_agent import register

    register(eval_app)


_register_agent_commands()
