"""Loaders for real data sets: one entry point, `load_records`, picks the loader by name."""

from __future__ import annotations

from pathlib import Path

from ..records import Record
from .iu_xray import load_iu_xray
from .mtsamples import MTSamplesData, load_mtsamples
from .tabular import ColumnMap, load_table

LOADERS = ("auto", "iu-xray", "mtsamples", "jsonl", "csv", "parquet")


def load_records(path: str | Path, loader: str = "auto", columns: ColumnMap | None = None,
                 **kwargs) -> list[Record]:
    """Load records with a named loader. `auto` picks iu-xray for `indiana_reports*.csv`,
    mtsamples for `mtsamples*.csv` and the generic table loader (format from the file name)
    otherwise. For mtsamples, `kwargs` go to `load_mtsamples` (e.g. `min_label_count`); call that
    directly for its label space and summary of counts."""
    path = Path(path)
    if loader == "auto":
        loader = ("iu-xray" if path.name.startswith("indiana_reports")
                  else "mtsamples" if path.name.startswith("mtsamples") and path.suffix.lower() == ".csv"
                  else "table")
    if loader == "iu-xray":
        return load_iu_xray(path)
    if loader == "mtsamples":
        return load_mtsamples(path, **kwargs).records
    fmt = None if loader in ("table", "auto") else loader
    return load_table(path, columns, fmt=fmt, **kwargs)


__all__ = ["LOADERS", "ColumnMap", "MTSamplesData", "load_iu_xray", "load_mtsamples", "load_records",
           "load_table"]
