"""Percentile bootstrap confidence intervals over records.

A resample draws n records (rows) with replacement; a statistic is recomputed on each of
`n_resamples` resamples and the interval is the (alpha/2, 1 - alpha/2) percentiles of those values
(numpy's default linear interpolation). The point estimate is the statistic on the full data; it is
*not* forced into the interval (a percentile interval can in principle exclude it for very skewed
statistics, e.g. a label with one or two positives).

Resample indices are `np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))`, drawn in
blocks of rows to bound memory; the result is the same as one draw of the whole matrix, so anything
using the same seed, n and n_resamples sees the same resamples.

Speed: the F1-type statistics depend on the data only through per-label TP/FP/FN sums, so they are
computed for all resamples at once as `W @ counts`, where W (B x n) holds how often each record was
drawn and counts (n x 3L) the per-record TP/FP/FN. The built-in metrics (`micro_f1`, `macro_f1`,
`label_f1(j)`) take that fast path; any other callable `metric_fn(y_true, y_pred) -> float` is
called once per resample.

Records that are not independent (the cases of one publication: one cohort, one disease, one team's
way of describing them) are resampled as whole groups when a function takes `groups` (a cluster
bootstrap): each resample draws G groups with replacement and a drawn group brings all its records,
so the interval widens as far as records within a group are alike. `group_rows` sums the per-record
rows per group; the resampling of those G rows is the same as above.
"""

from __future__ import annotations

from typing import Callable, Hashable, Iterator, Sequence

import numpy as np

from .metrics import (
    _check_pair,
    label_counts,
    macro_f1_from_counts,
    micro_f1_from_counts,
    multilabel_scores,
    prf_from_counts,
)

__all__ = [
    "CountMetric",
    "bootstrap_ci",
    "evaluate_system",
    "group_members",
    "group_rows",
    "label_f1",
    "macro_f1",
    "micro_f1",
    "percentile_interval",
    "resample_indices",
    "resampled_sums",
]

# at most this many index entries (B_block x n) in memory at once
_BLOCK_ENTRIES = 4_000_000


class CountMetric:
    """A metric computed from summed (TP, FP, FN) counts of shape (..., L), so it vectorises over
    resamples. Calling it on (y_true, y_pred) gives the plain float."""

    def __init__(self, name: str, from_counts: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]):
        self.name = name
        self.from_counts = from_counts

    def __call__(self, y_true, y_pred) -> float:
        tp, fp, fn = (x.sum(0, dtype=np.int64) for x in label_counts(y_true, y_pred))
        return float(self.from_counts(tp, fp, fn))

    def __repr__(self) -> str:
        return f"CountMetric({self.name!r})"


micro_f1 = CountMetric("micro_f1", micro_f1_from_counts)
macro_f1 = CountMetric("macro_f1", macro_f1_from_counts)


def label_f1(j: int) -> CountMetric:
    """F1 of label column j (zero_division=0)."""
    def f1(tp, fp, fn):
        return prf_from_counts(tp[..., j], fp[..., j], fn[..., j])[2]

    return CountMetric(f"label_f1[{j}]", f1)


