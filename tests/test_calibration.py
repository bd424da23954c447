import json

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, f1_score

from synthdx.evaluate.calibration import (
    DEFAULT_GRID,
    Thresholds,
    apply_thresholds,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    reliability,
    top1_calibration,
    top1_confidence,
    tune_thresholds,
)

# ---------------------------------------------------------------- thresholds


def _hand_example():
    # columns: a (separable, any threshold in (0.4, 0.6] is perfect -> 0.5 kept),
    #          b (perfect only for thresholds in (0.1, 0.2] -> 0.2, the grid value nearest 0.5),
    #          c (no positive -> fallback 0.5),
    #          d (perfect at thresholds in (0.5, 0.7] -> 0.55, nearest 0.5 of 0.55..0.7)
    y = np.array([[1, 1, 0, 1],
                  [1, 1, 0, 0],
                  [0, 1, 0, 0],
                  [0, 0, 0, 0]])
    s = np.array([[0.9, 0.30, 0.8, 0.7],
                  [0.6, 0.25, 0.1, 0.5],
                  [0.4, 0.20, 0.3, 0.2],
                  [0.1, 0.10, 0.6, 0.1]])
    return y, s


def test_tune_thresholds_hand_example():
    y, s = _hand_example()
    th = tune_thresholds(y, s, names=["a", "b", "c", "d"])
    assert isinstance(th, Thresholds)
    assert th.values == pytest.approx([0.5, 0.2, 0.5, 0.55])
    assert th.fallback_labels == ["c"]
    assert th.val_f1 == pytest.approx([1.0, 1.0, 0.0, 1.0])
    assert apply_thresholds(s, th).tolist() == [[1, 1, 1, 1],
                                                [1, 1, 0, 0],
                                                [0, 1, 0, 0],
                                                [0, 0, 1, 0]]
    # without names the fallback is the column index
    assert tune_thresholds(y, s).fallback_labels == [2]
    json.dumps(th.to_dict(["a", "b", "c", "d"]))
    assert th.to_dict(["a", "b", "c", "d"])["thresholds"]["b"] == pytest.approx(0.2)


def test_ties_go_to_the_threshold_nearest_half_then_the_lower():
    # at 0.3: all four predicted, tp 2 fp 2 -> F1 4/6; at 0.7: only the first, tp 1 fn 1 -> F1 2/3
    y = np.array([[1], [1], [0], [0]])
    s = np.array([[0.8], [0.5], [0.5], [0.5]])
    assert tune_thresholds(y, s, grid=[0.7, 0.3]).values.tolist() == [0.3]
    # a flat F1 curve keeps 0.5
    assert tune_thresholds([[1], [0]], [[0.99], [0.01]]).values.tolist() == [0.5]


def test_tuned_thresholds_match_a_brute_force_search():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 5)) < [0.05, 0.1, 0.3, 0.5, 0.7]).astype(np.int8)
    s = np.clip(0.35 * y + rng.random(y.shape) * 0.7, 0, 1)
    th = tune_thresholds(y, s)
    for j in range(5):
        f1s = [f1_score(y[:, j], s[:, j] >= g, zero_division=0) for g in DEFAULT_GRID]
        assert th.val_f1[j] == pytest.approx(max(f1s))
        assert f1_score(y[:, j], s[:, j] >= th.values[j], zero_division=0) == pytest.approx(max(f1s))
        assert th.values[j] in DEFAULT_GRID
        # at least as good as the default threshold on the validation data it was tuned on
        assert th.val_f1[j] >= f1_score(y[:, j], s[:, j] >= 0.5, zero_division=0)
    assert th.fallback_labels == []


