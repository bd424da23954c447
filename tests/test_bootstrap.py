import time

import numpy as np
import pytest

from synthdx.evaluate import bootstrap_ci, evaluate_system, label_f1, macro_f1, micro_f1, multilabel_scores
from synthdx.evaluate import bootstrap as bs
from synthdx.evaluate.metrics import prf_from_counts


def _data(n, L=6, seed=0, flip=0.1):
    rng = np.random.default_rng(seed)
    t = (rng.random((n, L)) < np.linspace(0.05, 0.5, L)).astype(np.int8)
    p = t.copy()
    f = rng.random(t.shape) < flip
    p[f] = 1 - p[f]
    return t, p


def _naive(fn, t, p, B, alpha, seed):
    idx = np.random.default_rng(seed).integers(0, len(t), size=(B, len(t)))
    vals = [fn(t[i], p[i]) for i in idx]
    return fn(t, p), *np.percentile(vals, [100 * alpha / 2, 100 * (1 - alpha / 2)])


def _sk_micro(t, p):
    return multilabel_scores(t, p, [str(j) for j in range(t.shape[1])])["micro"]["f1"]


def _sk_macro(t, p):
    return multilabel_scores(t, p, [str(j) for j in range(t.shape[1])])["macro"]["f1"]


@pytest.mark.parametrize("fast,slow", [(micro_f1, _sk_micro), (macro_f1, _sk_macro)])
def test_vectorised_equals_naive_loop(fast, slow):
    t, p = _data(40, seed=3)
    ref = _naive(slow, t, p, 200, 0.1, seed=7)
    assert bootstrap_ci(fast, t, p, n_resamples=200, alpha=0.1, seed=7) == pytest.approx(ref, abs=1e-12)
    # any callable goes through the generic per-resample loop, same resamples
    assert bootstrap_ci(slow, t, p, n_resamples=200, alpha=0.1, seed=7) == pytest.approx(ref, abs=1e-12)


def test_blocked_index_draws_equal_one_draw(monkeypatch):
    monkeypatch.setattr(bs, "_BLOCK_ENTRIES", 100)  # blocks of 2 resamples of 50 rows
    got = np.concatenate(list(bs.resample_indices(50, 25, seed=4)))
    assert (got == np.random.default_rng(4).integers(0, 50, size=(25, 50))).all()
    t, p = _data(50, seed=1)
    assert bootstrap_ci(micro_f1, t, p, 25, seed=4) == pytest.approx(_naive(_sk_micro, t, p, 25, 0.05, 4))


def test_contains_point_and_is_deterministic():
    t, p = _data(300)
    point, lo, hi = bootstrap_ci(micro_f1, t, p, seed=1)
    assert lo <= point <= hi and lo < hi
    assert bootstrap_ci(micro_f1, t, p, seed=1) == (point, lo, hi)
    assert bootstrap_ci(micro_f1, t, p, seed=2) != (point, lo, hi)


def test_narrows_with_more_data():
    widths = []
    for n in (100, 400, 1600):
        t, p = _data(n, seed=n)
        _, lo, hi = bootstrap_ci(macro_f1, t, p, n_resamples=500)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]


def test_evaluate_system_shares_resamples_and_matches_bootstrap_ci():
    t, p = _data(120, seed=5)
    names = [f"l{j}" for j in range(t.shape[1])]
    r = evaluate_system(t, p, names, n_resamples=300, seed=9)
    assert r == evaluate_system(t, p, names, n_resamples=300, seed=9)
    base = multilabel_scores(t, p, names)
    assert r["micro"]["f1"] == base["micro"]["f1"] and r["macro"]["f1"] == base["macro"]["f1"]
    assert r["micro"]["f1_ci"] == pytest.approx(list(bootstrap_ci(micro_f1, t, p, 300, seed=9)[1:]))
    assert r["macro"]["f1_ci"] == pytest.approx(list(bootstrap_ci(macro_f1, t, p, 300, seed=9)[1:]))
    for j, name in enumerate(names):
        ci = bootstrap_ci(label_f1(j), t, p, 300, seed=9)[1:]
        assert r["per_label"][name]["f1_ci"] == pytest.approx(list(ci))
    assert r["bootstrap"]["n_resamples"] == 300 and r["bootstrap"]["seed"] == 9


def test_label_f1_matches_counts():
    t, p = _data(50)
    j = 2
    tp, fp, fn = (t[:, j] & p[:, j]).sum(), ((1 - t[:, j]) & p[:, j]).sum(), (t[:, j] & (1 - p[:, j])).sum()
    assert label_f1(j)(t, p) == pytest.approx(float(prf_from_counts(tp, fp, fn)[2]))


def test_fast_enough():
    t, p = _data(700, L=14)
    names = [str(j) for j in range(14)]
    evaluate_system(t, p, names, n_resamples=50)
    start = time.perf_counter()
    evaluate_system(t, p, names, n_resamples=1000)
    assert time.perf_counter() - start < 1.0


def test_bad_arguments():
    t, p = _data(10)
    with pytest.raises(ValueError):
        bootstrap_ci(micro_f1, t, p, n_resamples=0)
    with pytest.raises(ValueError):
        bootstrap_ci(micro_f1, t, p, alpha=1.5)
    with pytest.raises(ValueError):
        bootstrap_ci(micro_f1, t[:0], p[:0])