def resample_indices(n: int, n_resamples: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Blocks of resample row indices, shape (b, n), b summing to n_resamples (see module docstring)."""
    if n <= 0:
        raise ValueError("cannot bootstrap an empty set of records")
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ENTRIES // n)
    done = 0
    while done < n_resamples:
        b = min(block, n_resamples - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def resampled_sums(rows: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """(B, k) sums of the rows of `rows` (n, k) over each resample (float)."""
    n = rows.shape[0]
    c = np.asarray(rows, dtype=np.float64)
    out = []
    for idx in resample_indices(n, n_resamples, seed):
        b = idx.shape[0]
        # W[r, i] = how often row i is drawn in resample r
        flat = (idx + n * np.arange(b)[:, None]).ravel()
        W = np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        out.append(W @ c)
    return np.concatenate(out)


def _resampled_count_sums(counts: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """(B, k) integer sums of the per-record count rows of `counts` (n, k) over each resample."""
    return np.rint(resampled_sums(counts, n_resamples, seed)).astype(np.int64)


def group_rows(rows: np.ndarray, groups: Sequence[Hashable]) -> np.ndarray:
    """(G, k) sums of the rows of `rows` (n, k) per group, the groups in order of first appearance:
    the units a cluster bootstrap resamples (module docstring)."""
    rows = np.asarray(rows)
    if len(groups) != len(rows):
        raise ValueError(f"groups has {len(groups)} entries for {len(rows)} records")
    position: dict = {}
    index = np.array([position.setdefault(g, len(position)) for g in groups], dtype=np.int64)
    out = np.zeros((len(position),) + rows.shape[1:], dtype=np.float64)
    np.add.at(out, index, rows)
    return out


def group_members(groups: Sequence[Hashable]) -> list[np.ndarray]:
    """The record indices of each group, the groups in order of first appearance (as `group_rows`):
    for a cluster bootstrap of a statistic that is not a sum (a resample is the concatenation of
    the drawn groups' records)."""
    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    return [np.asarray(m, dtype=np.int64) for m in members.values()]


def percentile_interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.percentile(np.asarray(values, dtype=np.float64), [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def _check_args(n_resamples: int, alpha: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def bootstrap_ci(metric_fn: Callable[[np.ndarray, np.ndarray], float], y_true, y_pred,
                 n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """(point, low, high): `metric_fn` on all records, and its (1 - alpha) percentile bootstrap
    interval over `n_resamples` resamples of the records (rows of y_true / y_pred, kept paired).

    `metric_fn` is any `f(y_true, y_pred) -> float`; `micro_f1`, `macro_f1` and `label_f1(j)` from
    this module are computed for all resamples at once (about 1,000x faster)."""
    _check_args(n_resamples, alpha)
    t, p = _check_pair(y_true, y_pred)
    point = float(metric_fn(t, p))
    if isinstance(metric_fn, CountMetric):
        L = t.shape[1]
        sums = _resampled_count_sums(np.concatenate(label_counts(t, p), axis=1), n_resamples, seed)
        values = metric_fn.from_counts(sums[:, :L], sums[:, L:2 * L], sums[:, 2 * L:])
    else:
        values = np.array([metric_fn(t[idx], p[idx])
                           for block in resample_indices(len(t), n_resamples, seed) for idx in block])
    lo, hi = percentile_interval(values, alpha)
    return point, lo, hi


def evaluate_system(y_true, y_pred, names: list[str], n_resamples: int = 1000, seed: int = 0,
                    alpha: float = 0.05) -> dict:
    """`multilabel_scores` plus (1 - alpha) percentile bootstrap intervals, from one shared set of
    resamples (deterministic for the seed), added as:

    * `micro["f1_ci"]`, `macro["f1_ci"]`, `per_label[name]["f1_ci"]`: [low, high]
    * `bootstrap`: {"n_resamples", "alpha", "seed", "method"}

    With the same seed and number of records, two systems scored on the same set see the same
    resamples, which is what a paired comparison needs."""
    _check_args(n_resamples, alpha)
    t, p = _check_pair(y_true, y_pred, names)
    scores = multilabel_scores(t, p, names)
    L = len(names)
    sums = _resampled_count_sums(np.concatenate(label_counts(t, p), axis=1), n_resamples, seed)
    tp, fp, fn = sums[:, :L], sums[:, L:2 * L], sums[:, 2 * L:]
    per_f1 = prf_from_counts(tp, fp, fn)[2]  # (B, L)
    scores["micro"]["f1_ci"] = list(percentile_interval(micro_f1_from_counts(tp, fp, fn), alpha))
    scores["macro"]["f1_ci"] = list(percentile_interval(per_f1.mean(1), alpha))
    for j, name in enumerate(names):
        scores["per_label"][name]["f1_ci"] = list(percentile_interval(per_f1[:, j], alpha))
    scores["bootstrap"] = {
        "n_resamples": int(n_resamples), "alpha": float(alpha), "seed": int(seed),
        "method": "percentile interval; records resampled with replacement",
    }
    return scores
