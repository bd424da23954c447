"""Metrics of ranked differential diagnoses: top-k accuracy and mean reciprocal rank, with
percentile bootstrap intervals over cases, over all cases and over covered ones.

A case's rank is the 1-based position of its best-placed gold disease in the system's ranking
(`inf` when no gold disease is in the ranking). top-k accuracy = share of cases with rank <= k;
MRR = mean of 1/rank (0 for inf; a ranking truncated to k entries therefore gives a lower bound
of the full-list MRR). A case is *covered* when at least one gold disease is a candidate the
system could name; over all cases, uncovered ones count as misses (what a user sees), over
covered cases they are left out (what the method can do with its knowledge).

Intervals: the cases are resampled with replacement (`bootstrap.resample_indices`: the same
resamples for the same seed and number of cases, so two systems scored on one set see the same
resamples) and each interval is the (alpha/2, 1 - alpha/2) percentile of the statistic
(`bootstrap.percentile_interval`). The "covered" intervals resample covered cases only.
With `groups` (each case's publication, say) whole groups are resampled instead, each with all its
cases (a cluster bootstrap, `bootstrap.group_rows`): the honest interval when the cases of a group
are alike, as the cases of one published cohort are.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .bootstrap import _check_args, group_rows, percentile_interval, resampled_sums

__all__ = [
    "DEFAULT_TERM_BINS",
    "evaluate_ranking",
    "evaluate_rankings",
    "format_ranking_table",
    "gold_rank",
    "ranking_metrics",
]

DEFAULT_TERM_BINS = ((0, 2), (3, 5), (6, 10), (11, 20), (21, None))


def gold_rank(ranking: Sequence[str], gold: Iterable[str]) -> float:
    """1-based position of the first gold id in `ranking`, or inf."""
    gold = set(gold)
    for i, d in enumerate(ranking, 1):
        if d in gold:
            return float(i)
    return float("inf")


def _values(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-case values whose means are the metrics."""
    out = {f"top{k}": (ranks <= k).astype(np.float64) for k in ks}
    out["mrr"] = np.where(np.isfinite(ranks), 1.0 / ranks, 0.0)
    return out


def ranking_metrics(ranks: Sequence[float], ks: Sequence[int] = (1, 3, 10)) -> dict[str, float]:
    """{"n", "top1", "top3", "top10", "mrr"} (for ks 1, 3, 10) of the given ranks."""
    r = _as_ranks(ranks)
    out: dict[str, float] = {"n": int(len(r))}
    for name, v in _values(r, ks).items():
        out[name] = float(v.mean()) if len(r) else float("nan")
    return out


def _as_ranks(ranks) -> np.ndarray:
    r = np.asarray(ranks, dtype=np.float64).ravel()
    if np.any(np.isnan(r)) or np.any(r < 1):
        raise ValueError("ranks must be >= 1 (inf for not ranked)")
    return r


def _resampled_means(values: np.ndarray, n_resamples: int, seed: int, groups: np.ndarray | None) -> np.ndarray:
    """(B, k) means of the columns of `values` (n, k) in each resample: of single cases, or of whole
    `groups` (each group's sums and its number of cases drawn together)."""
    rows = np.column_stack([values, np.ones(len(values))])
    sums = resampled_sums(rows if groups is None else group_rows(rows, groups), n_resamples, seed)
    return sums[:, :-1] / sums[:, -1:]


def _with_intervals(ranks: np.ndarray, ks: Sequence[int], n_resamples: int, alpha: float, seed: int,
                    groups: np.ndarray | None = None) -> dict:
    out = ranking_metrics(ranks, ks)
    if len(ranks) == 0:
        return out
    vals = _values(ranks, ks)
    means = _resampled_means(np.column_stack(list(vals.values())), n_resamples, seed, groups)
    for i, name in enumerate(vals):
        out[f"{name}_ci"] = list(percentile_interval(means[:, i], alpha))
    return out


