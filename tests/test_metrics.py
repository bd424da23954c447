import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from synthdx.evaluate import multi_hot, multilabel_scores

NAMES = ["a", "b", "c"]


def _sk(t, p, average):
    return precision_recall_fscore_support(t, p, average=average, zero_division=0)


def test_hand_computed_tiny_example():
    #           a  b  c
    t = np.array([[1, 0, 0],
                  [1, 1, 0],
                  [0, 1, 0],
                  [0, 0, 0]])
    p = np.array([[1, 1, 0],
                  [0, 1, 0],
                  [0, 1, 0],
                  [0, 0, 1]])
    s = multilabel_scores(t, p, NAMES)
    # a: tp1 fp0 fn1 -> P 1, R .5, F1 2/3 ; b: tp2 fp1 fn0 -> P 2/3, R 1, F1 .8 ; c: tp0 fp1 fn0 -> 0, 0, 0
    a, b, c = (s["per_label"][n] for n in NAMES)
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == (1.0, 0.5, pytest.approx(2 / 3), 2)
    assert (b["precision"], b["recall"], b["support"]) == (pytest.approx(2 / 3), 1.0, 2)
    assert b["f1"] == pytest.approx(0.8)
    assert (c["precision"], c["recall"], c["f1"], c["support"], c["predicted"]) == (0.0, 0.0, 0.0, 0, 1)
    # micro: tp 3, fp 2, fn 1
    assert s["micro"]["precision"] == pytest.approx(3 / 5)
    assert s["micro"]["recall"] == pytest.approx(3 / 4)
    assert s["micro"]["f1"] == pytest.approx(6 / 9)
    assert s["macro"]["f1"] == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert s["n"] == 4 and s["n_labels"] == 3


def test_label_with_no_true_and_no_predicted_positives_scores_zero():
    t = np.array([[1, 0], [0, 0]])
    s = multilabel_scores(t, t.copy(), ["x", "y"])
    assert s["per_label"]["y"] == {**s["per_label"]["y"], "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert s["macro"]["f1"] == 0.5  # macro is over all labels of the label space
    assert s["micro"]["f1"] == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, L = 60, 7
    t = (rng.random((n, L)) < rng.random(L) * 0.4).astype(int)
    p = (rng.random((n, L)) < 0.2).astype(int)
    t[:, 0] = 0  # a label with no support
    p[:, 1] = 0  # a label never predicted
    t[:, 2] = p[:, 2] = 0  # neither
    names = [f"l{j}" for j in range(L)]
    s = multilabel_scores(t, p, names)
    for avg in ("micro", "macro"):
        P, R, F, _ = _sk(t, p, avg)
        assert s[avg]["precision"] == pytest.approx(P, abs=1e-12)
        assert s[avg]["recall"] == pytest.approx(R, abs=1e-12)
        assert s[avg]["f1"] == pytest.approx(F, abs=1e-12)
    P, R, F, S = _sk(t, p, None)
    for j, name in enumerate(names):
        d = s["per_label"][name]
        assert (d["precision"], d["recall"], d["f1"]) == pytest.approx((P[j], R[j], F[j]), abs=1e-12)
        assert d["support"] == S[j]


def test_plain_python_types_and_input_checks():
    s = multilabel_scores([[1, 0]], [[1, 1]], ["x", "y"])
    assert type(s["micro"]["f1"]) is float and type(s["per_label"]["x"]["support"]) is int
    with pytest.raises(ValueError, match="shape"):
        multilabel_scores(np.zeros((2, 2)), np.zeros((3, 2)), ["x", "y"])
    with pytest.raises(ValueError, match="label names"):
        multilabel_scores(np.zeros((2, 2)), np.zeros((2, 2)), ["x"])
    with pytest.raises(ValueError, match="0/1"):
        multilabel_scores(np.full((1, 2), 2), np.zeros((1, 2)), ["x", "y"])


def test_multi_hot():
    m = multi_hot([["b"], [], None, ["a", "c"]], NAMES)
    assert m.tolist() == [[0, 1, 0], [0, 0, 0], [0, 0, 0], [1, 0, 1]]
    with pytest.raises(ValueError, match="not in the label space"):
        multi_hot([["zzz"]], NAMES)