def test_apply_thresholds():
    s = np.array([[0.2, 0.5], [0.6, 0.49]])
    assert apply_thresholds(s, [0.2, 0.5]).tolist() == [[1, 1], [1, 0]]  # score >= threshold
    assert apply_thresholds(s, 0.5).tolist() == [[0, 1], [1, 0]]
    assert apply_thresholds(s, 0.5).dtype == np.int8
    with pytest.raises(ValueError, match="thresholds"):
        apply_thresholds(s, [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="2-D"):
        apply_thresholds(s[0], 0.5)


def test_threshold_docstrings_say_validation_only():
    for fn in (tune_thresholds, apply_thresholds):
        assert "validation" in fn.__doc__.lower()
    assert "never" in tune_thresholds.__doc__.lower()


def test_tune_thresholds_bad_input():
    y, s = _hand_example()
    with pytest.raises(ValueError, match="shape"):
        tune_thresholds(y, s[:, :3])
    with pytest.raises(ValueError, match="0/1"):
        tune_thresholds(y * 2, s)
    with pytest.raises(ValueError, match="finite"):
        tune_thresholds(y, np.where(s > 0.85, np.nan, s))
    with pytest.raises(ValueError, match="label names"):
        tune_thresholds(y, s, names=["a"])
    with pytest.raises(ValueError, match="grid"):
        tune_thresholds(y, s, grid=[])


# ---------------------------------------------------------------- reliability, ECE, Brier


def _probs(n=500, seed=0):
    rng = np.random.default_rng(seed)
    # probabilities only in [0, 0.3) and [0.7, 1] (empty middle bins), plus values on bin edges
    p = np.concatenate([rng.random(n // 2) * 0.3, 0.7 + rng.random(n // 2) * 0.3,
                        [0.0, 0.1, 0.2, 0.7, 0.8, 1.0]])
    y = (rng.random(len(p)) < p ** 1.5).astype(np.int8)  # miscalibrated on purpose
    return y, p


def test_reliability_uniform_matches_sklearn():
    y, p = _probs()
    r = reliability(y, p, n_bins=10)
    freq_sk, conf_sk = calibration_curve(y, p, n_bins=10, strategy="uniform")
    filled = [k for k, c in enumerate(r["count"]) if c > 0]
    assert len(filled) < 10  # sklearn drops the empty middle bins; here they are kept with count 0
    assert [r["frequency"][k] for k in filled] == pytest.approx(freq_sk, abs=1e-12)
    assert [r["mean_confidence"][k] for k in filled] == pytest.approx(conf_sk, abs=1e-12)
    assert all(r["frequency"][k] is None and r["mean_confidence"][k] is None
               for k in range(10) if k not in filled)
    assert r["edges"] == pytest.approx(np.linspace(0, 1, 11)) and sum(r["count"]) == r["n"] == len(p)
    # sklearn's edge convention: 0.1 lies in the first bin, 0.0 too
    assert r["count"][0] == np.count_nonzero(p <= 0.1)
    json.dumps(r, allow_nan=False)


def test_reliability_quantile_matches_sklearn():
    rng = np.random.default_rng(1)
    p = rng.random(300)
    y = (rng.random(300) < p).astype(np.int8)
    r = reliability(y, p, n_bins=5, strategy="quantile")
    freq_sk, conf_sk = calibration_curve(y, p, n_bins=5, strategy="quantile")
    assert r["frequency"] == pytest.approx(freq_sk, abs=1e-12)
    assert r["mean_confidence"] == pytest.approx(conf_sk, abs=1e-12)
    assert r["edges"] == pytest.approx(np.percentile(p, [0, 20, 40, 60, 80, 100]))
    assert r["count"] == [60] * 5


def test_reliability_flattens_record_label_pairs():
    rng = np.random.default_rng(2)
    P = rng.random((40, 3))
    Y = (rng.random((40, 3)) < P).astype(np.int8)
    assert reliability(Y, P) == reliability(Y.ravel(), P.ravel())
    assert reliability(Y, P)["n"] == 120
    assert brier_score(Y, P) == brier_score(Y.ravel(), P.ravel())


def test_ece_by_hand():
    # 2 bins: [0, 0.5] holds 0.1, 0.2 (conf 0.15, observed 1/2), (0.5, 1] holds 0.8, 0.9 (conf 0.85, observed 1)
    # ECE = 2/4 * |0.5 - 0.15| + 2/4 * |1 - 0.85| = 0.175 + 0.075
    assert expected_calibration_error([0, 1, 1, 1], [0.1, 0.2, 0.8, 0.9], n_bins=2) == pytest.approx(0.25)
    # calibrated within each bin -> 0
    assert expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.0)
    # always 1.0 but right only a quarter of the time -> 0.75
    assert expected_calibration_error([[1, 0], [0, 0]], [[1.0, 1.0], [1.0, 1.0]]) == pytest.approx(0.75)


def test_ece_equals_the_formula_on_sklearn_bins():
    y, p = _probs(seed=3)
    freq_sk, conf_sk = calibration_curve(y, p, n_bins=10)
    counts = np.array([c for c in reliability(y, p)["count"] if c > 0])
    hand = np.sum(counts / len(p) * np.abs(freq_sk - conf_sk))
    assert expected_calibration_error(y, p) == pytest.approx(hand, abs=1e-12)


def test_brier_score():
    assert brier_score([0, 1], [0.1, 0.9]) == pytest.approx(0.01)
    y, p = _probs(seed=4)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-15)


