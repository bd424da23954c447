"""Multi-label classification scores: micro/macro precision, recall and F1, and per label.

Conventions (the same as scikit-learn's `precision_recall_fscore_support(..., zero_division=0)`):

* precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2·TP / (2·TP + FP + FN);
  a ratio whose denominator is 0 is **0** (so a label with no true and no predicted positive
  scores P = R = F1 = 0, not 1, and no warning is raised).
* micro averages pool TP/FP/FN over every label, then take the ratios.
* macro averages are the unweighted mean over **all** labels of the label space, including
  labels with no support in the evaluated set (they pull the macro average down when the system
  predicts them and count as 0 otherwise) — exactly sklearn's `average="macro"`.

Everything here works on summed counts, so the bootstrap (`bootstrap.py`) reuses it on arrays of
resampled counts of shape (..., L).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "as_multi_hot",
    "label_counts",
    "multilabel_scores",
    "multi_hot",
    "prf_from_counts",
    "micro_f1_from_counts",
    "macro_f1_from_counts",
]


def as_multi_hot(y: np.ndarray | Sequence[Sequence[int]], name: str = "y") -> np.ndarray:
    """`y` as a 2-D 0/1 int8 array; raises ValueError on another shape or other values."""
    a = np.asarray(y)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D multi-hot array (n records, L labels), got shape {a.shape}")
    if a.size and not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0/1 (or booleans)")
    return a.astype(np.int8, copy=False)


def multi_hot(label_lists: Iterable[Iterable[str] | None], names: Sequence[str]) -> np.ndarray:
    """(n, L) int8 multi-hot array from lists of label names, in the order of `names`.
    A label not in `names` raises ValueError (normalise free text with LabelSpace.normalise first);
    None (nothing predicted / unlabelled) gives an all-zero row."""
    index = {n: j for j, n in enumerate(names)}
    rows = []
    for i, labels in enumerate(label_lists):
        row = np.zeros(len(names), dtype=np.int8)
        for lab in labels or ():
            j = index.get(lab)
            if j is None:
                raise ValueError(f"row {i}: label {lab!r} is not in the label space {list(names)}")
            row[j] = 1
        rows.append(row)
    return np.stack(rows) if rows else np.zeros((0, len(names)), dtype=np.int8)


def _check_pair(y_true, y_pred, names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    t, p = as_multi_hot(y_true, "y_true"), as_multi_hot(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {t.shape} vs {p.shape}")
    if names is not None and len(names) != t.shape[1]:
        raise ValueError(f"{len(names)} label names for {t.shape[1]} label columns")
    return t, p


def label_counts(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row, per-label (TP, FP, FN), each an (n, L) int8 array of 0/1."""
    t, p = _check_pair(y_true, y_pred)
    tp = t & p
    return tp, p - tp, t - tp


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def prf_from_counts(tp, fp, fn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Element-wise precision, recall, F1 (zero_division=0) from summed counts of any shape."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    return _div(tp, tp + fp), _div(tp, tp + fn), _div(2 * tp, 2 * tp + fp + fn)


def micro_f1_from_counts(tp, fp, fn) -> np.ndarray:
    """Micro F1 over the last axis (labels) of summed counts of shape (..., L)."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64).sum(-1) for x in (tp, fp, fn))
    return _div(2 * tp, 2 * tp + fp + fn)


def macro_f1_from_counts(tp, fp, fn) -> np.ndarray:
    """Macro F1 (mean over all L labels) of summed counts of shape (..., L)."""
    return prf_from_counts(tp, fp, fn)[2].mean(-1)


def multilabel_scores(y_true: np.ndarray, y_pred: np.ndarray, names: list[str]) -> dict:
    """Scores of multi-hot predictions `y_pred` against `y_true` (both (n, L), columns in `names` order).

    Returns plain Python types (JSON-ready)::

        {"n": int, "n_labels": int,
         "micro": {"precision", "recall", "f1", "tp", "fp", "fn"},
         "macro": {"precision", "recall", "f1"},
         "per_label": {name: {"precision", "recall", "f1", "support", "predicted", "tp", "fp", "fn"}}}

    `support` is the number of true positives in y_true for the label (sklearn's support);
    `predicted` the number of predicted positives. See the module docstring for the conventions.
    """
    t, p = _check_pair(y_true, y_pred, names)
    tp_r, fp_r, fn_r = label_counts(t, p)
    tp, fp, fn = (x.sum(0, dtype=np.int64) for x in (tp_r, fp_r, fn_r))
    prec, rec, f1 = prf_from_counts(tp, fp, fn)
    mp, mr, mf = prf_from_counts(tp.sum(), fp.sum(), fn.sum())
    L = len(names)
    per_label = {
        name: {
            "precision": float(prec[j]), "recall": float(rec[j]), "f1": float(f1[j]),
            "support": int(tp[j] + fn[j]), "predicted": int(tp[j] + fp[j]),
            "tp": int(tp[j]), "fp": int(fp[j]), "fn": int(fn[j]),
        }
        for j, name in enumerate(names)
    }
    return {
        "n": int(t.shape[0]),
        "n_labels": L,
        "micro": {"precision": float(mp), "recall": float(mr), "f1": float(mf),
                  "tp": int(tp.sum()), "fp": int(fp.sum()), "fn": int(fn.sum())},
        "macro": {"precision": float(prec.mean()) if L else 0.0, "recall": float(rec.mean()) if L else 0.0,
                  "f1": float(f1.mean()) if L else 0.0},
        "per_label": per_label,
    }
