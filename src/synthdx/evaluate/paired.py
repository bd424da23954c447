"""Paired comparisons of two systems scored on the same records: is A better than B?

Two systems evaluated on one test set are not independent samples, so their separate bootstrap
intervals overlapping says little. The tests here use the pairing:

* `paired_bootstrap` / `paired_bootstrap_correct`: each resample draws n records with replacement
  (`bootstrap.resample_indices`, so the same seed and n give the same resamples as everywhere else
  in this package) and scores **both** systems on those same records; the statistic is the
  difference d_r = metric_A - metric_B. The interval is the (alpha/2, 1 - alpha/2) percentile
  interval of the d_r; the two-sided p-value of "no difference" comes from the bootstrap
  distribution shifted to be centred on 0 (the null):

      p = (1 + #{r : |d_r - diff| >= |diff|}) / (B + 1),   diff = metric_A - metric_B on all records

  (the +1 counts the observed data as one draw, so p is never 0; the smallest attainable p is
  1 / (B + 1)). Comparisons use a tolerance of 1e-12 so that a resampled difference equal to the
  observed one up to rounding counts as "at least as extreme" (conservative); with identical
  systems every d_r is 0, diff is 0 and p = 1.
  With `groups` (`paired_bootstrap_correct`), whole groups of records are drawn instead (a cluster
  bootstrap, `bootstrap.group_rows`), for records that are not independent, such as the cases of one
  publication; each resample's difference is then its hits of A minus B over the records it drew.
* `mcnemar`: the exact McNemar test on per-record correctness (discordant pairs only), with the
  continuity-corrected chi-square as well; `mcnemar_per_label` runs it for each label's 0/1
  decisions and adjusts the p-values across labels with Holm's step-down method (`holm`).
* `compare_systems`: the above for several pairs of systems, as JSON-ready dicts.

The built-in count metrics (`micro_f1`, `macro_f1`, `label_f1(j)`) are computed for all resamples
at once from the per-record TP/FP/FN of both systems (`bootstrap._resampled_count_sums`); any other
callable `metric(y_true, y_pred) -> float` is called twice per resample.
"""

from __future__ import annotations

import itertools
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import stats

from .bootstrap import (
    CountMetric,
    _check_args,
    _resampled_count_sums,
    group_rows,
    macro_f1,
    micro_f1,
    percentile_interval,
    resample_indices,
)
from .metrics import _check_pair, label_counts, prf_from_counts

__all__ = [
    "compare_systems",
    "holm",
    "mcnemar",
    "mcnemar_per_label",
    "paired_bootstrap",
    "paired_bootstrap_correct",
]

# a resampled difference within this of the observed extreme counts as at least as extreme
_TIE_TOL = 1e-12


def _metric_name(metric: Callable) -> str:
    if isinstance(metric, CountMetric):
        return metric.name
    return getattr(metric, "__name__", repr(metric))


def _bootstrap_p_value(diffs: np.ndarray, diff: float) -> float:
    """Two-sided p of diff = 0 from the null-centred bootstrap distribution (module docstring)."""
    extreme = np.abs(diffs - diff) >= abs(diff) - _TIE_TOL
    return float((1 + np.count_nonzero(extreme)) / (len(diffs) + 1))


def _result(name: str, a: float, b: float, diffs: np.ndarray, n: int, n_resamples: int,
            alpha: float, seed: int) -> dict:
    diff = a - b
    return {
        "metric": name, "a": float(a), "b": float(b), "diff": float(diff),
        "ci": list(percentile_interval(diffs, alpha)),
        "p_value": _bootstrap_p_value(diffs, diff),
        "n": int(n), "n_resamples": int(n_resamples), "alpha": float(alpha), "seed": int(seed),
    }


