"""The one patient -> clinical summary renderer (real and synthetic patients alike)."""

from __future__ import annotations

import pytest

from synthdx.patients import Case, Patient
from synthdx.tasks.rare_ddx_render import age_phrase, case_to_record, join_terms, render_summary, term_phrase


MARFAN = Patient(id="PMID_9_FBN1_case", sex="FEMALE", age="P34Y",
                 observed=("HP:0001083", "HP:0002616", "HP:0001166"),
                 excluded=("HP:0000545", "HP:0002650"), onset="HP:0011463", pmids=("PMID:9",))


def test_canonical_summary(hpo):
    text = render_summary(MARFAN, hpo, seed=None)
    assert text == ("A 34-year-old woman presents with ectopia lentis, aortic root aneurysm and "
                    "arachnodactyly. Onset in early childhood. No myopia or scoliosis was found.")


def test_deterministic_for_a_seed_and_varied_across_seeds(hpo):
    a = render_summary(MARFAN, hpo, seed=3)
    assert a == render_summary(MARFAN, hpo, seed=3)
    texts = {render_summary(MARFAN, hpo, seed=s) for s in range(20)}
    assert len(texts) > 3
    for t in texts:  # same content whatever the phrasing
        for name in ("ectopia lentis", "aortic root aneurysm", "arachnodactyly", "myopia", "scoliosis"):
            assert name in t
        assert "34-year-old woman" in t


def test_never_shows_id_or_publications(hpo):
    for s in (None, 0, 1, 2):
        t = render_summary(MARFAN, hpo, seed=s)
        assert "FBN1" not in t and "PMID" not in t and "9" not in t


@pytest.mark.parametrize("age,sex,expected", [
    ("P34Y", "FEMALE", "34-year-old woman"), ("P6Y", "MALE", "6-year-old boy"),
    ("P18M", None, "18-month-old child"), ("P6M", None, "6-month-old infant"),
    ("P6M", "FEMALE", "6-month-old girl"), ("P10D", "MALE", "10-day-old boy"),
    ("P0D", None, "newborn infant"), ("P70Y", None, "70-year-old adult"), (None, "MALE", "male patient"),
    (None, None, "patient"),
])
def test_age_phrase(age, sex, expected):
    assert age_phrase(age, sex) == expected


def test_articles_and_lists(hpo):
    p = Patient(id="x", age="P8Y", observed=("HP:0001250",))
    assert render_summary(p, hpo, seed=None).startswith("An 8-year-old child presents with seizure.")
    assert join_terms(["a"]) == "a" and join_terms(["a", "b"]) == "a and b"
    assert join_terms(["a", "b", "c"], "or") == "a, b or c"


def test_term_phrase_keeps_acronyms_and_eponyms(hpo):
    ont = hpo.ontology
    assert term_phrase("Seizure", ont) == "seizure"
    assert term_phrase("EEG abnormality", ont) == "EEG abnormality"
    assert term_phrase("IgA deficiency", ont) == "IgA deficiency"
    assert term_phrase("Dandy-Walker malformation", ont) == "Dandy-Walker malformation"


def test_redundant_terms_dropped(hpo):
    # Seizure is an ancestor of Focal-onset seizure; Abnormality of the eye is an ancestor of ectopia lentis
    p = Patient(id="x", observed=("HP:0001250", "HP:0007359", "HP:0001083"),
                excluded=("HP:0000478", "HP:0002650", "HP:0002944"))
    t = render_summary(p, hpo, seed=None)
    assert "focal-onset seizure" in t and "presents with seizure" not in t
    assert "abnormality of the eye" not in t                 # contradicts the observed ectopia lentis
    assert "thoracolumbar scoliosis" not in t and "scoliosis" in t  # implied by no scoliosis
    full = render_summary(p, hpo, seed=None, drop_redundant=False)
    assert "abnormality of the eye" in full


def test_unknown_terms_use_the_source_label_or_are_left_out(tiny_hpo_knowledge):
    p = Patient(id="x", sex="MALE", observed=("HP:0001001", "HP:7777777", "HP:8888888"),
                term_labels={"HP:7777777": "Brand-new finding"})
    t = render_summary(p, tiny_hpo_knowledge, seed=None)
    assert t == "A male patient presents with A1 and brand-new finding."
    assert "HP:" not in t


def test_onset_phrases(tiny_hpo_knowledge):
    p = Patient(id="x", onset_age="P3Y")
    assert "Onset at 3 years of age." in render_summary(p, tiny_hpo_knowledge, seed=None)
    p = Patient(id="x", onset_age="P5M")
    assert "Onset at 5 months of age." in render_summary(p, tiny_hpo_knowledge, seed=None)
    p = Patient(id="x", onset="HP:0003577")
    assert "Onset at birth." in render_summary(p, tiny_hpo_knowledge, seed=None)


def test_limits_and_no_features(hpo):
    p = Patient(id="x", observed=("HP:0001083", "HP:0002616", "HP:0001166"), excluded=("HP:0000545",))
    t = render_summary(p, hpo, seed=1, max_observed=1, max_excluded=0)
    assert sum(n in t for n in ("ectopia lentis", "aortic root aneurysm", "arachnodactyly")) == 1
    assert "myopia" not in t
    assert "no abnormal feature" in render_summary(Patient(id="y"), hpo)


def test_case_to_record(hpo):
    r = case_to_record(Case(MARFAN, ("OMIM:154700",), ("Marfan syndrome",), source="FBN1/x.json"), hpo)
    assert r.id == MARFAN.id and r.labels == ["OMIM:154700"]
    assert r.text == render_summary(MARFAN, hpo, seed=0)
    assert r.meta["pmids"] == ["PMID:9"] and "source" not in r.meta
    assert case_to_record(Case(MARFAN), hpo).labels is None
