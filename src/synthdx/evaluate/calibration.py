"""Per-label decision thresholds and calibration of predicted probabilities.

Thresholds: `tune_thresholds` picks, for each label, the threshold that maximises that label's F1
on a **validation** split, and `apply_thresholds` turns scores into 0/1 decisions
(score >= threshold). Thresholds must be tuned on validation data and then applied unchanged to
the test split: tuning them on the test part fits the test labels and inflates every reported
score (the numbers would no longer estimate performance on new data).

Calibration: `reliability` (the data of a reliability diagram), `expected_calibration_error` and
`brier_score` treat a multi-label problem as one pool of binary predictions: every (record, label)
pair is one probability p with one 0/1 outcome, i.e. the (n, L) arrays are flattened. In a sparse
label space most pairs are easy negatives, which pull these numbers toward "well calibrated";
pass one column (y[:, j], p[:, j]) to assess a single label.

Rankings (rare-disease differential diagnosis): `top1_confidence` is the probability a ranking
system gives its first-ranked candidate (softmax of its scores over the ranked candidates), its
outcome whether that candidate is the gold one; `fit_temperature` fits the temperature T of
softmax(scores / T) that best predicts those outcomes (log-loss) on **validation** cases, and
`top1_calibration` scores confidences against outcomes (reliability, ECE, Brier).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .metrics import as_multi_hot, prf_from_counts

__all__ = [
    "DEFAULT_GRID",
    "Thresholds",
    "apply_thresholds",
    "brier_score",
    "expected_calibration_error",
    "fit_temperature",
    "reliability",
    "top1_calibration",
    "top1_confidence",
    "tune_thresholds",
]

# 0.05, 0.10, ..., 0.95. A fixed, coarse grid rather than every distinct validation score: it holds
# 0.5, costs the same for any validation size, and fits the (often small) validation split less
# closely than thresholds placed exactly between two of its scores.
DEFAULT_GRID = np.round(np.linspace(0.05, 0.95, 19), 10)
DEFAULT_THRESHOLD = 0.5


@dataclass
class Thresholds:
    """Per-label thresholds from `tune_thresholds`.

    values: (L,) thresholds (predict 1 when score >= threshold).
    fallback_labels: labels (names, or column indices when no names were given) without a positive
      in the validation split; they keep DEFAULT_THRESHOLD (0.5).
    val_f1: (L,) each label's F1 on the validation split at its threshold."""

    values: np.ndarray
    fallback_labels: list = field(default_factory=list)
    val_f1: np.ndarray | None = None

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.values, dtype=dtype)

    def __len__(self) -> int:
        return len(self.values)

    def to_dict(self, names: Sequence[str] | None = None) -> dict:
        """JSON-ready {"thresholds": {name: t} (or [t, ...] without names), "fallback_labels", "val_f1"}."""
        vals = [float(v) for v in self.values]
        f1 = None if self.val_f1 is None else [float(v) for v in self.val_f1]
        if names is not None:
            if len(names) != len(vals):
                raise ValueError(f"{len(names)} label names for {len(vals)} thresholds")
            return {"thresholds": dict(zip(map(str, names), vals)), "fallback_labels": list(self.fallback_labels),
                    "val_f1": None if f1 is None else dict(zip(map(str, names), f1))}
        return {"thresholds": vals, "fallback_labels": list(self.fallback_labels), "val_f1": f1}


def _as_scores(s, name: str, shape: tuple | None = None, probabilities: bool = False) -> np.ndarray:
    a = np.asarray(s, dtype=np.float64)
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {shape} (the shape of the labels)")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    if probabilities and a.size and (a.min() < 0 or a.max() > 1):
        raise ValueError(f"{name} must be probabilities in [0, 1]")
    return a


