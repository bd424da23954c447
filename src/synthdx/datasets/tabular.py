"""Generic loaders: JSONL, CSV and Parquet files with a column mapping."""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import DataError
from ..io import not_utf8_error, read_jsonl
from ..records import Record

csv.field_size_limit(sys.maxsize)


@dataclass
class ColumnMap:
    """Which columns hold the id, the text (several are joined) and the labels."""

    id: str = "id"
    text: tuple[str, ...] | str = "text"
    labels: str | None = "labels"
    label_sep: str = ";"
    """Separator when labels are a string ("a;b"); lists are taken as they are."""

    @property
    def text_columns(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else tuple(self.text)


def _detect_format(path: Path) -> str:
    suffixes = "".join(path.suffixes).lower()
    for fmt, exts in (("jsonl", (".jsonl", ".ndjson", ".json")), ("csv", (".csv", ".tsv")),
                      ("parquet", (".parquet", ".pq"))):
        if any(suffixes.endswith(e) for e in exts):
            return fmt
    raise DataError("cannot tell the format from the file name; use .jsonl, .csv or .parquet", path)


def iter_rows(path: str | Path, fmt: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number as an editor shows it, row dict) from a JSONL, CSV or Parquet file."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    fmt = fmt or _detect_format(path)
    if fmt == "jsonl":
        yield from read_jsonl(path)
    elif fmt == "csv":
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        try:
            with open(path, encoding="utf-8", newline="") as f:
                # csv.reader, not DictReader: DictReader skips blank lines silently, which would
                # shift every later row's line number; line_num is where the row's last line ends
                reader = csv.reader(f, delimiter=delimiter)
                header = next(reader, None)
                if header is None:
                    return
                start = reader.line_num + 1
                for fields in reader:
                    if fields:
                        if len(fields) > len(header):
                            raise DataError(f"more fields than the header has ({len(header)})", path, start)
                        yield start, dict(zip(header, fields + [None] * (len(header) - len(fields))))
                    start = reader.line_num + 1
        except UnicodeDecodeError:
            raise not_utf8_error(path) from None
        except csv.Error as e:
            raise DataError(f"malformed CSV ({e})", path, getattr(reader, "line_num", None)) from None
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        for i, row in enumerate(table.to_pylist()):
            yield i + 1, row  # parquet has no lines: the 1-based row number stands in
    else:
        raise DataError(f"unknown format {fmt!r}", path)


def _parse_labels(value: Any, sep: str, path: Path, line: int, field: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, str) for v in value):
            raise DataError("labels must be strings", path, line, field)
        return [v.strip() for v in value if v.strip()]
    if isinstance(value, str):
        return [v.strip() for v in value.split(sep) if v.strip()]
    raise DataError(f"labels must be a list or a '{sep}'-separated string, not {type(value).__name__}",
                    path, line, field)


def load_table(path: str | Path, columns: ColumnMap | None = None, fmt: str | None = None,
               require_labels: bool = False, allow_empty_text: bool = False) -> list[Record]:
    """Load records from a JSONL / CSV / Parquet file; errors name the file, line and field."""
    path = Path(path)
    cm = columns or ColumnMap()
    records: list[Record] = []
    seen: dict[str, int] = {}
    for line, row in iter_rows(path, fmt):
        for col in (cm.id, *cm.text_columns):
            if col not in row:
                raise DataError(f"missing column (the row has: {', '.join(map(str, row)) or 'nothing'})",
                                path, line, col)
        rid = row[cm.id]
        if rid is None or str(rid).strip() == "":
            raise DataError("empty id", path, line, cm.id)
        rid = str(rid)
        if rid in seen:
            raise DataError(f"duplicate id {rid!r} (first on line {seen[rid]})", path, line, cm.id)
        seen[rid] = line
        parts = []
        for col in cm.text_columns:
            v = row[col]
            if v is not None and not isinstance(v, str):
                raise DataError(f"text must be a string, not {type(v).__name__}", path, line, col)
            if v and v.strip():
                parts.append(v.strip())
        text = "\n".join(parts)
        if not text and not allow_empty_text:
            raise DataError("empty text", path, line, "/".join(cm.text_columns))
        labels = None
        if cm.labels is not None:
            if cm.labels not in row and require_labels:
                raise DataError("missing column", path, line, cm.labels)
            labels = _parse_labels(row.get(cm.labels), cm.label_sep, path, line, cm.labels)
        records.append(Record(id=rid, text=text, labels=labels, meta={"source": str(path), "line": line}))
    return records
