import numpy as np
import pytest

from synthdx.baselines import TfidfLogRegBaseline
from synthdx.records import LabelSpace, Record

LS = LabelSpace(["Cardiomegaly", "Pleural Effusion", "Fracture"])


def _toy(n_each=10):
    recs = []
    for i in range(n_each):
        recs.append(Record(f"c{i}", f"the heart is enlarged cardiomegaly case {i}", ["Cardiomegaly"]))
        recs.append(Record(f"e{i}", f"large pleural effusion on the left side {i}", ["Pleural Effusion"]))
        recs.append(Record(f"b{i}", f"enlarged heart and pleural effusion present {i}",
                           ["Cardiomegaly", "Pleural Effusion"]))
        recs.append(Record(f"n{i}", f"lungs are clear no acute disease {i}", []))
    return recs


def test_learns_separable_toy_set_and_constant_for_label_without_positives():
    m = TfidfLogRegBaseline(LS).fit(_toy())
    texts = ["heart enlarged, cardiomegaly", "pleural effusion seen", "lungs clear no acute disease",
             "enlarged heart with pleural effusion"]
    assert m.predict(texts) == [["Cardiomegaly"], ["Pleural Effusion"], [],
                                ["Cardiomegaly", "Pleural Effusion"]]
    proba = m.predict_proba(texts)
    assert proba.shape == (4, 3)
    assert m.estimators_[2] is None and (proba[:, 2] == 0.0).all()  # "Fracture": no positives
    assert m.predict_multi_hot(texts).dtype == np.int8
    assert m.predict([]) == [] and m.predict_proba([]).shape == (0, 3)


def test_masked_labels_and_unlabelled_records_are_left_out():
    recs = _toy(6)
    # these records claim a fracture, but their Fracture label is masked: they must not train it
    for i in range(3):
        recs.append(Record(f"m{i}", f"rib fracture seen {i}", ["Fracture"],
                           meta={"masked_labels": ["Fracture"]}))
    recs.append(Record("u", "rib fracture unlabelled", None))
    m = TfidfLogRegBaseline(LS).fit(recs)
    assert m.estimators_[2] is None and m.constant_[2] == 0.0
    assert m.n_train_.tolist() == [27, 27, 24]
    # Fracture was masked on every record that had it: only negatives remain, it is never predicted
    assert "Fracture" not in m.predict(["rib fracture"])[0]


def test_all_positive_label_is_constant_one_and_records_accepted():
    recs = [Record(str(i), f"cardiomegaly {w}", ["Cardiomegaly", "Fracture"]) for i, w in enumerate("abcdef")]
    recs += [Record("x", "normal", ["Fracture"])]
    m = TfidfLogRegBaseline(LS, min_df=1).fit(recs)
    p = m.predict_proba(recs)  # Records are accepted as inputs
    assert (p[:, 2] == 1.0).all() and (p[:, 1] == 0.0).all()


def test_errors():
    with pytest.raises(ValueError, match="no labelled"):
        TfidfLogRegBaseline(LS).fit([Record("1", "x", None)])
    with pytest.raises(ValueError, match="not in the label space"):
        TfidfLogRegBaseline(LS).fit([Record("1", "x", ["Nope"])])
    with pytest.raises(RuntimeError, match="not fitted"):
        TfidfLogRegBaseline(LS).predict(["x"])
    with pytest.raises(TypeError):
        TfidfLogRegBaseline(LS).fit(_toy(2)).predict("one string")