def tune_thresholds(y_val, scores_val, grid: Sequence[float] | None = None,
                    names: Sequence[str] | None = None) -> Thresholds:
    """Per-label thresholds maximising each label's F1 on the VALIDATION split.

    Never call this with test data: thresholds tuned on the test part make the test scores
    optimistic (see the module docstring); tune on validation, then `apply_thresholds` on test.

    y_val: (n, L) 0/1; scores_val: (n, L) scores (probabilities, for the default grid); a record is
    predicted positive for a label when its score >= the threshold. grid: candidate thresholds
    shared by all labels (default DEFAULT_GRID = 0.05, 0.10, ..., 0.95). Among candidates of equal
    F1 the one nearest 0.5 wins (then the lower one), so a flat F1 curve keeps the usual default.
    A label without a positive in y_val (its F1 is 0 at every threshold) keeps 0.5 and is listed in
    `fallback_labels` (by name when `names` is given, else by column index)."""
    y = as_multi_hot(y_val, "y_val")
    s = _as_scores(scores_val, "scores_val", y.shape)
    g = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64).ravel()
    if g.size == 0 or not np.all(np.isfinite(g)):
        raise ValueError("grid must hold at least one finite threshold")
    L = y.shape[1]
    if names is not None and len(names) != L:
        raise ValueError(f"{len(names)} label names for {L} label columns")
    # (G, L) F1 of every label at every candidate; one vectorised (n, L) pass per candidate
    pos = y.astype(bool)
    f1 = np.empty((len(g), L))
    for k, thr in enumerate(g):
        pred = s >= thr
        tp = np.count_nonzero(pred & pos, axis=0)
        fp = np.count_nonzero(pred & ~pos, axis=0)
        fn = np.count_nonzero(~pred & pos, axis=0)
        f1[k] = prf_from_counts(tp, fp, fn)[2]
    # best = highest F1, then nearest 0.5 (distances rounded so 0.45 and 0.55 tie), then lowest threshold.
    # F1 values are ratios of small integers, so equal F1s compare equal exactly.
    dist = np.round(np.abs(g - DEFAULT_THRESHOLD), 9)
    values = np.empty(L)
    best_f1 = np.empty(L)
    for j in range(L):
        k = np.lexsort((g, dist, -f1[:, j]))[0]
        values[j], best_f1[j] = g[k], f1[k, j]
    no_pos = ~pos.any(axis=0)
    values[no_pos] = DEFAULT_THRESHOLD
    if no_pos.any():  # F1 there is 0 at any threshold, report it at 0.5
        best_f1[no_pos] = 0.0
    idx = np.flatnonzero(no_pos)
    fallback = [str(names[j]) for j in idx] if names is not None else [int(j) for j in idx]
    return Thresholds(values=values, fallback_labels=fallback, val_f1=best_f1)


def apply_thresholds(scores, thresholds) -> np.ndarray:
    """(n, L) int8 0/1 decisions: scores >= thresholds (a `Thresholds`, an (L,) array or a scalar).
    Use thresholds tuned on the validation split (`tune_thresholds`), never on the scored data."""
    s = _as_scores(scores, "scores")
    if s.ndim != 2:
        raise ValueError(f"scores must be a 2-D (n records, L labels) array, got shape {s.shape}")
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim > 1 or (t.ndim == 1 and len(t) != s.shape[1]):
        raise ValueError(f"{t.size} thresholds for {s.shape[1]} label columns")
    return (s >= t).astype(np.int8)


def _flat_pair(y, p) -> tuple[np.ndarray, np.ndarray]:
    """y (0/1) and p (probabilities) of one shape, flattened over (record, label) pairs."""
    ya = np.asarray(y)
    if ya.size and not np.isin(ya, (0, 1)).all():
        raise ValueError("y must hold only 0/1 (or booleans)")
    pa = _as_scores(p, "p", ya.shape, probabilities=True)
    if ya.size == 0:
        raise ValueError("no predictions to assess")
    return ya.astype(np.float64).ravel(), pa.ravel()


