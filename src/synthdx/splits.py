"""Fixed, documented splits. A record's side depends only on its id, so it never moves when
the file is reordered or other records are added."""

from __future__ import annotations

import hashlib
from typing import Sequence

from .records import Record


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
