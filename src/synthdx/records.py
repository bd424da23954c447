"""The one data model every stage shares: a Record, and the LabelSpace its labels live in."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable


@dataclass
class Record:
    """One document. `labels` is None when the record is unlabelled (nothing is known),
    and an empty list when it is labelled and has no label."""

    id: str
    text: str
    labels: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "labels": self.labels, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Record":
        return cls(id=str(d["id"]), text=d["text"], labels=d.get("labels"), meta=d.get("meta") or {})


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


@dataclass
class LabelSpace:
    """An ordered set of label names, with synonyms that normalise to them."""

    names: list[str]
    synonyms: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate label names in {self.names}")
        unknown = set(self.synonyms) - set(self.names)
        if unknown:
            raise ValueError(f"synonyms given for unknown labels: {sorted(unknown)}")
        self._lookup: dict[str, str] = {}
        for name in self.names:
            self._lookup[_norm(name)] = name
            for syn in self.synonyms.get(name, []):
                self._lookup[_norm(syn)] = name

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._lookup.values()

    def index(self, name: str) -> int:
        return self.names.index(name)

    def normalise(self, text: str) -> str | None:
        """The label name `text` means (case, punctuation and synonyms ignored), or None."""
        return self._lookup.get(_norm(text))

    def to_multi_hot(self, labels: Iterable[str]) -> list[int]:
        s = set(labels)
        return [int(n in s) for n in self.names]

    def from_multi_hot(self, row: Iterable[int | bool]) -> list[str]:
        return [n for n, v in zip(self.names, row) if v]
