"""Learning-curve statistics: a score per training-set size with a confidence band, and how many
real labelled examples another data source is worth.

A point of a curve is one (data source, learner, N) trained with several seeds (each seed draws
another N training records and initialises training differently) and scored on the same test
records. Its value is the mean over seeds of the metric. Its band is a percentile bootstrap over
test records of that seed mean: every resample scores all seeds on the same resampled records,
so the band shows how much the test set's sampling moves the curve; the seed-to-seed spread is
reported beside it (`sd`, `per_seed`) and drawn as dots, not folded into the band.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .bootstrap import _resampled_count_sums, percentile_interval
from .metrics import as_multi_hot, label_counts, macro_f1_from_counts, micro_f1_from_counts

METRICS = {"micro_f1": micro_f1_from_counts, "macro_f1": macro_f1_from_counts}


def point_scores(y_true, preds_by_seed: Sequence, n_resamples: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> dict:
    """{metric: {"mean", "lo", "hi", "sd", "per_seed"}} for micro- and macro-F1 of one curve point.
    `preds_by_seed`: one (n, L) 0/1 matrix per training seed, rows aligned with `y_true`."""
    t = as_multi_hot(y_true, "y_true")
    if not preds_by_seed:
        raise ValueError("a curve point needs predictions of at least one seed")
    L = t.shape[1]
    per_seed = {m: [] for m in METRICS}
    resampled = {m: [] for m in METRICS}
    for pred in preds_by_seed:
        counts = np.concatenate(label_counts(t, as_multi_hot(pred, "y_pred")), axis=1)
        total = counts.sum(0)
        # the same seed for every training seed: all are scored on the same resampled records
        sums = _resampled_count_sums(counts, n_resamples, seed)
        for name, fn in METRICS.items():
            per_seed[name].append(float(fn(total[:L], total[L:2 * L], total[2 * L:])))
            resampled[name].append(fn(sums[:, :L], sums[:, L:2 * L], sums[:, 2 * L:]))
    out = {}
    for name in METRICS:
        values = np.asarray(per_seed[name])
        lo, hi = percentile_interval(np.mean(resampled[name], axis=0), alpha)
        out[name] = {"mean": float(values.mean()), "lo": lo, "hi": hi,
                     "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                     "per_seed": [round(v, 6) for v in values]}
    return out


def equivalent_n(real_curve: Sequence[tuple[int, float]], value: float) -> dict:
    """How many real labelled examples reach `value` on `real_curve` ([(n, mean score)], ascending
    n): linear interpolation in log(n) between the first two neighbouring points that bracket the
    value. {"n": float | None, "note": "" | "below the smallest size" | "above the largest size"}.
    The real curve need not be monotone: the first crossing from below counts."""
    pts = sorted(real_curve)
    if not pts:
        return {"n": None, "note": "no real curve"}
    if value < pts[0][1]:
        return {"n": None, "note": f"below the real curve's first point (n={pts[0][0]})"}
    for (n0, v0), (n1, v1) in zip(pts, pts[1:]):
        if v0 <= value <= v1 and v1 > v0:
            frac = (value - v0) / (v1 - v0)
            return {"n": float(math.exp(math.log(n0) + frac * (math.log(n1) - math.log(n0)))), "note": ""}
    if value <= max(v for _, v in pts):
        # reached at a point without a rising segment into it (a plateau or a dip before it)
        return {"n": float(next(n for n, v in pts if v >= value)), "note": ""}
    return {"n": None, "note": f"above the real curve's last point (n={pts[-1][0]})"}
