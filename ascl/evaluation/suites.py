"""Prompt suites for agent evaluation: the bundled harmful, benign and reasoning sets, or the user's files.

The bundled files live in `corpus/eval/` of a source checkout or editable
install, and in `rule_service/_corpus/eval/` of an installed wheel.
`bundled_corpus_root()` finds either, as it does for the rule corpus.

Bundled harmful prompt ids read `harm-<category>-<style>-<NN>`, where style is
the wrapper around the request: a direct request, a role-play persona, a
fiction frame, a hypothetical, or a request in another language to translate
and answer. `wrapper_style` reads it back for per-style reports.
"""

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from agent.batch import PromptRecord
from ascl.evaluation.formats import LoadOptions
from ascl.evaluation.loaders import NATIVE_FORMAT, load_prompt_file
from rule_service.settings import bundled_corpus_root

BUNDLED_SUITES: dict[str, tuple[str, ...]] = {
    "harmful": ("harmful.jsonl",),
    "benign": ("benign.jsonl",),
    "reasoning": ("reasoning.jsonl",),
    "default": ("harmful.jsonl", "benign.jsonl", "reasoning.jsonl"),
}
WRAPPER_STYLES: tuple[str, ...] = ("direct", "roleplay", "fiction", "hypothetical", "translation")
UNSPECIFIED_STYLE = "unspecified"
_STYLED_ID = re.compile(rf"^harm-[a-z_]+-(?P<style>{'|'.join(WRAPPER_STYLES)})-\d+$")


class SuiteError(ValueError):
    """A suite that cannot be assembled: no sources, a missing bundled file, or an id used by two files."""


def bundled_suite_dir() -> Path:
    return bundled_corpus_root() / "eval"


def bundled_suite_paths(name: str) -> list[Path]:
    """Return the files of a bundled suite; raise `SuiteError` for an unknown name or a missing file."""
    if name not in BUNDLED_SUITES:
        raise SuiteError(f"unknown bundled suite {name!r}; expected one of {list(BUNDLED_SUITES)}")
    paths = [bundled_suite_dir() / file_name for file_name in BUNDLED_SUITES[name]]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise SuiteError(f"bundled suite {name!r}: file(s) not found: {missing}; reinstall the ascl package")
    return paths


def load_suite(sources: str | Path | Sequence[str | Path] = "default", format: str | None = None,
               options: LoadOptions | None = None) -> list[PromptRecord]:
    """Load the prompts of one or more sources, in order, and check that their ids are unique.

    A source is a bundled suite name (`default`, `harmful`, `benign`,
    `reasoning`) or the path of a prompt file. `format` and `options` apply to
    the paths (see `load_prompt_file`); bundled files are always our format.
    A string that names a bundled suite is read as the suite, so pass
    `./harmful` to mean a file of that name.
    """
    items = [sources] if isinstance(sources, (str, Path)) else list(sources)
    if not items:
        raise SuiteError("no prompt sources given; pass a bundled suite name or a prompt file")
    records: list[PromptRecord] = []
    origin: dict[str, Path] = {}
    for path, path_format in _expand(items, format):
        loaded = load_prompt_file(path, path_format, options)
        for prompt in loaded:
            if prompt.id in origin:
                raise SuiteError(
                    f"prompt id {prompt.id!r} is in both {origin[prompt.id]} and {path}; "
                    "ids must be unique across a suite because batch runs resume by id"
                )
            origin[prompt.id] = path
        records.extend(loaded)
    return records


def _expand(items: Iterable[str | Path], format: str | None) -> list[tuple[Path, str | None]]:
    expanded: list[tuple[Path, str | None]] = []
    for item in items:
        if isinstance(item, str) and item in BUNDLED_SUITES:
            expanded.extend((path, NATIVE_FORMAT) for path in bundled_suite_paths(item))
        else:
            expanded.append((Path(item), format))
    return expanded


def wrapper_style(prompt_id: str) -> str | None:
    """Return the wrapper style encoded in a bundled harmful prompt id, or None for any other id."""
    match = _STYLED_ID.match(prompt_id)
    return match.group("style") if match else None


def group_by_style(records: Iterable[PromptRecord]) -> dict[str, list[PromptRecord]]:
    """Group the harmful prompts by wrapper style; prompts whose id carries no style go under 'unspecified'.

    Styles appear in `WRAPPER_STYLES` order, then 'unspecified'; styles with
    no prompt are left out.
    """
    groups: dict[str, list[PromptRecord]] = {style: [] for style in (*WRAPPER_STYLES, UNSPECIFIED_STYLE)}
    for prompt in records:
        if prompt.kind == "harmful":
            groups[wrapper_style(prompt.id) or UNSPECIFIED_STYLE].append(prompt)
    return {style: prompts for style, prompts in groups.items() if prompts}
