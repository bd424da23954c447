"""Ranking metrics equal a hand computation; intervals follow the documented bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthdx.evaluate.bootstrap import percentile_interval, resample_indices
from synthdx.evaluate.ranking import (
    evaluate_ranking,
    evaluate_rankings,
    format_ranking_table,
    gold_rank,
    ranking_metrics,
)

INF = math.inf


def test_gold_rank():
    assert gold_rank(["a", "b", "c"], {"b"}) == 2
    assert gold_rank(["a", "b", "c"], ["c", "b"]) == 2      # best-placed gold disease
    assert gold_rank(["a", "b"], ["z"]) == INF
    assert gold_rank([], ["a"]) == INF


def test_metrics_by_hand():
    ranks = [1, 2, 5, INF, 12]
    m = ranking_metrics(ranks)
    assert m["n"] == 5
    assert m["top1"] == pytest.approx(1 / 5)
    assert m["top3"] == pytest.approx(2 / 5)
    assert m["top10"] == pytest.approx(3 / 5)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 0 + 1 / 12) / 5)
    assert ranking_metrics([1, 4], ks=(2, 4)) == pytest.approx(
        {"n": 2, "top2": 0.5, "top4": 1.0, "mrr": 0.625})


def test_all_and_covered_by_hand():
    ranks = [1, 2, 5, INF, 12, INF]
    covered = [True, True, True, False, True, True]   # the last one is a candidate ranked past the list
    out = evaluate_ranking(ranks, covered, n_resamples=200)
    assert out["n"] == 6 and out["n_covered"] == 5
    assert out["coverage"] == pytest.approx(5 / 6)
    assert out["all"]["top1"] == pytest.approx(1 / 6)
    assert out["all"]["top10"] == pytest.approx(3 / 6)
    assert out["covered"]["n"] == 5
    assert out["covered"]["top3"] == pytest.approx(2 / 5)
    assert out["covered"]["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 12) / 5)
    # default coverage: ranked at all
    assert evaluate_ranking(ranks, n_resamples=50)["n_covered"] == 4


def test_intervals_are_the_documented_percentile_bootstrap():
    rng = np.random.default_rng(7)
    ranks = rng.integers(1, 30, size=200).astype(float)
    ranks[::7] = INF
    out = evaluate_ranking(ranks, n_resamples=300, alpha=0.1, seed=5)
    hits = (ranks <= 3).astype(float)
    rr = np.where(np.isfinite(ranks), 1 / ranks, 0.0)
    boot_top3 = np.concatenate([hits[idx].mean(1) for idx in resample_indices(200, 300, 5)])
    boot_mrr = np.concatenate([rr[idx].mean(1) for idx in resample_indices(200, 300, 5)])
    assert out["all"]["top3_ci"] == pytest.approx(list(percentile_interval(boot_top3, 0.1)))
    assert out["all"]["mrr_ci"] == pytest.approx(list(percentile_interval(boot_mrr, 0.1)))
    lo, hi = out["all"]["top3_ci"]
    assert lo <= out["all"]["top3"] <= hi and hi - lo > 0
    assert out["bootstrap"] == {"n_resamples": 300, "alpha": 0.1, "seed": 5,
                                "method": "percentile interval; cases resampled with replacement"}
    # same seed, same intervals
    assert evaluate_ranking(ranks, n_resamples=300, alpha=0.1, seed=5) == out


def test_grouped_intervals_resample_whole_groups():
    """Each case copied 3 times into its own group (three alike cases of one publication): resampling
    the groups gives the intervals of the 150 originals; resampling the 450 cases is too narrow."""
    rng = np.random.default_rng(8)
    ranks = rng.integers(1, 15, size=150).astype(float)
    ranks[::5] = INF
    n_obs = rng.integers(0, 25, size=150)
    plain = evaluate_ranking(ranks, n_observed=n_obs, n_resamples=300, seed=5)
    r3, o3, g3 = np.repeat(ranks, 3), np.repeat(n_obs, 3), np.repeat([f"PMID:{i}" for i in range(150)], 3)
    grouped = evaluate_ranking(r3, n_observed=o3, n_resamples=300, seed=5, groups=g3)
    assert grouped["all"]["top1"] == pytest.approx(plain["all"]["top1"]) and grouped["n"] == 450
    for key in ("top1_ci", "top10_ci", "mrr_ci"):
        assert grouped["all"][key] == pytest.approx(plain["all"][key], abs=1e-12)
    assert grouped["coverage_ci"] == pytest.approx(plain["coverage_ci"], abs=1e-12)
    assert grouped["by_n_observed"]["3-5"]["n"] == 3 * plain["by_n_observed"]["3-5"]["n"]
    assert "groups of cases" in grouped["bootstrap"]["method"]
    lo, hi = evaluate_ranking(r3, n_resamples=300, seed=5)["all"]["top1_ci"]
    assert hi - lo < 0.7 * (grouped["all"]["top1_ci"][1] - grouped["all"]["top1_ci"][0])
    with pytest.raises(ValueError, match="450 ranks but 2 groups"):
        evaluate_ranking(r3, groups=["a", "b"])


def test_constant_outcome_gives_a_point_interval():
    out = evaluate_ranking([1, 1, 1, 1], n_resamples=100)
    assert out["all"]["top1_ci"] == [1.0, 1.0]
    assert out["all"]["mrr_ci"] == [1.0, 1.0]


def test_breakdown_by_number_of_observed_terms():
    ranks = [1, 3, INF, 1, 20]
    n_obs = [1, 2, 4, 12, 30]
    out = evaluate_ranking(ranks, n_observed=n_obs, n_resamples=50)
    b = out["by_n_observed"]
    assert list(b) == ["0-2", "3-5", "11-20", ">=21"]        # empty bins are left out
    assert b["0-2"]["n"] == 2 and b["0-2"]["top1"] == 0.5 and b["0-2"]["top3"] == 1.0
    assert b["3-5"]["top10"] == 0.0 and b["3-5"]["coverage"] == 0.0
    assert b[">=21"]["mrr"] == pytest.approx(1 / 20)


def test_from_ranked_lists():
    rankings = [["a", "b", "c"], ["b", "a", "c"], ["c", "a", "b"], ["a", "b", "c"]]
    golds = [["a"], ["a"], ["zz"], None]                    # the last case is unlabelled: skipped
    out = evaluate_rankings(rankings, golds, candidates=["a", "b", "c"], n_resamples=50)
    assert out["n"] == 3 and out["n_covered"] == 2
    assert out["all"]["top1"] == pytest.approx(1 / 3)
    assert out["covered"]["mrr"] == pytest.approx((1 + 1 / 2) / 2)
    # a truncated list: the gold is a candidate but not in the top-1 list -> covered, not ranked
    out = evaluate_rankings([["b"]], [["a"]], candidates=["a", "b"], n_resamples=10)
    assert out["n_covered"] == 1 and out["covered"]["top1"] == 0.0 and out["covered"]["mrr"] == 0.0


def test_bad_inputs():
    with pytest.raises(ValueError):
        evaluate_ranking([])
    with pytest.raises(ValueError):
        evaluate_ranking([0, 1])
    with pytest.raises(ValueError, match="not covered"):
        evaluate_ranking([1, 2], covered=[True, False])
    with pytest.raises(ValueError):
        evaluate_rankings([["a"]], [["a"], ["b"]])
    with pytest.raises(ValueError, match="not among the candidates"):
        evaluate_rankings([["a"]], [["a"]], candidates=["b"])


def test_table_shows_both_parts():
    out = evaluate_ranking([1, 2, INF, 4], covered=[True, True, False, True], n_resamples=50)
    table = format_ranking_table({"ranker": out})
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["system", "cases", "n", "coverage"]
    assert "ranker" in lines[2] and "all" in lines[2] and "0.750" in lines[2]   # coverage
    assert "covered" in lines[3] and "0.333" in lines[3]                        # top-1 of covered
