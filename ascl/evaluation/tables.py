"""Read a benchmark file (CSV, TSV, JSON, JSON Lines or Parquet) into rows keyed by column name.

The public benchmarks ship in different containers: XSTest and HarmBench as
CSV, WildJailbreak as TSV, MATH-500 as JSON Lines, GSM8K as Parquet on the
Hugging Face Hub. Every reader returns the same `Table`, so the format
loaders only deal with column names and values. Errors name the file and the
row (data rows count from 1; the CSV header is not a row).
"""

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")


class FormatError(ValueError):
    """A benchmark file that cannot be read or does not have the columns and values its format needs."""


@dataclass
class Table:
    """The rows of one file; `columns` lists every column name seen, in file order."""

    path: Path
    columns: list[str]
    rows: list[dict[str, Any]]

    def require(self, columns: Iterable[str], format_title: str) -> None:
        """Raise `FormatError` naming the file and every column of `columns` that the table lacks."""
        missing = sorted(set(columns) - set(self.columns))
        if missing:
            raise FormatError(
                f"{self.path}: not a {format_title} file: missing column(s) {missing}; "
                f"found {self.columns}"
            )

    def text(self, number: int, column: str) -> str:
        """Return the stripped text of a cell, or '' when the cell is missing or null. `number` counts from 1."""
        value = self.rows[number - 1].get(column)
        return "" if value is None else str(value).strip()

    def required_text(self, number: int, column: str) -> str:
        """Return the stripped text of a cell; raise `FormatError` when it is empty."""
        value = self.text(number, column)
        if not value:
            raise FormatError(f"{self.path} row {number}: column {column!r} is empty")
        return value


def read_table(path: str | Path) -> Table:
    """Read `path`, choosing the reader by its suffix; raise `FormatError` for an unknown suffix or a malformed file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise FormatError(f"{path}: unknown file type {suffix or '(none)'!r}; expected one of {list(TABLE_SUFFIXES)}")
    if not path.is_file():
        raise FormatError(f"{path}: file not found")
    readers = {".csv": _read_delimited, ".tsv": _read_delimited, ".json": _read_json,
               ".jsonl": _read_json_lines, ".parquet": _read_parquet}
    table = readers[suffix](path)
    if not table.rows:
        raise FormatError(f"{path}: the file has no rows")
    return table


def _read_delimited(path: Path) -> Table:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows: list[dict[str, Any]] = []
    # utf-8-sig drops the byte-order mark that spreadsheet exports put before the first column name.
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        try:
            for row in reader:
                if None in row:
                    raise FormatError(
                        f"{path} row {len(rows) + 1} (line {reader.line_num}): more fields than the header's "
                        f"{len(reader.fieldnames or [])} columns"
                    )
                rows.append(row)
        except csv.Error as exc:
            raise FormatError(f"{path} line {reader.line_num}: invalid {path.suffix[1:].upper()}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise FormatError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return Table(path, list(reader.fieldnames or []), rows)


def _read_json(path: Path) -> Table:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise FormatError(f"{path}: expected a JSON array of objects, got {type(data).__name__}")
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise FormatError(f"{path} row {number}: expected a JSON object, got {type(row).__name__}")
    return Table(path, _columns_of(data), data)


def _read_json_lines(path: Path) -> Table:
    rows: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise FormatError(
                        f"{path} line {line_number}: not valid JSON ({exc.msg} at column {exc.colno})"
                    ) from None
                if not isinstance(row, dict):
                    raise FormatError(f"{path} line {line_number}: expected a JSON object, got {type(row).__name__}")
                rows.append(row)
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return Table(path, _columns_of(rows), rows)


def _read_parquet(path: Path) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise FormatError(f"{path}: not a readable Parquet file ({exc})") from None
    return Table(path, list(table.column_names), table.to_pylist())


def _columns_of(rows: list[dict[str, Any]]) -> list[str]:
    # dict.fromkeys keeps first-seen order, so messages list the columns as the file has them.
    return list(dict.fromkeys(key for row in rows for key in row))