def test_calibration_bad_input():
    with pytest.raises(ValueError, match="shape"):
        reliability([0, 1, 1], [0.2, 0.4])
    with pytest.raises(ValueError, match="0/1"):
        brier_score([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match="finite"):
        brier_score([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="strategy"):
        reliability([0, 1], [0.1, 0.2], strategy="equal")
    with pytest.raises(ValueError, match="n_bins"):
        reliability([0, 1], [0.1, 0.2], n_bins=0)
    with pytest.raises(ValueError, match="no predictions"):
        brier_score([], [])


# ---------------------------------------------------------------- rankings: top-1 confidence


def test_top1_confidence_by_hand():
    # softmax of (2, 0, -1) at the best: 1 / (1 + e^-2 + e^-3)
    assert top1_confidence([0.0, 2.0, -1.0]) == pytest.approx(1 / (1 + np.exp(-2) + np.exp(-3)))
    # scores are normalised: only differences matter; T = 2 halves them
    assert top1_confidence([102.0, 100.0]) == pytest.approx(1 / (1 + np.exp(-2)))
    assert top1_confidence([2.0, 0.0], temperature=2.0) == pytest.approx(1 / (1 + np.exp(-1)))
    # a tie at the top shares the probability; an impossible candidate (-inf) adds nothing
    assert top1_confidence([1.0, 1.0, -np.inf]) == pytest.approx(0.5)
    assert top1_confidence([5.0]) == 1.0
    # log-probabilities: the model's probability of its best name renormalised over the K names
    logp = np.log([0.3, 0.1, 0.1])
    assert top1_confidence(logp) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="temperature"):
        top1_confidence([1.0, 0.0], temperature=0.0)
    with pytest.raises(ValueError, match="no candidates"):
        top1_confidence([])


def test_top1_calibration_ece_and_brier_by_hand():
    # 10 equal-width bins: 0.25 | 0.65 | 0.72, 0.75 (mean 0.735, right 1 of 2) | 0.95
    conf, correct = [0.95, 0.75, 0.72, 0.25, 0.65], [1, 0, 1, 0, 1]
    # ECE = (|1 - .95| + 2 |.5 - .735| + |0 - .25| + |1 - .65|) / 5 = (0.05 + 0.47 + 0.25 + 0.35) / 5
    # Brier = (.05^2 + .75^2 + .28^2 + .25^2 + .35^2) / 5
    c = top1_calibration(conf, correct)
    assert c["ece"] == pytest.approx(1.12 / 5)
    assert c["brier"] == pytest.approx((0.0025 + 0.5625 + 0.0784 + 0.0625 + 0.1225) / 5)
    assert c["top1"] == pytest.approx(0.6) and c["confidence"] == pytest.approx(0.664) and c["n"] == 5
    assert c["reliability"]["count"] == [0, 0, 1, 0, 0, 0, 1, 2, 0, 1]
    b = top1_calibration(conf, correct, n_resamples=200, seed=1)
    assert b["ece"] == c["ece"] and b["ece_ci"][0] <= b["ece_ci"][1]
    assert b == top1_calibration(conf, correct, n_resamples=200, seed=1)  # seeded
    # one group per case: the very same resamples; all cases in one group: every resample is the data
    single = top1_calibration(conf, correct, n_resamples=200, seed=1, groups=["a", "b", "c", "d", "e"])
    assert single["ece_ci"] == b["ece_ci"]
    one = top1_calibration(conf, correct, n_resamples=200, seed=1, groups=["p"] * 5)
    assert one["ece_ci"] == pytest.approx([c["ece"], c["ece"]])
    with pytest.raises(ValueError, match="groups has 2 entries for 5 cases"):
        top1_calibration(conf, correct, n_resamples=10, groups=["a", "b"])


def test_fit_temperature_by_hand():
    # two candidates 2 apart in every case, 3 of 4 right: the best p_T = sigmoid(2 / T) is 3/4,
    # so 2 / T = log 3
    assert fit_temperature([[2.0, 0.0]] * 4, [1, 1, 1, 0]) == pytest.approx(2 / np.log(3), rel=1e-5)
    # three candidates (2, 0, -1), half right: 1 / (1 + x^2 + x^3) = 1/2 with x = e^(-1/T),
    # i.e. x^2 + x^3 = 1, x = 0.75488 (the real root), T = -1 / log x
    x = np.roots([1, 1, 0, -1])
    x = float(x[np.isreal(x)].real[0])
    assert fit_temperature([[2.0, 0.0, -1.0]] * 4, [1, 0, 1, 0]) == pytest.approx(-1 / np.log(x), rel=1e-5)
    # the fitted T is the minimum of the log-loss (checked against a fine brute-force grid)
    rng = np.random.default_rng(0)
    lists = [rng.normal(0, 3, size=5) for _ in range(100)]
    correct = rng.random(100) < 0.4
    t = fit_temperature(lists, correct)

    def log_loss(temp):
        p = np.array([top1_confidence(s, temp) for s in lists])
        return -np.mean(np.where(correct, np.log(p), np.log1p(-p)))

    grid = np.exp(np.linspace(np.log(0.5), np.log(20), 401))
    losses = [log_loss(g) for g in grid]
    assert log_loss(t) <= min(losses) + 1e-9
    assert t == pytest.approx(grid[np.argmin(losses)], rel=0.01)
    # scaled by 10 -> the fitted T scales by 10 (the confidences do not change)
    assert fit_temperature([s * 10 for s in lists], correct) == pytest.approx(10 * t, rel=1e-4)
    # a single candidate cannot move: nothing to fit
    assert fit_temperature([[1.0]], [0]) == 1.0
    with pytest.raises(ValueError, match="score lists"):
        fit_temperature([[1.0, 0.0]], [1, 0])
