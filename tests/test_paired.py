import json
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from synthdx.evaluate import bootstrap_ci, label_f1, macro_f1, micro_f1, multilabel_scores
from synthdx.evaluate.bootstrap import resample_indices
from synthdx.evaluate.paired import (
    compare_systems,
    holm,
    mcnemar,
    mcnemar_per_label,
    paired_bootstrap,
    paired_bootstrap_correct,
)
from synthdx.evaluate.ranking import ranking_metrics


def _flip(t, rate, rng):
    p = t.copy()
    f = rng.random(t.shape) < rate
    p[f] = 1 - p[f]
    return p


def _systems(n, L=6, seed=0, flip_a=0.1, flip_b=0.2):
    rng = np.random.default_rng(seed)
    t = (rng.random((n, L)) < np.linspace(0.05, 0.5, L)).astype(np.int8)
    return t, _flip(t, flip_a, rng), _flip(t, flip_b, rng)


def _slow(metric, t, a, b, B, alpha, seed):
    """The paired bootstrap written out: both systems on the same resampled rows, plain loop."""
    diffs = []
    for block in resample_indices(len(t), B, seed):
        for idx in block:
            diffs.append(metric(t[idx], a[idx]) - metric(t[idx], b[idx]))
    diffs = np.array(diffs)
    diff = metric(t, a) - metric(t, b)
    lo, hi = np.percentile(diffs, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    p = (1 + np.sum(np.abs(diffs - diff) >= abs(diff) - 1e-12)) / (B + 1)
    return diff, [lo, hi], p


# ---------------------------------------------------------------- paired bootstrap


@pytest.mark.parametrize("metric", [micro_f1, macro_f1, label_f1(3)])
def test_fast_path_equals_slow_loop_exactly(metric):
    t, a, b = _systems(60, seed=1)
    r = paired_bootstrap(t, a, b, metric=metric, n_resamples=300, seed=5, alpha=0.1)
    diff, ci, p = _slow(metric, t, a, b, 300, 0.1, 5)
    assert r["diff"] == diff and r["ci"] == [float(x) for x in ci] and r["p_value"] == p
    # the module's own slow path (any callable) sees the same resamples
    def plain(y, q):
        return metric(y, q)
    s = paired_bootstrap(t, a, b, metric=plain, n_resamples=300, seed=5, alpha=0.1)
    assert s["ci"] == r["ci"] and s["p_value"] == r["p_value"] and s["diff"] == r["diff"]
    assert s["metric"] == "plain" and r["metric"] == metric.name


def test_point_values_are_the_metrics_and_diff_their_difference():
    t, a, b = _systems(80, seed=2)
    names = [str(j) for j in range(t.shape[1])]
    sa, sb = multilabel_scores(t, a, names), multilabel_scores(t, b, names)
    for metric, key in ((micro_f1, "micro"), (macro_f1, "macro")):
        r = paired_bootstrap(t, a, b, metric=metric, n_resamples=50)
        assert r["a"] == pytest.approx(sa[key]["f1"], abs=1e-15)
        assert r["b"] == pytest.approx(sb[key]["f1"], abs=1e-15)
        assert r["diff"] == r["a"] - r["b"]
        assert r["n"] == 80 and r["n_resamples"] == 50
    r = paired_bootstrap(t, a, b, metric=label_f1(2), n_resamples=50)
    assert r["a"] == pytest.approx(f1_score(t[:, 2], a[:, 2], zero_division=0))
    assert r["b"] == pytest.approx(f1_score(t[:, 2], b[:, 2], zero_division=0))


def test_identical_systems_give_zero_difference_and_p_one():
    t, a, _ = _systems(100, seed=3)
    r = paired_bootstrap(t, a, a.copy(), n_resamples=200)
    # the same records each time: every resampled difference is exactly 0 (unpaired resampling
    # would scatter it)
    assert r["diff"] == 0.0 and r["ci"] == [0.0, 0.0] and r["p_value"] == 1.0


def test_clearly_better_system_is_significant_both_ways():
    t, a, b = _systems(400, seed=4, flip_a=0.02, flip_b=0.25)
    r = paired_bootstrap(t, a, b, n_resamples=1000, seed=0)
    assert r["diff"] > 0 and r["ci"][0] > 0 and r["p_value"] < 0.01
    assert r["p_value"] == pytest.approx(1 / 1001)  # nothing as extreme under the null
    rev = paired_bootstrap(t, b, a, n_resamples=1000, seed=0)
    assert rev["diff"] == -r["diff"] and rev["p_value"] == r["p_value"]
    assert rev["ci"] == pytest.approx([-r["ci"][1], -r["ci"][0]])


def test_similar_systems_are_not_significant():
    t, a, b = _systems(200, seed=6, flip_a=0.1, flip_b=0.1)
    r = paired_bootstrap(t, a, b, n_resamples=500, seed=1)
    assert r["ci"][0] < 0 < r["ci"][1] and r["p_value"] > 0.05


def test_against_a_perfect_system_the_interval_is_bootstrap_ci_shifted():
    # b = y_true scores micro-F1 1 on every resample, so the difference is metric(A) - 1 there;
    # and the same seed gives the same resamples as bootstrap_ci
    t, a, _ = _systems(120, seed=7)
    r = paired_bootstrap(t, a, t.copy(), n_resamples=300, seed=3)
    point, lo, hi = bootstrap_ci(micro_f1, t, a, n_resamples=300, seed=3)
    assert r["a"] == point and r["b"] == 1.0
    assert r["ci"] == pytest.approx([lo - 1, hi - 1], abs=1e-12)


def test_deterministic_for_a_seed():
    t, a, b = _systems(50, seed=8)
    assert paired_bootstrap(t, a, b, seed=2) == paired_bootstrap(t, a, b, seed=2)
    assert paired_bootstrap(t, a, b, seed=2)["ci"] != paired_bootstrap(t, a, b, seed=3)["ci"]


def test_callable_metric_on_scores():
    # a slow-path metric needs only matching rows: here a score-based one (mean score on positives)
    rng = np.random.default_rng(0)
    t = (rng.random((40, 3)) < 0.4).astype(np.int8)
    sa, sb = rng.random((40, 3)), rng.random((40, 3))

    def pos_mean(y, s):
        return float(s[y == 1].mean())

    r = paired_bootstrap(t, sa, sb, metric=pos_mean, n_resamples=100, seed=1)
    diff, ci, p = _slow(pos_mean, t, sa, sb, 100, 0.05, 1)
    assert r["diff"] == diff and r["ci"] == list(ci) and r["p_value"] == p


# ---------------------------------------------------------------- correctness vectors


def test_correct_vectors_equal_slow_loop_and_ranking_top1():
    rng = np.random.default_rng(9)
    ranks_a = rng.integers(1, 6, 150).astype(float)
    ranks_b = np.where(rng.random(150) < 0.3, 1.0, rng.integers(1, 6, 150))
    ca, cb = ranks_a <= 1, ranks_b <= 1
    r = paired_bootstrap_correct(ca, cb, n_resamples=400, seed=2)
    assert r["metric"] == "accuracy"
    assert r["a"] == ranking_metrics(ranks_a)["top1"] and r["b"] == ranking_metrics(ranks_b)["top1"]

    def acc(_, c):
        return c.mean()

    diff, ci, p = _slow(acc, ca, ca.astype(np.int8), cb.astype(np.int8), 400, 0.05, 2)
    assert r["diff"] == diff and r["ci"] == list(ci) and r["p_value"] == p


def test_correct_vectors_identical_and_clearly_different():
    rng = np.random.default_rng(10)
    c = rng.random(300) < 0.5
    r = paired_bootstrap_correct(c, c)
    assert r["diff"] == 0 and r["ci"] == [0.0, 0.0] and r["p_value"] == 1.0
    good, bad = rng.random(400) < 0.8, rng.random(400) < 0.5
    r = paired_bootstrap_correct(good, bad)
    assert r["diff"] > 0.2 and r["p_value"] < 0.01


def test_grouped_bootstrap_resamples_whole_groups():
    rng = np.random.default_rng(11)
    a, b = rng.random(120) < 0.6, rng.random(120) < 0.45
    plain = paired_bootstrap_correct(a, b, n_resamples=500, seed=3)
    # one record per group: the very same resamples, so the same interval and p
    single = paired_bootstrap_correct(a, b, n_resamples=500, seed=3, groups=[f"g{i}" for i in range(120)])
    assert single["ci"] == pytest.approx(plain["ci"], abs=1e-12) and single["p_value"] == plain["p_value"]
    assert single["n_groups"] == 120 and single["n"] == 120
    # every record copied 4 times into its own group (4 cases of one publication, alike): resampling
    # the groups is resampling the 120 originals, while resampling cases pretends there are 480
    a4, b4, g4 = np.repeat(a, 4), np.repeat(b, 4), np.repeat(np.arange(120), 4)
    grouped = paired_bootstrap_correct(a4, b4, n_resamples=500, seed=3, groups=g4)
    assert grouped["diff"] == pytest.approx(plain["diff"]) and grouped["n"] == 480
    assert grouped["ci"] == pytest.approx(plain["ci"], abs=1e-12) and grouped["p_value"] == plain["p_value"]
    naive = paired_bootstrap_correct(a4, b4, n_resamples=500, seed=3)
    assert naive["ci"][1] - naive["ci"][0] < 0.6 * (grouped["ci"][1] - grouped["ci"][0])
    with pytest.raises(ValueError, match="groups has 3 entries for 120 records"):
        paired_bootstrap_correct(a, b, groups=["x", "y", "z"])


# ---------------------------------------------------------------- McNemar


def _correct_from_table(both, b, c, neither):
    a = [1] * both + [1] * b + [0] * c + [0] * neither
    bb = [1] * both + [0] * b + [1] * c + [0] * neither
    return np.array(a), np.array(bb)


def test_mcnemar_exact_and_chi2_by_hand():
    ca, cb = _correct_from_table(30, 8, 2, 5)
    r = mcnemar(ca, cb)
    assert (r["b"], r["c"], r["n"]) == (8, 2, 45)
    hand = 2 * sum(math.comb(10, k) for k in range(3)) / 2 ** 10
    assert hand == 0.109375 and r["p_value"] == pytest.approx(hand, abs=1e-15)
    assert r["chi2"] == pytest.approx((abs(8 - 2) - 1) ** 2 / 10) and r["chi2"] == 2.5
    # chi-square(1) survival function = erfc(sqrt(x / 2))
    assert r["chi2_p_value"] == pytest.approx(math.erfc(math.sqrt(2.5 / 2)), rel=1e-12)
    assert r["acc_a"] == 38 / 45 and r["acc_b"] == 32 / 45 and r["diff"] == pytest.approx(6 / 45)
    # swapping the systems swaps b and c, p unchanged
    s = mcnemar(cb, ca)
    assert (s["b"], s["c"]) == (2, 8) and s["p_value"] == r["p_value"] and s["chi2"] == r["chi2"]


def test_mcnemar_more_values_by_hand():
    for b, c in ((5, 0), (12, 3), (0, 1), (20, 20)):
        r = mcnemar(*_correct_from_table(3, b, c, 4))
        m, k = b + c, min(b, c)
        hand = min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2 ** m)
        assert r["p_value"] == pytest.approx(hand, rel=1e-12)
        assert r["chi2"] == pytest.approx(max(abs(b - c) - 1, 0) ** 2 / m)
        assert r["chi2_p_value"] == pytest.approx(float(stats.chi2.sf(r["chi2"], 1)))
    r = mcnemar(*_correct_from_table(3, 20, 20, 4))
    assert r["p_value"] == 1.0 and r["chi2"] == 0.0 and r["chi2_p_value"] == 1.0