def reliability(y, p, n_bins: int = 10, strategy: str = "uniform") -> dict:
    """Reliability-diagram data of probabilities p for 0/1 outcomes y (same shape; an (n, L)
    multi-label pair is flattened over all (record, label) pairs, see the module docstring).

    strategy "uniform": n_bins equal-width bins on [0, 1]; "quantile": edges at the quantiles of p,
    so the bins hold about equally many predictions (edges may repeat when p has ties, leaving bins
    empty). Binning is scikit-learn's `calibration_curve`: bin k holds edges[k] < p <= edges[k+1],
    the first bin also its lower edge (p = 0).

    Returns plain Python types: {"edges": n_bins + 1 floats, "count": per bin, "mean_confidence":
    mean p per bin, "frequency": observed share of 1s per bin (None for both in an empty bin; sklearn
    drops empty bins), "n": number of predictions, "n_bins", "strategy", "ece": sum_b n_b/N |freq_b - conf_b|}."""
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    yf, pf = _flat_pair(y, p)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        edges = np.percentile(pf, np.linspace(0, 100, n_bins + 1))
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    bins = np.searchsorted(edges[1:-1], pf)  # left side: a p on an inner edge goes to the lower bin
    count = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=pf, minlength=n_bins)
    pos_sum = np.bincount(bins, weights=yf, minlength=n_bins)
    filled = count > 0
    conf = np.divide(conf_sum, count, out=np.zeros(n_bins), where=filled)
    freq = np.divide(pos_sum, count, out=np.zeros(n_bins), where=filled)
    ece = float(np.sum(count / len(pf) * np.abs(freq - conf)))
    return {
        "edges": [float(e) for e in edges],
        "count": [int(c) for c in count],
        "mean_confidence": [float(c) if f else None for c, f in zip(conf, filled)],
        "frequency": [float(c) if f else None for c, f in zip(freq, filled)],
        "n": int(len(pf)), "n_bins": int(n_bins), "strategy": strategy, "ece": ece,
    }


def expected_calibration_error(y, p, n_bins: int = 10, strategy: str = "uniform") -> float:
    """ECE = sum over bins b of (n_b / N) |acc_b - conf_b|, acc_b the observed share of 1s and
    conf_b the mean p in bin b (empty bins add 0), over all flattened (record, label) pairs with
    the bins of `reliability` (default: 10 equal-width bins)."""
    return reliability(y, p, n_bins, strategy)["ece"]


def brier_score(y, p) -> float:
    """Mean squared difference between p and the 0/1 outcome y over all (record, label) pairs."""
    yf, pf = _flat_pair(y, p)
    return float(np.mean((pf - yf) ** 2))


# ---------------------------------------------------------------- rankings: top-1 confidence


def _ranked_scores(scores, temperature: float) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("no candidates to rank")
    if np.isnan(s).any() or not np.isfinite(s.max()):
        raise ValueError("scores must not be NaN, and the best must be finite")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    return s / temperature


def top1_confidence(scores, temperature: float = 1.0) -> float:
    """The probability a ranking system gives its first-ranked candidate: softmax(scores / T) at the
    best score, i.e. 1 / sum_j exp((s_j - s_max) / T). `scores` are the system's scores of the
    candidates it ranks (log-likelihood ratios, log-probabilities or a fused score; -inf allowed for
    an impossible candidate). Ties at the top share the probability: the first of them gets its
    share, as a stable sort would rank it first. T does not change which candidate is first."""
    z = _ranked_scores(scores, temperature)
    return float(1.0 / np.exp(z - z.max()).sum())