def _check_three(y_true, pred_a, pred_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y_true, pred_a, pred_b as 0/1 matrices of one shape (ValueError otherwise)."""
    t, a = _check_pair(y_true, pred_a)
    _, b = _check_pair(t, pred_b)
    if len(t) == 0:
        raise ValueError("cannot compare systems on an empty set of records")
    return t, a, b


def _paired_count_diffs(t: np.ndarray, a: np.ndarray, b: np.ndarray, metrics: Sequence[CountMetric],
                        n_resamples: int, seed: int) -> list[np.ndarray]:
    """For each count metric, the (B,) resampled differences metric(A) - metric(B), all from one
    set of resamples: per-record TP/FP/FN of both systems side by side, (n, 6L), summed per resample."""
    L = t.shape[1]
    counts = np.concatenate(label_counts(t, a) + label_counts(t, b), axis=1)
    sums = _resampled_count_sums(counts, n_resamples, seed)
    sa, sb = sums[:, :3 * L], sums[:, 3 * L:]

    def split(s):
        return s[:, :L], s[:, L:2 * L], s[:, 2 * L:]

    return [m.from_counts(*split(sa)) - m.from_counts(*split(sb)) for m in metrics]


def paired_bootstrap(y_true, pred_a, pred_b, metric: Callable = micro_f1, n_resamples: int = 1000,
                     seed: int = 0, alpha: float = 0.05) -> dict:
    """Paired percentile bootstrap of metric(A) - metric(B) on the same records.

    `y_true`, `pred_a`, `pred_b`: (n, L) 0/1 matrices (rows = records). `metric` is a `CountMetric`
    (`micro_f1`, `macro_f1`, `label_f1(j)`: all resamples at once) or any callable
    `metric(y_true, y_pred) -> float`, called on the resampled rows (then the three arrays only need
    the same number of rows and pred_a / pred_b the same shape, so a score-based metric works too).

    Returns {"metric": name, "a", "b": the metric on all records, "diff": a - b,
    "ci": [low, high] of the resampled differences, "p_value": two-sided bootstrap p of no
    difference, "n", "n_resamples", "alpha", "seed"} (plain Python types)."""
    _check_args(n_resamples, alpha)
    if isinstance(metric, CountMetric):
        t, a, b = _check_three(y_true, pred_a, pred_b)
        (diffs,) = _paired_count_diffs(t, a, b, [metric], n_resamples, seed)
    else:
        t, a, b = np.asarray(y_true), np.asarray(pred_a), np.asarray(pred_b)
        if t.ndim == 0 or a.shape != b.shape or len(t) != len(a):
            raise ValueError(f"y_true, pred_a, pred_b must have one number of rows and pred_a, pred_b one "
                             f"shape; got {t.shape}, {a.shape}, {b.shape}")
        if len(t) == 0:
            raise ValueError("cannot compare systems on an empty set of records")
        diffs = np.array([metric(t[idx], a[idx]) - metric(t[idx], b[idx])
                          for block in resample_indices(len(t), n_resamples, seed) for idx in block],
                         dtype=np.float64)
    return _result(_metric_name(metric), float(metric(t, a)), float(metric(t, b)), diffs, len(t),
                   n_resamples, alpha, seed)


def _as_correct(x, name: str) -> np.ndarray:
    """A 1-D 0/1 per-record correctness vector (booleans allowed)."""
    c = np.asarray(x)
    if c.ndim != 1:
        raise ValueError(f"{name} must be a 1-D per-record 0/1 correctness vector, got shape {c.shape}")
    if c.size and not np.isin(c, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0/1 (or booleans)")
    return c.astype(np.int8, copy=False)


def _check_correct(correct_a, correct_b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_correct(correct_a, "correct_a"), _as_correct(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b differ in length: {len(a)} vs {len(b)}")
    if len(a) == 0:
        raise ValueError("cannot compare systems on an empty set of records")
    return a, b


def paired_bootstrap_correct(correct_a, correct_b, n_resamples: int = 1000, seed: int = 0,
                             alpha: float = 0.05, groups: Sequence | None = None) -> dict:
    """`paired_bootstrap` of the accuracy difference from per-record 0/1 correctness vectors
    (e.g. the top-1 hit of each case for two rankers: `ranks <= 1`). Same keys, metric "accuracy".
    `groups` (one key per record, e.g. its publication): resample whole groups (module docstring);
    the result then also holds "n_groups"."""
    _check_args(n_resamples, alpha)
    a, b = _check_correct(correct_a, correct_b)
    n = len(a)
    if groups is None:
        sums = _resampled_count_sums(np.stack([a, b], axis=1), n_resamples, seed)  # (B, 2) hits
        diffs = sums[:, 0] / n - sums[:, 1] / n
        return _result("accuracy", float(a.mean()), float(b.mean()), diffs, n, n_resamples, alpha, seed)
    rows = group_rows(np.stack([a, b, np.ones_like(a)], axis=1), groups)  # per group: hits A, hits B, records
    sums = _resampled_count_sums(rows, n_resamples, seed)
    diffs = (sums[:, 0] - sums[:, 1]) / sums[:, 2]
    return {**_result("accuracy", float(a.mean()), float(b.mean()), diffs, n, n_resamples, alpha, seed),
            "n_groups": len(rows)}


def _mcnemar_from_discordant(b: int, c: int) -> dict:
    """Exact and continuity-corrected McNemar from the discordant counts b, c."""
    m = b + c
    if m == 0:
        return {"p_value": 1.0, "chi2": 0.0, "chi2_p_value": 1.0}
    # under H0 each discordant record favours A or B with probability 1/2
    p_exact = float(stats.binomtest(b, m, 0.5).pvalue)
    # Edwards' continuity correction, floored at 0: with b == c the statistic is 0 (p = 1), not 1/m
    chi2 = max(abs(b - c) - 1, 0) ** 2 / m
    return {"p_value": min(p_exact, 1.0), "chi2": float(chi2), "chi2_p_value": float(stats.chi2.sf(chi2, 1))}


def mcnemar(correct_a, correct_b) -> dict:
    """McNemar's test of equal accuracy of two systems on the same records.

    b = #(A right, B wrong), c = #(A wrong, B right). `p_value` is the exact two-sided binomial
    p (`scipy.stats.binomtest(b, b + c, 0.5)`); `chi2` = (|b - c| - 1)^2 / (b + c) (continuity
    corrected; floored at 0 when b == c) with its chi-square(1) p in `chi2_p_value`. With no
    discordant records p = 1.

    Returns {"n", "b", "c", "acc_a", "acc_b", "diff": acc_a - acc_b, "p_value", "chi2", "chi2_p_value"}."""
    a, bb = _check_correct(correct_a, correct_b)
    b = int(np.count_nonzero((a == 1) & (bb == 0)))
    c = int(np.count_nonzero((a == 0) & (bb == 1)))
    acc_a, acc_b = float(a.mean()), float(bb.mean())
    return {"n": int(len(a)), "b": b, "c": c, "acc_a": acc_a, "acc_b": acc_b, "diff": acc_a - acc_b,
            **_mcnemar_from_discordant(b, c)}


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control), in the input order.

    With the m p-values sorted ascending p_(1) <= ... <= p_(m), the adjusted value of p_(i) is
    max_{j <= i} min(1, (m - j + 1) p_(j)) (the running maximum keeps the order monotone)."""
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must be in [0, 1]")
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted_sorted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m, dtype=np.float64)
    out[order] = adjusted_sorted
    return out


