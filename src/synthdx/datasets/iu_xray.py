"""IU X-ray (Open-i) reports: `indiana_reports*.csv` with curated labels from the MeSH Problems heads."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..records import Record
from ..tasks.radiology import labels_from_mesh_problems
from .tabular import iter_rows

REQUIRED_COLUMNS = ("uid", "Problems", "findings", "impression")


def report_text(findings: str | None, impression: str | None) -> str:
    """The text a model sees: findings, then impression, as the radiologist wrote them."""
    parts = []
    if findings and findings.strip():
        parts.append(f"FINDINGS: {findings.strip()}")
    if impression and impression.strip():
        parts.append(f"IMPRESSION: {impression.strip()}")
    return "\n".join(parts)


def load_iu_xray(path: str | Path) -> list[Record]:
    """Scored IU X-ray reports. Skips `No Indexing` rows (no curated labels) and rows whose findings
    and impression are both empty; `meta` keeps the indication and the raw Problems field."""
    path = Path(path)
    out: list[Record] = []
    for line, row in iter_rows(path, "csv"):
        for col in REQUIRED_COLUMNS:
            if col not in row:
                raise DataError("missing column; is this an indiana_reports CSV?", path, line, col)
        problems = (row["Problems"] or "").strip()
        if not problems:
            raise DataError("empty Problems field", path, line, "Problems")
        if problems == "No Indexing":
            continue
        text = report_text(row["findings"], row["impression"])
        if not text:
            continue
        out.append(Record(
            id=str(row["uid"]).strip(), text=text, labels=labels_from_mesh_problems(problems),
            meta={"source": str(path), "line": line, "problems": problems,
                  "indication": (row.get("indication") or "").strip()},
        ))
    return out