def test_mcnemar_without_discordant_records():
    r = mcnemar([1, 0, 1, 1], [True, False, True, True])
    assert (r["b"], r["c"]) == (0, 0) and r["p_value"] == 1.0 and r["chi2_p_value"] == 1.0 and r["chi2"] == 0.0


def test_holm_by_hand():
    # sorted: 0.01 * 4 = 0.04; 0.03 * 3 = 0.09; 0.04 * 2 = 0.08 -> running max 0.09; 0.5 * 1 = 0.5
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    # capped at 1 and monotone: 0.6 * 2 = 1.2 -> 1; 0.7 * 1 -> max(1, 0.7) = 1
    assert holm([0.7, 0.6]) == pytest.approx([1.0, 1.0])
    # ties: 0.02 * 3 = 0.06, 0.02 * 2 = 0.04 -> 0.06, 0.9
    assert holm([0.02, 0.9, 0.02]) == pytest.approx([0.06, 0.9, 0.06])
    assert holm([0.3]) == pytest.approx([0.3]) and len(holm([])) == 0
    with pytest.raises(ValueError):
        holm([0.1, 1.5])


def test_mcnemar_per_label_by_hand():
    # label 0: A right everywhere, B wrong on 6 records -> b = 6, c = 0
    # label 1: both equal -> b = c = 0
    # label 2: A wrong on 1, B wrong on 3 other records -> b = 3, c = 1
    n = 12
    t = np.zeros((n, 3), dtype=np.int8)
    t[:6, 0] = 1
    t[::2, 1] = 1
    t[:4, 2] = 1
    a, b = t.copy(), t.copy()
    b[:6, 0] = 0  # B misses all six positives of label 0
    a[5, 2] = 1  # A: one false positive on label 2
    b[[0, 1], 2] = 0  # B: two false negatives ...
    b[7, 2] = 1  # ... and one false positive
    rows = mcnemar_per_label(t, a, b, ["x", "y", "z"])
    assert [r["label"] for r in rows] == ["x", "y", "z"]
    assert [(r["b"], r["c"]) for r in rows] == [(6, 0), (0, 0), (3, 1)]
    p = [2 / 2 ** 6, 1.0, 2 * (1 + 4) / 2 ** 4]  # exact binomial by hand
    assert [r["p_value"] for r in rows] == pytest.approx(p)
    # Holm by hand: sorted 1/32 * 3 = 0.09375; 0.625 * 2 = 1.25 -> 1; 1 * 1 = 1
    assert [r["p_holm"] for r in rows] == pytest.approx([0.09375, 1.0, 1.0])
    for j, r in enumerate(rows):
        assert r["f1_a"] == pytest.approx(f1_score(t[:, j], a[:, j], zero_division=0))
        assert r["f1_b"] == pytest.approx(f1_score(t[:, j], b[:, j], zero_division=0))
        assert r["support"] == int(t[:, j].sum())
        # the per-label test is mcnemar on the label's per-record correctness
        m = mcnemar(a[:, j] == t[:, j], b[:, j] == t[:, j])
        assert (m["b"], m["c"], m["p_value"], m["chi2"]) == (r["b"], r["c"], r["p_value"], r["chi2"])


