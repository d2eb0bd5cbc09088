"""`ascl serve`, `ascl index build`, `ascl rules validate` and `ascl search`.

Exit codes: 0 success, 1 unexpected error, 2 usage error, 3 invalid rule set,
4 saved index stale or unreadable and rebuilding disabled, 5 encoder failed to
load, 6 the server named by --url failed or rejected the request.
"""

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rule_service.index import StaleIndexError
from rule_service.rules import RULE_FILE_SUFFIXES, RuleSetInvalidError, rule_files, validate_path
from rule_service.settings import EncoderBackend, IndexType, Retriever, Settings, StaleIndexPolicy

EXIT_INVALID_RULES = 3
EXIT_STALE_INDEX = 4
EXIT_ENCODER = 5
EXIT_SERVER = 6

console = Console()
error_console = Console(stderr=True)

rules_app = typer.Typer(help="Check rule files.", no_args_is_help=True)
index_app = typer.Typer(help="Build the search index.", no_args_is_help=True)

CorpusOption = Annotated[Path | None, typer.Option("--corpus-dir", help="Rule folder, or a folder of ruleset folders. Default: ASCL_CORPUS_DIR, else the bundled corpus.")]
IndexOption = Annotated[Path | None, typer.Option("--index-dir", help="Where indexes are stored. Default: ASCL_INDEX_DIR, else ~/.cache/ascl/index.")]
EncoderOption = Annotated[str | None, typer.Option("--encoder", help="sentence-transformers model folder or name. Default: ASCL_ENCODER, else the bundled all-MiniLM-L6-v2.")]
BackendOption = Annotated[EncoderBackend | None, typer.Option("--encoder-backend", help="torch, onnx or onnx_int8 (ONNX Runtime on a locally exported copy). Default: ASCL_ENCODER_BACKEND, else torch.")]
IndexTypeOption = Annotated[IndexType | None, typer.Option("--index-type", help="FAISS index structure. Default: ASCL_INDEX_TYPE, else flat (exact).")]
LogLevelOption = Annotated[str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR. Default: ASCL_LOG_LEVEL, else INFO.")]


def make_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with every non-None command-line value taking precedence."""
    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        for error in exc.errors():
            name = "ASCL_" + "_".join(str(part) for part in error["loc"]).upper()
            error_console.print(f"invalid setting {name} (or its flag): {error['msg']} (got {error.get('input')!r})",
                                markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (ValueError, FileNotFoundError) as exc:
        error_console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # faiss reports each CPU feature probe at INFO; only its failures matter here.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def load_service_or_exit(settings: Settings) -> Any:
    """Load the rule service, turning known failures into messages and exit codes."""
    from rule_service.service import RuleService

    try:
        return RuleService.load(settings)
    except RuleSetInvalidError as exc:
        error_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_INVALID_RULES) from None
    except (FileNotFoundError, ValueError) as exc:
        error_console.print(f"[red]cannot load the corpus:[/red] {exc}")
        raise typer.Exit(EXIT_INVALID_RULES) from None
    except StaleIndexError as exc:
        error_console.print(f"[red]saved index rejected and rebuilding is off (ASCL_ON_STALE_INDEX=fail):[/red] {exc}")
        raise typer.Exit(EXIT_STALE_INDEX) from None
    except RuntimeError as exc:
        error_console.print(f"[red]encoder failed to load:[/red] {exc}")
        raise typer.Exit(EXIT_ENCODER) from None


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind. Default: ASCL_HOST, else 127.0.0.1.")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="TCP port, 0 to 65535. Default: ASCL_PORT, else 8000.")] = None,
    corpus_dir: CorpusOption = None,
    index_dir: IndexOption = None,
    encoder: EncoderOption = None,
    encoder_backend: BackendOption = None,
    retriever: Annotated[Retriever | None, typer.Option(help="Default ranking method. Default: ASCL_RETRIEVER, else hybrid.")] = None,
    index_type: IndexTypeOption = None,
    on_stale_index: Annotated[StaleIndexPolicy | None, typer.Option(help="Rebuild a stale saved index, or fail to start. Default: ASCL_ON_STALE_INDEX, else rebuild.")] = None,
    log_level: LogLevelOption = None,
) -> None:
    """Start the HTTP rule service. The index is loaded or built before the port opens; SIGHUP reloads it."""
    import uvicorn

    from rule_service.app import create_app
    from rule_service.http_server import uvicorn_options
    from rule_service.memory import tune_malloc

    settings = make_settings(
        host=host, port=port, corpus_dir=corpus_dir, index_dir=index_dir, encoder=encoder,
        encoder_backend=encoder_backend, retriever=retriever, index_type=index_type, on_stale_index=on_stale_index, log_level=log_level,
    )
    configure_logging(settings.log_level)
    tune_malloc()  # before the model loads, so its buffers already follow the thresholds
    service = load_service_or_exit(settings)
    app = create_app(settings, service, handle_sighup=True)
    uvicorn.run(app, **uvicorn_options(settings))


@index_app.command("build")
def build_index_command(
    corpus_dir: CorpusOption = None,
    index_dir: IndexOption = None,
    encoder: EncoderOption = None,
    encoder_backend: BackendOption = None,
    index_type: IndexTypeOption = None,
    log_level: LogLevelOption = None,
) -> None:
    """Embed every ruleset and write its FAISS index and manifest, replacing any saved index."""
    from rule_service.encoder import Encoder
    from rule_service.rules import discover_rulesets, load_ruleset
    from rule_service.service import build_and_save, index_directory

    settings = make_settings(corpus_dir=corpus_dir, index_dir=index_dir, encoder=encoder,
                             encoder_backend=encoder_backend, index_type=index_type, log_level=log_level)
    configure_logging(settings.log_level)
    try:
        paths = discover_rulesets(settings.corpus_dir, settings.default_ruleset)
        rulesets = [load_ruleset(path, name) for name, path in paths.items()]
    except RuleSetInvalidError as exc:
        error_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_INVALID_RULES) from None
    except (FileNotFoundError, ValueError) as exc:
        error_console.print(f"[red]cannot load the corpus:[/red] {exc}")
        raise typer.Exit(EXIT_INVALID_RULES) from None
    try:
        model = Encoder.from_settings(settings)
    except (RuntimeError, FileNotFoundError) as exc:
        error_console.print(f"[red]encoder failed to load:[/red] {exc}")
        raise typer.Exit(EXIT_ENCODER) from None

    table = Table("ruleset", "rules", "index version", "build s", "path", title="Indexes built")
    for ruleset in rulesets:
        dense = build_and_save(ruleset, model, settings)
        manifest = dense.manifest
        table.add_row(ruleset.name, str(manifest.rule_count), manifest.index_version,
                      f"{manifest.build_seconds:.2f}", str(index_directory(settings, ruleset.name)))
    console.print(table)


@rules_app.command("validate")
def validate_command(
    paths: Annotated[list[Path], typer.Argument(help="Rule files or folders (searched recursively for .yaml, .yml, .jsonl).")],
) -> None:
    """Check rule files and report every problem with its file, line, rule id and field; exit 3 if any."""
    total_problems = 0
    for path in _ruleset_paths(paths):
        rules, problems = validate_path(path)
        for problem in problems:
            # soft_wrap keeps each problem on one line for grep and CI logs, whatever the width.
            error_console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        total_problems += len(problems)
        status = "[green]valid[/green]" if not problems else f"[red]{len(problems)} problem(s)[/red]"
        console.print(
            f"{path}: {len(rules)} valid rule(s) in {len(rule_files(path)) if path.exists() else 0} file(s), {status}",
            soft_wrap=True,
        )
    if total_problems:
        raise typer.Exit(EXIT_INVALID_RULES)


def _ruleset_paths(paths: list[Path]) -> list[Path]:
    """Expand a folder of ruleset folders into its rulesets, which the server loads (and checks) one by one."""
    expanded = []
    for path in paths:
        direct_files = path.is_dir() and any(p.is_file() and p.suffix in RULE_FILE_SUFFIXES for p in path.iterdir())
        subfolders = sorted(p for p in path.iterdir() if p.is_dir() and rule_files(p)) if path.is_dir() else []
        expanded.extend(subfolders if subfolders and not direct_files else [path])
    return expanded


def search(
    query: Annotated[str, typer.Argument(help="What the request is about.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Number of rules to show.")] = 5,
    category: Annotated[list[str] | None, typer.Option("--category", "-c", help="Category key or code to keep; repeatable.")] = None,
    ruleset: Annotated[str | None, typer.Option(help="Ruleset to search. Default: ASCL_DEFAULT_RULESET, else default.")] = None,
    retriever: Annotated[Retriever | None, typer.Option(help="Ranking method. Default: ASCL_RETRIEVER, else hybrid.")] = None,
    url: Annotated[str | None, typer.Option(help="Query a running server at this base URL instead of loading the index here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON response.")] = False,
    corpus_dir: CorpusOption = None,
    index_dir: IndexOption = None,
) -> None:
    """Search the rules for one query and print a table (or JSON)."""
    body: dict[str, Any] = {"query": query, "top_k": top_k}
    for key, value in (("categories", category), ("ruleset", ruleset), ("retriever", retriever)):
        if value:
            body[key] = value.value if isinstance(value, Retriever) else value
    if url:
        result = _search_remote(url, body)
    else:
        result = _search_local(body, corpus_dir, index_dir, ruleset)
    if as_json:
        console.print_json(json.dumps(result))
        return
    table = Table("#", "rule id", "score", "title", title=f"{query!r} ({result['retriever']}, index {result['index_version']})")
    for rank, hit in enumerate(result["results"], start=1):
        table.add_row(str(rank), hit["id"], f"{hit['score']:.3f}", hit["rule"]["title"])
    console.print(table)


def _search_remote(url: str, body: dict[str, Any]) -> dict[str, Any]:
    import os

    import httpx

    headers = {}
    if os.environ.get("ASCL_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['ASCL_API_KEY']}"
    try:
        response = httpx.post(f"{url.rstrip('/')}/v1/rules/search", json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        error_console.print(f"[red]request to {url} failed:[/red] {exc}")
        raise typer.Exit(EXIT_SERVER) from None
    if response.status_code != 200:
        message = escape(_error_message(response))
        error_console.print(f"[red]server returned {response.status_code}:[/red] {message}", soft_wrap=True)
        raise typer.Exit(EXIT_SERVER)
    return response.json()


def _error_message(response: Any) -> str:
    """Return the `message` field of an error body, or the raw text when the body has none."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return response.text[:500]


def _search_local(body: dict[str, Any], corpus_dir: Path | None, index_dir: Path | None,
                  ruleset: str | None) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from rule_service.app import create_app

    # A ruleset named on the command line is also the default, so a corpus
    # without a "default" folder needs no ASCL_DEFAULT_RULESET.
    settings = make_settings(corpus_dir=corpus_dir, index_dir=index_dir, default_ruleset=ruleset, log_level="WARNING")
    configure_logging(settings.log_level)
    service = load_service_or_exit(settings)
    # The in-process app runs the same checks and rendering as the server.
    with TestClient(create_app(settings, service)) as client:
        response = client.post("/v1/rules/search", json=body)
    if response.status_code != 200:
        error_console.print(f"[red]invalid search:[/red] {response.json().get('message')}")
        raise typer.Exit(2)
    return response.json()


def register(app: typer.Typer) -> None:
    """Add the rule service's commands to the `ascl` command."""
    app.command("serve")(serve)
    app.command("search")(search)
    app.add_typer(index_app, name="index")
    app.add_typer(rules_app, name="rules")
