"""MTSamples (`mtsamples*.csv`): transcribed medical reports for medical-specialty classification.

The file has one row per (report, category) filing on mtsamples.com, with the columns
`id, description, medical_specialty, sample_name, transcription, keywords`. Taken naively it
misleads in two ways, and this loader handles both:

1. **The same report is filed under several categories.** In the dev file 2,968 non-empty rows hold
   only 1,400 distinct texts (up to 4 rows each). One row per record would put copies of a report
   on both sides of any split and turn one multi-label document into several contradicting
   single-label ones. So rows are grouped by their normalised transcription (whitespace collapsed,
   case-folded): **one Record per distinct text**, its labels the set of specialties it is filed
   under (multi-label), its id `"mts-" + sha256(normalised text)[:12]`. Because the id is a
   function of the text, `splits.hash_split(records, ...)` on `Record.id` always keeps every copy
   of a report on one side, and the id does not change when the file is reordered.

2. **Some categories are document types, not specialties.** They say what kind of document it
   is, not which specialty it belongs to, and nearly every text filed under one is also filed
   under a real specialty (share of texts also filed elsewhere in the dev file, in brackets).
   They are kept in `meta["document_types"]` and are not labels (`DOCUMENT_TYPES`):

   - `Consult - History and Phy.` (99%), `SOAP / Chart / Progress Notes` (96%),
     `Discharge Summary` (93%), `Office Notes` (100%), `Letters` (90%): note and letter formats.
   - `IME-QME-Work Comp etc.` (100%): independent / qualified medical evaluations for insurers.
   - `Emergency Room Reports` (95%): a care setting; the reports cover syncope, stroke, dental
     pain, head injury, sickle-cell crises..., filed again under the specialty concerned.
   - `Surgery` (96%): the site files every operative or procedure note here (cataract
     extractions, cystoscopies, hip pinnings, CT-guided biopsies) *and* under the specialty that
     operated (Ophthalmology, Urology, Orthopedic...). As a label it would mean "is an operative
     note", a format, and it would dominate the label space (662 of 1,400 texts).
   - `Autopsy` (0%, 4 texts): a kind of report (post-mortem examination), never filed under a
     specialty; its specialty would be (forensic) pathology.

   Kept as specialties although also mostly co-filed: `Radiology` (imaging reports are written
   by radiologists, so the label names the author's specialty) and `General Medicine`
   (internal / family medicine).

Specialties with fewer than `min_label_count` distinct texts are dropped from the label space
(kept per record in `meta["rare_specialties"]`); texts left with no specialty label (only
document types, or only rare specialties) are dropped. Every drop is counted in
`MTSamplesData.summary`. Labels were assigned by the website and are noisy.

The record text is the first row's transcription as written (the site's ",HEADER:," artefacts,
where line breaks became commas, are left in place).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..records import LabelSpace, Record
from .tabular import iter_rows

__all__ = ["DOCUMENT_TYPES", "MTSamplesData", "load_mtsamples", "normalise_text", "text_id"]

REQUIRED_COLUMNS = ("id", "medical_specialty", "transcription")
"""`description` and `sample_name` are kept in meta when present; `keywords` is not used."""

DOCUMENT_TYPES: frozenset[str] = frozenset({
    "Consult - History and Phy.",
    "SOAP / Chart / Progress Notes",
    "Discharge Summary",
    "Letters",
    "Office Notes",
    "IME-QME-Work Comp etc.",
    "Emergency Room Reports",
    "Surgery",
    "Autopsy",
})
"""Categories that name a kind of document, not a specialty (reasons in the module docstring)."""


def normalise_text(text: str) -> str:
    """The key duplicates are grouped by: whitespace runs collapsed to one space, case-folded."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def text_id(normalised: str) -> str:
    """The stable record id of a normalised text: "mts-" + the first 12 hex digits of its SHA-256."""
    return "mts-" + hashlib.sha256(normalised.encode("utf-8")).hexdigest()[:12]


@dataclass
class MTSamplesData:
    """What `load_mtsamples` returns: the records, their label space and a summary of counts.

    `summary` keys (plain ints / dicts, JSON-ready):

    * `rows_read`, `empty_transcription_rows` (dropped), `rows_used` = rows_read - empty
    * `distinct_texts`; `duplicate_groups` (texts with more than one row) and `duplicate_rows`
      (rows beyond the first of their text): rows_used = distinct_texts + duplicate_rows
    * `min_label_count`; `label_counts` (kept specialty -> distinct texts) and `dropped_labels`
      (rare specialty -> distinct texts); `document_type_counts` (document type -> distinct texts)
    * `dropped_texts` = `dropped_texts_document_type_only` + `dropped_texts_rare_only`
      (texts left without a kept specialty); `records` = distinct_texts - dropped_texts
    * `multi_label_texts` (records with 2+ kept specialties), `multi_specialty_texts` (distinct
      texts filed under 2+ specialties before rare ones were dropped)
    """

    records: list[Record]
    label_space: LabelSpace
    summary: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """The summary as a few printable lines."""
        s = self.summary
        labels = ", ".join(f"{k} {v}" for k, v in s["label_counts"].items())
        dropped = ", ".join(f"{k} {v}" for k, v in s["dropped_labels"].items()) or "none"
        doc = ", ".join(f"{k} {v}" for k, v in s["document_type_counts"].items()) or "none"
        return "\n".join([
            f"rows read {s['rows_read']}, empty transcriptions dropped {s['empty_transcription_rows']}",
            (f"distinct texts {s['distinct_texts']} ({s['duplicate_groups']} filed more than once, "
             f"{s['duplicate_rows']} duplicate rows merged)"),
            (f"records {s['records']} ({s['multi_label_texts']} multi-label); texts dropped without a "
             f"specialty {s['dropped_texts']} (document types only {s['dropped_texts_document_type_only']}, "
             f"rare specialties only {s['dropped_texts_rare_only']})"),
            f"specialties kept (>= {s['min_label_count']} texts): {labels}",
            f"specialties dropped: {dropped}",
            f"document types (not labels): {doc}",
        ])