# ---------------------------------------------------------------- compare_systems


def test_compare_systems_is_json_ready_and_matches_the_parts():
    t, a, b = _systems(90, L=4, seed=11)
    c = _flip(t, 0.3, np.random.default_rng(1))
    names = ["w", "x", "y", "z"]
    preds = {"A": a, "B": b, "C": c}
    out = compare_systems(t, preds, [("A", "B"), ("C", "A")], names, n_resamples=200, seed=4)
    json.dumps(out, allow_nan=False)
    assert [(r["system_a"], r["system_b"]) for r in out] == [("A", "B"), ("C", "A")]
    for r in out:
        pa, pb = preds[r["system_a"]], preds[r["system_b"]]
        assert r["n"] == 90
        assert r["micro_f1"] == paired_bootstrap(t, pa, pb, micro_f1, n_resamples=200, seed=4)
        assert r["macro_f1"] == paired_bootstrap(t, pa, pb, macro_f1, n_resamples=200, seed=4)
        assert r["per_label"] == mcnemar_per_label(t, pa, pb, names)
    every = compare_systems(t, preds, None, names, n_resamples=20)
    assert [(r["system_a"], r["system_b"]) for r in every] == [("A", "B"), ("A", "C"), ("B", "C")]


# ---------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors():
    t, a, b = _systems(20, seed=12)
    with pytest.raises(ValueError, match="shape"):
        paired_bootstrap(t, a, b[:, :-1])
    with pytest.raises(ValueError, match="shape"):
        paired_bootstrap(t, a[:-1], b)
    bad = a.copy()
    bad[0, 0] = 2
    with pytest.raises(ValueError, match="0/1"):
        paired_bootstrap(t, bad, b)
    with pytest.raises(ValueError, match="empty"):
        paired_bootstrap(t[:0], a[:0], b[:0])
    with pytest.raises(ValueError, match="alpha"):
        paired_bootstrap(t, a, b, alpha=0)
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap_correct([1, 0], [0, 1], n_resamples=0)
    with pytest.raises(ValueError, match="length"):
        paired_bootstrap_correct([1, 0, 1], [0, 1])
    with pytest.raises(ValueError, match="0/1"):
        mcnemar([1, 0, 2], [0, 1, 1])
    with pytest.raises(ValueError, match="1-D"):
        mcnemar(np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="length"):
        mcnemar([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="label names"):
        mcnemar_per_label(t, a, b, ["only", "two"])
    with pytest.raises(ValueError, match="unknown system"):
        compare_systems(t, {"A": a, "B": b}, [("A", "Z")], [str(j) for j in range(t.shape[1])])
