"""A patient as phenotype only: the shared input of rare-disease diagnosis, real or synthetic.

Real patients (phenopacket-store cases, `datasets.phenopackets`) and synthetic ones (generated from
HPO annotations) use this one structure, so a model, a renderer or a ranker cannot tell them apart
by shape. It holds no genetic data and no diagnosis: those cannot leak into a model's input
because there is nowhere to put them. The answer lives beside the patient, in `Case.gold`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Case", "Patient"]

SEXES = ("FEMALE", "MALE")


@dataclass
class Patient:
    """What a clinician could know without a genetic test.

    `id` is an opaque identifier for joining predictions to cases; in published data it can name a
    gene (e.g. `PMID_31761904_Individual_NBAS_58`), so it must never be shown to a model.
    `pmids` are the publications the case comes from (for leaving their annotations out of a
    knowledge base); they are not clinical input either."""

    id: str
    sex: str | None = None           # "FEMALE" | "MALE" | None (unknown or other)
    age: str | None = None           # ISO 8601 duration at the last encounter, e.g. "P34Y", "P6M"
    observed: tuple[str, ...] = ()   # HPO ids of features present, in source order, no duplicates
    excluded: tuple[str, ...] = ()   # HPO ids of features looked for and found absent
    onset: str | None = None         # HPO onset term (HP:0003593 Infantile onset, ...), when given so
    onset_age: str | None = None     # ISO 8601 duration of the onset age, when given as an age
    pmids: tuple[str, ...] = ()      # "PMID:..." of the source publication(s)
    term_labels: dict[str, str] = field(default_factory=dict, repr=False)  # source labels by HPO id

    def __post_init__(self) -> None:
        if self.sex is not None and self.sex not in SEXES:
            raise ValueError(f"sex must be one of {SEXES} or None, got {self.sex!r}")
        self.observed = tuple(dict.fromkeys(self.observed))
        self.excluded = tuple(dict.fromkeys(self.excluded))
        self.pmids = tuple(self.pmids)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "sex": self.sex, "age": self.age, "observed": list(self.observed),
                "excluded": list(self.excluded), "onset": self.onset, "onset_age": self.onset_age,
                "pmids": list(self.pmids), "term_labels": dict(self.term_labels)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Patient":
        return cls(id=str(d["id"]), sex=d.get("sex"), age=d.get("age"),
                   observed=tuple(d.get("observed") or ()), excluded=tuple(d.get("excluded") or ()),
                   onset=d.get("onset"), onset_age=d.get("onset_age"), pmids=tuple(d.get("pmids") or ()),
                   term_labels=dict(d.get("term_labels") or {}))


@dataclass
class Case:
    """A patient and, when known, the answer. `gold` holds disease ids (`OMIM:154700`); None means
    unlabelled. `source` says where the case was read from (file, zip member, JSONL line): in
    phenopacket-store its folder names the gene, so it is for error messages and audit only."""

    patient: Patient
    gold: tuple[str, ...] | None = None
    gold_labels: tuple[str, ...] = ()
    source: str = ""

    @property
    def id(self) -> str:
        return self.patient.id

    def to_dict(self) -> dict[str, Any]:
        return {"patient": self.patient.to_dict(),
                "gold": None if self.gold is None else list(self.gold),
                "gold_labels": list(self.gold_labels), "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Case":
        gold = d.get("gold")
        return cls(Patient.from_dict(d["patient"]), None if gold is None else tuple(gold),
                   tuple(d.get("gold_labels") or ()), d.get("source", ""))
