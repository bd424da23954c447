"""Errors a user can act on: each names where the problem is."""

from __future__ import annotations

from pathlib import Path


class SynthdxError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class DataError(SynthdxError):
    """Malformed input data. Names the file, the line (1-based, as an editor shows it) and the field."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None,
                 field: str | None = None):
        self.path, self.line, self.field = path, line, field
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ConfigError(SynthdxError):
    """An experiment config that does not validate."""