def _top1_log_probs(margins: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Per case, log p and log(1 - p) of the top-1 confidence at temperature T, in log space (p may
    round to 1). `margins`: (n, K - 1) each case's other scores minus its best (<= 0; -inf pads)."""
    z = margins / temperature
    m = z.max(axis=1)  # the runner-up, finite (cases without one are left out by the caller)
    lse_rest = m + np.log(np.exp(z - m[:, None]).sum(axis=1))  # log sum over the others
    lse = np.logaddexp(0.0, lse_rest)  # log sum over all, the top contributing exp(0) = 1
    return -lse, lse_rest - lse


def fit_temperature(score_lists, correct, bounds: tuple[float, float] = (0.01, 100.0)) -> float:
    """The temperature T > 0 that minimises the log-loss of the top-1 confidence,
    -mean(c log p_T + (1 - c) log(1 - p_T)), p_T = top1_confidence(scores, T), over VALIDATION cases
    (`score_lists`: each case's scores of its ranked candidates; `correct`: whether its first-ranked
    candidate is the gold one). Fit on held-out data, never on the cases it is then assessed on.

    Searched in log T within `bounds`: a grid of 161 points, then a bounded scalar minimisation
    around the best grid point. Cases whose confidence cannot move (a single candidate) are left out."""
    from scipy.optimize import minimize_scalar

    c = np.asarray(correct, dtype=np.float64).ravel()
    if len(score_lists) != len(c) or not len(c):
        raise ValueError(f"{len(score_lists)} score lists for {len(c)} outcomes (need at least one)")
    if not np.isin(c, (0, 1)).all():
        raise ValueError("correct must hold only 0/1 (or booleans)")
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds must be 0 < low < high, got {bounds}")
    rests = []
    for sc in score_lists:
        z = _ranked_scores(sc, 1.0)
        top = int(np.argmax(z))
        rests.append(np.delete(z, top) - z[top])
    width = max(len(r) for r in rests)
    margins = np.full((len(rests), max(width, 1)), -np.inf)
    for i, r in enumerate(rests):
        margins[i, :len(r)] = r
    movable = np.isfinite(margins).any(axis=1)
    margins, c = margins[movable], c[movable]
    if not len(c):
        return 1.0

    def loss(log_t: float) -> float:
        lp, lq = _top1_log_probs(margins, float(np.exp(log_t)))
        terms = np.where(c == 1, lp, lq)
        return float(-np.mean(np.maximum(terms, -1e6)))  # a certain miss costs a lot, not inf

    grid = np.linspace(lo, hi, 161)
    values = [loss(g) for g in grid]
    k = int(np.argmin(values))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    res = minimize_scalar(loss, bounds=(a, b), method="bounded", options={"xatol": 1e-8})
    best = float(res.x) if res.fun <= values[k] else float(grid[k])
    return float(np.exp(best))


def top1_calibration(confidence, correct, n_bins: int = 10, n_resamples: int = 0, seed: int = 0,
                     alpha: float = 0.05, groups: Sequence | None = None) -> dict:
    """How well top-1 confidences predict a correct first rank: {"n", "top1" (share correct),
    "confidence" (mean confidence), "ece", "brier", "reliability" (see `reliability`)}, and with
    `n_resamples` > 0 "ece_ci": a percentile bootstrap interval of the ECE over cases, or over whole
    `groups` (each case's publication, say) when given."""
    from .bootstrap import group_members

    y = np.asarray(correct, dtype=np.float64).ravel()
    p = np.asarray(confidence, dtype=np.float64).ravel()
    rel = reliability(y, p, n_bins)
    out = {"n": int(len(p)), "top1": float(y.mean()), "confidence": float(p.mean()), "ece": rel["ece"],
           "brier": brier_score(y, p), "reliability": rel}
    if n_resamples > 0:
        rng = np.random.default_rng(seed)
        if groups is None:
            idx = list(rng.integers(0, len(p), size=(n_resamples, len(p))))
        else:
            if len(groups) != len(p):
                raise ValueError(f"groups has {len(groups)} entries for {len(p)} cases")
            members = group_members(groups)
            idx = [np.concatenate([members[g] for g in drawn])
                   for drawn in rng.integers(0, len(members), size=(n_resamples, len(members)))]
        eces = [reliability(y[i], p[i], n_bins)["ece"] for i in idx]
        out["ece_ci"] = [float(np.quantile(eces, alpha / 2)), float(np.quantile(eces, 1 - alpha / 2))]
    return out