def evaluate_ranking(ranks: Sequence[float], covered: Sequence[bool] | None = None,
                     n_observed: Sequence[int] | None = None, ks: Sequence[int] = (1, 3, 10),
                     n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0,
                     term_bins: Sequence[tuple[int, int | None]] = DEFAULT_TERM_BINS,
                     groups: Sequence | None = None) -> dict:
    """Scores of one system from per-case gold ranks.

    Returns {"n", "n_covered", "coverage", "coverage_ci", "all": {...}, "covered": {...},
    "by_n_observed": {"3-5": {...}, ...} (when `n_observed` is given), "bootstrap": {...}},
    where each {...} holds n, top-k, MRR and their `_ci` intervals. `covered` defaults to
    "rank is finite" (right when the rankings are full candidate lists). The breakdown is over all
    cases of each bin (uncovered ones count as misses), with bins [lo, hi] of observed terms.
    `groups` (one key per case, e.g. its publication): intervals resample whole groups (module docstring)."""
    _check_args(n_resamples, alpha)
    r = _as_ranks(ranks)
    n = len(r)
    if n == 0:
        raise ValueError("no cases to evaluate")
    cov = np.isfinite(r) if covered is None else np.asarray(covered, dtype=bool).ravel()
    if len(cov) != n:
        raise ValueError(f"{n} ranks but {len(cov)} coverage flags")
    if np.any(np.isfinite(r) & ~cov):
        raise ValueError("a case is ranked but marked as not covered")
    g = None
    if groups is not None:
        g = np.empty(len(groups), dtype=object)
        g[:] = list(groups)
        if len(g) != n:
            raise ValueError(f"{n} ranks but {len(g)} groups")
    out: dict = {"n": n, "n_covered": int(cov.sum()), "coverage": float(cov.mean())}
    cboot = _resampled_means(cov[:, None].astype(np.float64), n_resamples, seed, g)[:, 0]
    out["coverage_ci"] = list(percentile_interval(cboot, alpha))
    out["all"] = _with_intervals(r, ks, n_resamples, alpha, seed, g)
    out["covered"] = _with_intervals(r[cov], ks, n_resamples, alpha, seed, None if g is None else g[cov])
    if n_observed is not None:
        nt = np.asarray(n_observed, dtype=np.int64).ravel()
        if len(nt) != n:
            raise ValueError(f"{n} ranks but {len(nt)} term counts")
        out["by_n_observed"] = {}
        for lo, hi in term_bins:
            m = (nt >= lo) & (nt <= (hi if hi is not None else np.iinfo(np.int64).max))
            label = f"{lo}-{hi}" if hi is not None else f">={lo}"
            if m.any():
                d = _with_intervals(r[m], ks, n_resamples, alpha, seed, None if g is None else g[m])
                d["coverage"] = float(cov[m].mean())
                out["by_n_observed"][label] = d
    unit = "cases" if g is None else "groups of cases (cluster bootstrap)"
    out["bootstrap"] = {"n_resamples": int(n_resamples), "alpha": float(alpha), "seed": int(seed),
                        "method": f"percentile interval; {unit} resampled with replacement"}
    return out


def evaluate_rankings(rankings: Sequence[Sequence[str]], golds: Sequence[Iterable[str] | None],
                      candidates: Iterable[str] | None = None, n_observed: Sequence[int] | None = None,
                      **kwargs) -> dict:
    """`evaluate_ranking` from ranked id lists and gold id sets. Unlabelled cases (gold None)
    are skipped. A case is covered when a gold id is in `candidates` (default: when it is in the
    ranking, right only for full rankings)."""
    if len(rankings) != len(golds):
        raise ValueError(f"{len(rankings)} rankings but {len(golds)} gold sets")
    cand = set(candidates) if candidates is not None else None
    ranks, cov, nts = [], [], []
    for i, (ranking, gold) in enumerate(zip(rankings, golds)):
        if gold is None:
            continue
        gold = list(gold)
        ranks.append(gold_rank(ranking, gold))
        cov.append(any(g in cand for g in gold) if cand is not None else np.isfinite(ranks[-1]))
        if n_observed is not None:
            nts.append(n_observed[i])
    if cand is not None:
        bad = [k for k, (r, c) in enumerate(zip(ranks, cov)) if np.isfinite(r) and not c]
        if bad:
            raise ValueError("a ranking holds a gold id that is not among the candidates")
    return evaluate_ranking(ranks, cov, nts if n_observed is not None else None, **kwargs)


def _cell(d: dict, key: str) -> str:
    v = d.get(key)
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    ci = d.get(f"{key}_ci")
    if ci:
        return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{v:.3f}"


def format_ranking_table(systems: dict[str, dict], ks: Sequence[int] = (1, 3, 10)) -> str:
    """Aligned plain-text table, two rows a system (all cases, covered cases)."""
    header = ["system", "cases", "n", "coverage"] + [f"top-{k}" for k in ks] + ["MRR"]
    rows = []
    for name, s in systems.items():
        for part in ("all", "covered"):
            d = s[part]
            cov = _cell(s, "coverage") if part == "all" else ""
            rows.append([name if part == "all" else "", part, str(d["n"]), cov]
                        + [_cell(d, f"top{k}") for k in ks] + [_cell(d, "mrr")])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        padded = (c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])
