"""The rule-based chest X-ray teacher: negation, hedging policies, "No Finding", devices, sentence scope."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

pytest.importorskip("medspacy")

from synthdx.records import Record  # noqa: E402
from synthdx.tasks.radiology import RADIOLOGY_LABELS  # noqa: E402
from synthdx.teachers.radiology_rules import (  # noqa: E402
    PHRASES_PATH,
    RadiologyRuleLabeler,
    compile_phrase,
    expand_phrase,
    load_phrases,
)

IU_DEV = Path(__file__).resolve().parents[2] / "shared/data/iu-xray/indiana_reports.dev.csv"

NORMAL_REPORT = ("FINDINGS: The heart is normal in size. The mediastinum is unremarkable. "
                 "The lungs are clear. No pneumothorax or pleural effusion.\n"
                 "IMPRESSION: No acute cardiopulmonary abnormality.")


@pytest.fixture(scope="module")
def teacher():
    # one pipeline for the whole module; tests switch the policy with set_params
    return RadiologyRuleLabeler().fit()


def one(teacher, text, policy="positive"):
    teacher.set_params(uncertain=policy)
    return teacher.predict_detailed([text], with_mentions=True)[0]


def test_negation(teacher):
    d = one(teacher, "No pleural effusion.")
    assert "Pleural Effusion" not in d["labels"]
    assert d["labels"] == ["No Finding"]
    assert [m["status"] for m in d["mentions"] if m["label"] == "Pleural Effusion"] == ["negated"]


def test_negated_list_and_section_header(teacher):
    d = one(teacher, "FINDINGS: No pneumothorax, pleural effusion, or focal airspace consolidation.")
    assert d["labels"] == ["No Finding"]


def test_positive_finding(teacher):
    assert one(teacher, "Mild cardiomegaly.")["labels"] == ["Cardiomegaly"]
    assert one(teacher, "Heart is not enlarged.")["labels"] == ["No Finding"]
    # "no change" does not negate, and stable (historical) findings count
    assert one(teacher, "No change in moderate cardiomegaly.")["labels"] == ["Cardiomegaly"]
    assert one(teacher, "Stable calcified granuloma in the right upper lobe.")["labels"] == ["Granuloma"]


@pytest.mark.parametrize("text", ["Cannot exclude pneumonia.", "Pneumonia cannot be excluded."])
def test_uncertainty_policies(teacher, text):
    pos = one(teacher, text, "positive")
    assert pos["labels"] == ["Pneumonia"] and pos["uncertain"] == []
    neg = one(teacher, text, "negative")
    assert "Pneumonia" not in neg["labels"] and neg["uncertain"] == []
    ign = one(teacher, text, "ignore")
    assert "Pneumonia" not in ign["labels"]
    assert "Pneumonia" in ign["uncertain"]
    # only a hedged abnormality: "No Finding" is unknown too, so it is masked rather than asserted
    assert "No Finding" in ign["uncertain"] and "No Finding" not in ign["labels"]
    assert all(d["hedged"] == ["Pneumonia"] for d in (pos, neg, ign))


def test_no_finding_for_normal_report(teacher):
    d = one(teacher, NORMAL_REPORT)
    assert d["labels"] == ["No Finding"]
    assert d["uncertain"] == []


@pytest.mark.parametrize("text", ["The lungs are clear. Thoracic scoliosis.",
                                  "The lungs are clear. Degenerative changes of the thoracic spine.",
                                  "Hyperinflated lungs. No focal consolidation."])
def test_other_abnormality_rules_out_no_finding(teacher, text):
    d = one(teacher, text)
    assert "No Finding" not in d["labels"]
    assert d["labels"] == []


def test_devices(teacher):
    assert one(teacher, "Left-sided pacemaker in place.")["labels"] == ["Support Devices"]
    assert one(teacher, "Right IJ central venous catheter tip in the SVC.")["labels"] == ["Support Devices"]
    assert one(teacher, "ET tube terminates 3 cm above the carina.")["labels"] == ["Support Devices"]


def test_negation_scope_stays_in_its_sentence(teacher):
    d = one(teacher, "No pneumothorax. Right lower lobe consolidation.")
    assert d["labels"] == ["Consolidation"]
    d = one(teacher, "No pleural effusion.\nAtelectasis at the left base.")
    assert d["labels"] == ["Atelectasis"]
    d = one(teacher, "Possible small left effusion. Mild cardiomegaly.", "ignore")
    assert d["labels"] == ["Cardiomegaly"] and d["uncertain"] == ["Pleural Effusion"]


def test_predict_order_and_shape(teacher):
    teacher.set_params(uncertain="positive")
    texts = ["Large right pleural effusion with adjacent atelectasis. Cardiomegaly.", "", NORMAL_REPORT]
    out = teacher.predict(texts)
    assert len(out) == 3
    assert out[0] == ["Cardiomegaly", "Atelectasis", "Pleural Effusion"]  # label-space order
    assert out[1] == ["No Finding"]  # nothing abnormal is said
    assert teacher.predict([]) == []
    for labels in out:
        assert all(label in RADIOLOGY_LABELS for label in labels)


def test_label_records(teacher):
    recs = [Record(id="a", text="Cannot exclude pneumonia. Mild cardiomegaly.", labels=["Pneumonia"],
                   meta={"source": "x", "nested": {"k": 1}}),
            Record(id="b", text=NORMAL_REPORT)]
    teacher.set_params(uncertain="ignore")
    out = teacher.label(recs)
    assert [r.id for r in out] == ["a", "b"] and [r.text for r in out] == [r.text for r in recs]
    assert out[0].labels == ["Cardiomegaly"] and out[0].meta["masked_labels"] == ["Pneumonia"]
    assert out[1].labels == ["No Finding"] and out[1].meta["masked_labels"] == []
    assert all(r.meta["teacher"] == "rules" for r in out)
    assert out[0].meta["source"] == "x"
    out[0].meta["nested"]["k"] = 2
    assert recs[0].meta["nested"]["k"] == 1 and "teacher" not in recs[0].meta  # inputs untouched
    teacher.set_params(uncertain="positive")
    out = teacher.label(recs)
    assert out[0].labels == ["Cardiomegaly", "Pneumonia"] and "masked_labels" not in out[0].meta


def test_bad_policy():
    with pytest.raises(ValueError):
        RadiologyRuleLabeler(uncertain="maybe").fit()


def test_pickles_without_pipeline(teacher):
    clone = pickle.loads(pickle.dumps(teacher))
    assert clone.get_params() == teacher.get_params()
    assert "_nlp" not in clone.__dict__


def test_phrase_file_is_shipped_and_valid():
    assert PHRASES_PATH.is_file()
    text = PHRASES_PATH.read_text(encoding="utf-8")
    assert "CheXpert" in text and "MIT" in text  # attribution
    phrases = load_phrases()
    assert set(phrases["labels"]) == set(RADIOLOGY_LABELS.names) - {"No Finding"}


def test_phrase_syntax():
    import spacy

    tok = spacy.blank("en").tokenizer
    assert expand_phrase("pleural fluid|effusion?", tok) == [["pleural", "fluid"], ["pleural", "effusion"],
                                                             ["pleural"]]
    assert expand_phrase("opacit*", tok) is None
    pat = compile_phrase("heart ~3 enlarged|large", tok)
    assert pat[0] == {"LOWER": "heart"} and pat[1]["OP"] == "{0,3}"
    assert pat[2] == {"LOWER": {"IN": ["enlarged", "large"]}}


@pytest.mark.skipif(not IU_DEV.exists(), reason="IU X-ray dev reports not available")
def test_micro_f1_on_pool_regression_guard():
    """A regression guard on the tuning part (the pool) of the fixed split, not a score claim."""
    from sklearn.metrics import f1_score

    from synthdx.datasets import load_records
    from synthdx.splits import hash_split

    pool, _ = hash_split(load_records(IU_DEV), 0.3)
    pred = RadiologyRuleLabeler(uncertain="positive").predict([r.text for r in pool])
    y = [RADIOLOGY_LABELS.to_multi_hot(r.labels) for r in pool]
    p = [RADIOLOGY_LABELS.to_multi_hot(x) for x in pred]
    assert f1_score(y, p, average="micro") >= 0.80
