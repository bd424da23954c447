"""The contamination guard: no test record may appear, exactly or nearly, in the training data.

    find_overlap(train_texts, test_texts)          # [{test_index, train_index, kind, similarity}, ...]
    guard_contamination(train_records, test_records)   # raises ContaminationError if any overlap

* **Normalisation**: lowercase, punctuation replaced by a space, whitespace collapsed and stripped
  ("No  pneumothorax." == "no pneumothorax"). A text that normalises to "" is ignored.
* **Exact** duplicates: equal normalised texts, found by hashing (a dict), O(n + m).
* **Near** duplicates: Jaccard similarity of the sets of character n-grams ("shingles", n=5 by default)
  of the normalised texts >= `near_threshold`. The shingle sets are binary sparse matrices (a
  CountVectorizer vocabulary fitted on both sides, so no hash collisions: the result equals a
  brute-force set computation); |A n B| for all pairs comes from sparse products, a block of test rows
  at a time, and Jaccard = |A n B| / (|A| + |B| - |A n B|). A text shorter than n characters has no
  shingle and can only match exactly.
* Each test record gets its best match only: an exact one if there is one (similarity 1.0), else the
  train record of highest Jaccard (the lowest train index among ties).

The guard's message names record ids and similarities, never record text (the data may be private).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import SynthdxError
from ..records import Record

__all__ = ["ContaminationError", "duplicate_groups", "find_overlap", "guard_contamination", "normalise_text"]

_PUNCT_RE = re.compile(r"[^\w\s]|_")
_SPACE_RE = re.compile(r"\s+")
_BLOCK_CELLS = 4_000_000  # test rows per block x train rows: bounds the dense similarity block (~32 MB)
_SHOW = 5  # matches named in a ContaminationError message


class ContaminationError(SynthdxError):
    """Test records that appear (exactly or nearly) in the training data. `matches` holds the
    find_overlap dicts, with `test_id` and `train_id` added."""

    def __init__(self, message: str, matches: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.matches = matches or []


def normalise_text(text: str) -> str:
    """Lowercase, punctuation -> space, whitespace collapsed and stripped."""
    return _SPACE_RE.sub(" ", _PUNCT_RE.sub(" ", text.lower())).strip()


def _check_texts(texts: Sequence[str], what: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{what}: pass a list of texts, not one string")
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{what}[{i}]: expected a string, got {type(t).__name__}")
        out.append(normalise_text(t))
    return out


def find_overlap(train_texts: Sequence[str], test_texts: Sequence[str], near_threshold: float | None = 0.9,
                 ngram: int = 5) -> list[dict[str, Any]]:
    """Test texts that occur in the training texts, exactly or nearly (see the module doc).

    Returns one dict per matched test text, in test order: {"test_index", "train_index",
    "kind": "exact" | "near", "similarity"} (1.0 for exact; the shingle Jaccard for near).
    `near_threshold=None` looks for exact duplicates only."""
    if near_threshold is not None and not 0.0 < near_threshold <= 1.0:
        raise ValueError(f"near_threshold must be in (0, 1], got {near_threshold}")
    if not isinstance(ngram, (int, np.integer)) or ngram < 1:
        raise ValueError(f"ngram must be a positive integer, got {ngram!r}")
    train = _check_texts(train_texts, "train_texts")
    test = _check_texts(test_texts, "test_texts")

    # exact: first train index of each normalised text
    first: dict[str, int] = {}
    for j, t in enumerate(train):
        if t:
            first.setdefault(t, j)
    best: dict[int, dict[str, Any]] = {}
    for i, t in enumerate(test):
        j = first.get(t) if t else None
        if j is not None:
            best[i] = {"test_index": i, "train_index": j, "kind": "exact", "similarity": 1.0}

    if near_threshold is not None:
        # near: only test texts without an exact match, against train texts that have shingles
        todo = [i for i, t in enumerate(test) if t and i not in best and len(t) >= ngram]
        cand = [j for j, t in enumerate(train) if len(t) >= ngram]
        if todo and cand:
            best.update(_near(train, cand, test, todo, near_threshold, ngram))
    return [best[i] for i in sorted(best)]


def _jaccard_blocks(train: list[str], test: list[str], ngram: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first test row, Jaccard block of shape (rows, len(train))) over blocks of test rows; every
    text must have at least one shingle (len >= ngram)."""
    from sklearn.feature_extraction.text import CountVectorizer

    vec = CountVectorizer(analyzer="char", ngram_range=(ngram, ngram), lowercase=False, binary=True,
                          dtype=np.int32)
    X = vec.fit_transform(train + test).tocsr()  # one vocabulary for both sides: no collisions
    A, B = X[:len(train)], X[len(train):]  # train / test shingle sets, binary rows
    size_a = np.asarray(A.sum(axis=1)).ravel().astype(np.int64)
    size_b = np.asarray(B.sum(axis=1)).ravel().astype(np.int64)
    AT = A.T.tocsc()  # the (shingle x train) side of every block product, built once
    step = max(1, _BLOCK_CELLS // max(1, len(train)))
    for start in range(0, len(test), step):
        stop = min(start + step, len(test))
        inter = (B[start:stop] @ AT).toarray().astype(np.int64)  # |A n B| for the block's pairs
        union = size_b[start:stop, None] + size_a[None, :] - inter
        yield start, inter / np.maximum(union, 1)  # union >= 1: every text here has a shingle


def _near(train: list[str], cand: list[int], test: list[str], todo: list[int], threshold: float,
          ngram: int) -> dict[int, dict[str, Any]]:
    """Best near match (Jaccard >= threshold) of each test text in `todo` among train texts `cand`."""
    out: dict[int, dict[str, Any]] = {}
    for start, jac in _jaccard_blocks([train[j] for j in cand], [test[i] for i in todo], ngram):
        arg = jac.argmax(axis=1)  # first (lowest train index) among ties
        top = jac[np.arange(len(jac)), arg]
        for r in np.flatnonzero(top >= threshold):
            i = todo[start + r]
            out[i] = {"test_index": i, "train_index": cand[int(arg[r])], "kind": "near",
                      "similarity": float(top[r])}
    return out


def duplicate_groups(texts: Sequence[str], near_threshold: float | None = 0.9, ngram: int = 5) -> list[int]:
    """For each text, the index of the first text of its duplicate group: texts equal after
    normalisation, or linked by a chain of pairs with shingle Jaccard >= near_threshold, form one
    group (connected components). A split that keeps groups whole cannot put a text on one side and
    its (near) copy on the other, so the guard then has nothing to find between the two sides."""
    norm = _check_texts(texts, "texts")
    parent = list(range(len(norm)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)  # the root is always the group's first index

    first: dict[str, int] = {}
    for i, t in enumerate(norm):
        if t:
            union(i, first.setdefault(t, i))
    if near_threshold is not None:
        # one representative per exact group is enough for the near pairs
        reps = [i for i, t in enumerate(norm) if t and first[t] == i and len(t) >= ngram]
        texts_r = [norm[i] for i in reps]
        for start, jac in _jaccard_blocks(texts_r, texts_r, ngram):
            rows, cols = np.nonzero(jac >= near_threshold)
            for r, c in zip(rows, cols):
                if c < start + r:
                    union(reps[start + r], reps[c])
    return [find(i) for i in range(len(norm))]


def guard_contamination(train: Sequence[Record], test: Sequence[Record], near_threshold: float | None = 0.9,
                        what: str = "test set") -> None:
    """Raise ContaminationError if any record of `test` appears exactly or near-exactly (character
    5-gram Jaccard >= `near_threshold`) in `train`. Records with empty text are ignored. The message
    gives the counts and the first few matches as test id -> train id (similarity), never text."""
    matches = find_overlap([r.text or "" for r in train], [r.text or "" for r in test],
                           near_threshold=near_threshold)
    if not matches:
        return
    for m in matches:
        m["test_id"] = test[m["test_index"]].id
        m["train_id"] = train[m["train_index"]].id
    n_exact = sum(m["kind"] == "exact" for m in matches)
    n_near = len(matches) - n_exact
    parts = [f"{n_exact} exactly"]
    if near_threshold is not None:
        parts.append(f"{n_near} near-exactly (character 5-gram Jaccard >= {near_threshold:g})")
    shown = "; ".join(f"test {m['test_id']!r} -> train {m['train_id']!r} ({m['kind']}, {m['similarity']:.3f})"
                      for m in matches[:_SHOW])
    more = f"; and {len(matches) - _SHOW} more" if len(matches) > _SHOW else ""
    raise ContaminationError(
        f"{what}: {len(matches)} of {len(test)} records appear in the training data "
        f"({', '.join(parts)}): {shown}{more}. Remove them from the training data or the {what}.",
        matches)
