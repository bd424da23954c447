"""Small file helpers: atomic writes and JSONL."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8"):
    """Write to a temporary file beside `path`, then rename over it: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, row). Blank lines are skipped; a bad line raises DataError naming it."""
    from .errors import DataError

    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"not valid JSON ({e.msg})", path, lineno) from None
                if not isinstance(row, dict):
                    raise DataError("each line must be a JSON object", path, lineno)
                yield lineno, row
    except UnicodeDecodeError:
        raise not_utf8_error(path) from None


def not_utf8_error(path: Path):
    """A DataError naming the line and byte of the first invalid UTF-8 sequence in `path`."""
    from .errors import DataError

    data = path.read_bytes()
    try:
        data.decode("utf-8")
        return DataError("not UTF-8 text", path)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        return DataError(f"not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}); "
                         "convert it with e.g. `iconv -f latin1 -t utf-8`", path, line)
