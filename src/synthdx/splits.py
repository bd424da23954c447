"""Fixed, documented splits. A record's side depends only on its id, so it never moves when
the file is reordered or other records are added."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Sequence

from .records import Record

if TYPE_CHECKING:
    from .patients import Case


def hash_bucket(record_id: str, salt: str = "synthdx") -> float:
    """A number in [0, 1) from SHA-256 of `salt:id`."""
    digest = hashlib.sha256(f"{salt}:{record_id}".encode()).hexdigest()
    return int(digest[:12], 16) / 16**12


def hash_split(records: Sequence[Record], test_fraction: float, salt: str = "synthdx",
               group_key: str | None = None) -> tuple[list[Record], list[Record]]:
    """(train pool, test part): a record goes to the test part when hash_bucket(id) < test_fraction.
    With `group_key`, records sharing `meta[group_key]` (e.g. a publication or a duplicate text)
    are hashed by that value and stay on one side."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    pool, test = [], []
    for r in records:
        key = str(r.meta.get(group_key, r.id)) if group_key else r.id
        (test if hash_bucket(key, salt) < test_fraction else pool).append(r)
    return pool, test


def duplicate_aware_split(records: Sequence[Record], test_fraction: float, salt: str = "synthdx",
                          near_threshold: float = 0.9) -> tuple[list[Record], list[Record], dict]:
    """`hash_split` by duplicate group: records whose texts are the same or nearly the same
    (character 5-gram Jaccard >= near_threshold) share `meta["duplicate_group"]` (the id of the
    group's first record) and land on one side. Returns (pool, test, summary)."""
    from collections import Counter

    from .evaluate.contamination import duplicate_groups

    groups = duplicate_groups([r.text for r in records], near_threshold)
    for r, g in zip(records, groups):
        r.meta["duplicate_group"] = records[g].id
    pool, test = hash_split(records, test_fraction, salt, group_key="duplicate_group")
    sizes = Counter(groups)
    return pool, test, {
        "records": len(records), "pool": len(pool), "test": len(test),
        "records_in_duplicate_groups": sum(1 for g in groups if sizes[g] > 1),
        "split_rule": f"test if sha256('{salt}:'+duplicate group) maps below {test_fraction}; a group = "
                      f"texts with character 5-gram Jaccard >= {near_threshold}"}


def publication_groups(cases: Sequence[Case]) -> list[str]:
    """Each case's publication group: cases sharing any PMID are linked (union-find), and a group is
    named by its smallest PMID. A case with no PMID is a group of its own (named by its id)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    keys = []
    for c in cases:
        pmids = sorted(c.patient.pmids) or [f"case:{c.id}"]
        keys.append(pmids)
        for p in pmids[1:]:
            a, b = find(pmids[0]), find(p)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return [find(k[0]) for k in keys]
