"""Reading the user's text files: calibration text and labelled evaluation data.

txt: one text a line. jsonl: one JSON object a line. csv: a header row, then rows.
Every problem is a DataFileError naming the file, and where it helps, the line.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from distilforge.errors import DataFileError

FORMATS = (".txt", ".jsonl", ".csv")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a txt (as {'text': line}), jsonl or csv file. Never empty."""
    return [row for _line, row in numbered_rows(path)]


def numbered_rows(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) pairs, so an error can name the line a bad value is on. Never empty."""
    path = Path(path)
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        rows = [(n, {"text": line}) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    elif suffix == ".jsonl":
        rows = _jsonl_rows(path, text)
    elif suffix == ".csv":
        rows = _csv_rows(path, text)
    else:
        raise DataFileError(f"{path}: unknown file type {path.suffix!r}; expected one of {', '.join(FORMATS)}")
    if not rows:
        raise DataFileError(f"{path}: no rows (the file is empty or only blank lines)")
    return rows


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataFileError(f"{path}: no such file")
    if not path.is_file():
        raise DataFileError(f"{path}: not a file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataFileError(f"{path}: cannot be read ({e.strerror})") from None
    if not raw.strip():
        raise DataFileError(f"{path}: the file is empty")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataFileError(f"{path}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    # JSON Lines ends lines with \n only; str.splitlines() would also split on \u2028, \x1c, ... inside a string
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except json.JSONDecodeError as e:
            raise DataFileError(f"{path}:{number}: not valid JSON ({e.msg})") from None
        except RecursionError:
            raise DataFileError(f"{path}:{number}: not valid JSON (nested too deeply)") from None
        except UnicodeEncodeError:
            raise DataFileError(f"{path}:{number}: a string holds a lone surrogate escape (\\ud800-\\udfff), "
                                "which is not text") from None
        if not isinstance(row, dict):
            raise DataFileError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append((number, row))
    return rows


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    try:
        reader = csv.DictReader(io.StringIO(text))
        rows = [(reader.line_num, dict(r)) for r in reader]  # line_num: where the row ends
    except csv.Error as e:
        raise DataFileError(f"{path}: not valid CSV ({e})") from None
    if not reader.fieldnames:
        raise DataFileError(f"{path}: no header row")
    return rows


def field(path: Path, rows: list[dict[str, Any]], name: str, kind: type | tuple[type, ...] = str) -> list[Any]:
    """The value of `name` in every row; an error names the first row without it."""
    if rows and all(name not in r for r in rows):
        found = sorted({str(k) for r in rows[:20] for k in r if k is not None})  # csv: None keys extra cells
        hint = "; a .csv file's first row is the header" if path.suffix.lower() == ".csv" else ""
        raise DataFileError(f"{path}: no {name!r} field or column (found: {_shorten(found)}{hint})")
    values = []
    for number, row in enumerate(rows, start=1):
        value = row.get(name)
        if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
            raise DataFileError(f"{path}: row {number}: {name!r} is missing or not a "
                                f"{kind.__name__ if isinstance(kind, type) else ' or '.join(k.__name__ for k in kind)}")
        values.append(value)
    return values


def _shorten(names: list[str], limit: int = 8, width: int = 40) -> str:
    shown = [n if len(n) <= width else n[:width] + "..." for n in names[:limit]]
    return ", ".join(shown) + (f", ... ({len(names)} in all)" if len(names) > limit else "") if names else "none"