def mcnemar_per_label(y_true, pred_a, pred_b, names: Sequence[str]) -> list[dict]:
    """McNemar for each label: a record counts as correct for a system when its 0/1 decision on the
    label equals y_true (so true negatives count as correct too).

    Returns one dict per label, in `names` order: {"label", "support" (positives in y_true),
    "f1_a", "f1_b" (the label's F1 for each system), "b", "c", "p_value" (exact), "chi2",
    "chi2_p_value", "p_holm" (exact p Holm-adjusted across the labels)}."""
    t, a, b = _check_three(y_true, pred_a, pred_b)
    if len(names) != t.shape[1]:
        raise ValueError(f"{len(names)} label names for {t.shape[1]} label columns")
    ok_a, ok_b = a == t, b == t
    bs = np.count_nonzero(ok_a & ~ok_b, axis=0)
    cs = np.count_nonzero(~ok_a & ok_b, axis=0)
    f1_a = prf_from_counts(*(x.sum(0, dtype=np.int64) for x in label_counts(t, a)))[2]
    f1_b = prf_from_counts(*(x.sum(0, dtype=np.int64) for x in label_counts(t, b)))[2]
    support = t.sum(0, dtype=np.int64)
    rows = []
    for j, name in enumerate(names):
        rows.append({"label": str(name), "support": int(support[j]), "f1_a": float(f1_a[j]),
                     "f1_b": float(f1_b[j]), "b": int(bs[j]), "c": int(cs[j]),
                     **_mcnemar_from_discordant(int(bs[j]), int(cs[j]))})
    for row, p in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_holm"] = float(p)
    return rows


def compare_systems(y_true, preds: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]] | None,
                    names: Sequence[str], n_resamples: int = 1000, seed: int = 0,
                    alpha: float = 0.05) -> list[dict]:
    """Paired comparisons of the systems in `preds` (name -> (n, L) 0/1 matrix, all on the records
    of y_true), one dict per pair (a, b) in `pairs` (None: every pair, in the order of `preds`):

        {"system_a", "system_b", "n",
         "micro_f1": paired_bootstrap(..., micro_f1), "macro_f1": paired_bootstrap(..., macro_f1),
         "per_label": mcnemar_per_label(...)}

    Micro and macro F1 of one pair come from the same resamples, and with one seed every pair sees
    the same resamples. Plain Python types throughout (JSON-ready)."""
    _check_args(n_resamples, alpha)
    if pairs is None:
        pairs = list(itertools.combinations(preds, 2))
    out = []
    for sa, sb in pairs:
        for s in (sa, sb):
            if s not in preds:
                raise ValueError(f"unknown system {s!r}; systems: {list(preds)}")
        t, a, b = _check_three(y_true, preds[sa], preds[sb])
        if len(names) != t.shape[1]:
            raise ValueError(f"{len(names)} label names for {t.shape[1]} label columns")
        d_micro, d_macro = _paired_count_diffs(t, a, b, [micro_f1, macro_f1], n_resamples, seed)
        out.append({
            "system_a": str(sa), "system_b": str(sb), "n": int(len(t)),
            "micro_f1": _result(micro_f1.name, micro_f1(t, a), micro_f1(t, b), d_micro, len(t),
                                n_resamples, alpha, seed),
            "macro_f1": _result(macro_f1.name, macro_f1(t, a), macro_f1(t, b), d_macro, len(t),
                                n_resamples, alpha, seed),
            "per_label": mcnemar_per_label(t, a, b, names),
        })
    return out