@dataclass
class _Group:
    """The rows sharing one normalised transcription."""

    text: str
    lines: list[int] = field(default_factory=list)
    row_ids: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # distinct, in file order
    sample_names: list[str] = field(default_factory=list)  # distinct, in file order
    description: str = ""

    def add(self, line: int, row_id: str, category: str, sample_name: str, description: str) -> None:
        self.lines.append(line)
        self.row_ids.append(row_id)
        if category and category not in self.categories:
            self.categories.append(category)
        if sample_name and sample_name not in self.sample_names:
            self.sample_names.append(sample_name)
        if description and not self.description:
            self.description = description


def _cell(row: dict[str, Any], col: str) -> str:
    v = row.get(col)
    return "" if v is None else str(v).strip()


def load_mtsamples(path: str | Path, min_label_count: int = 20,
                   document_types: frozenset[str] | set[str] = DOCUMENT_TYPES) -> MTSamplesData:
    """Medical-specialty records from an MTSamples CSV: one Record per distinct transcription,
    labelled with the specialties it is filed under; document types in `meta["document_types"]`.

    Because there is one Record per distinct text and its id is derived from the text, a hash split
    on `Record.id` (`splits.hash_split`) never separates copies of the same report.

    `meta` holds `source`, `lines` and `row_ids` (the source rows), `sample_names`, `description`
    (the first non-empty one), `filed_under` (every category, as in the file), `document_types`
    and `rare_specialties` (filed under, but dropped for having < `min_label_count` texts).

    Raises DataError (naming the file, and the line where it applies) for a missing column, an
    empty or repeated id, or a file without data rows.
    """
    path = Path(path)
    if min_label_count < 1:
        raise ValueError(f"min_label_count must be >= 1, got {min_label_count}")
    groups: dict[str, _Group] = {}
    seen_ids: dict[str, int] = {}
    rows_read = empty = 0
    for line, row in iter_rows(path, "csv"):
        rows_read += 1
        for col in REQUIRED_COLUMNS:
            if col not in row:
                raise DataError(f"missing column; is this an MTSamples CSV? (it has: "
                                f"{', '.join(map(str, row)) or 'nothing'})", path, line, col)
        row_id = _cell(row, "id")
        if not row_id:
            raise DataError("empty id", path, line, "id")
        if row_id in seen_ids:
            raise DataError(f"duplicate id {row_id!r} (first on line {seen_ids[row_id]})", path, line, "id")
        seen_ids[row_id] = line
        text = row["transcription"] or ""
        key = normalise_text(text)
        if not key:
            empty += 1
            continue
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(text=text.strip())
        group.add(line, row_id, _cell(row, "medical_specialty"), _cell(row, "sample_name"),
                  _cell(row, "description"))
    if rows_read == 0:
        raise DataError("no data rows", path)

    # Count each category once per distinct text, then split them into specialties (label
    # candidates, kept when frequent enough) and document types (never labels).
    per_text = Counter(c for g in groups.values() for c in g.categories)
    specialty_counts = {c: n for c, n in per_text.items() if c not in document_types}
    kept = sorted(c for c, n in specialty_counts.items() if n >= min_label_count)
    kept_set = set(kept)

    records: list[Record] = []
    dropped_doc_only = dropped_rare_only = multi_label = multi_specialty = 0
    for key, g in groups.items():
        specialties = [c for c in g.categories if c not in document_types]
        labels = sorted(c for c in specialties if c in kept_set)
        multi_specialty += len(specialties) > 1
        if not labels:
            if specialties:
                dropped_rare_only += 1
            else:
                dropped_doc_only += 1
            continue
        multi_label += len(labels) > 1
        records.append(Record(id=text_id(key), text=g.text, labels=labels, meta={
            "source": str(path), "lines": g.lines, "row_ids": g.row_ids,
            "sample_names": g.sample_names, "description": g.description,
            "filed_under": g.categories,
            "document_types": [c for c in g.categories if c in document_types],
            "rare_specialties": [c for c in specialties if c not in kept_set],
        }))

    # 12 hex digits are 48 bits: a collision among a few thousand texts is ~1e-8, but say so if it happens
    ids = Counter(r.id for r in records)
    clash = [i for i, n in ids.items() if n > 1]
    if clash:
        raise DataError(f"two different texts hash to the same id {clash[0]}", path)

    def by_count(d: dict[str, int]) -> dict[str, int]:
        return dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))

    summary = {
        "rows_read": rows_read,
        "empty_transcription_rows": empty,
        "rows_used": rows_read - empty,
        "distinct_texts": len(groups),
        "duplicate_groups": sum(len(g.lines) > 1 for g in groups.values()),
        "duplicate_rows": rows_read - empty - len(groups),
        "min_label_count": min_label_count,
        "label_counts": by_count({c: specialty_counts[c] for c in kept}),
        "dropped_labels": by_count({c: n for c, n in specialty_counts.items() if c not in kept_set}),
        "document_type_counts": by_count({c: n for c, n in per_text.items() if c in document_types}),
        "dropped_texts": dropped_doc_only + dropped_rare_only,
        "dropped_texts_document_type_only": dropped_doc_only,
        "dropped_texts_rare_only": dropped_rare_only,
        "records": len(records),
        "multi_label_texts": multi_label,
        "multi_specialty_texts": multi_specialty,
    }
    return MTSamplesData(records=records, label_space=LabelSpace(kept), summary=summary)
