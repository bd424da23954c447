"""The synthetic HPO patient generator: follows the annotated frequencies and sexes, is
deterministic per (seed, disease, index), never contradicts itself, hides the disease, and makes
patients a knowledge-based ranker recognises (Marfan syndrome on the real HPO)."""

from __future__ import annotations

import json
import math

import pytest

from synthdx.knowledge.hpo import PHENOTYPIC_ABNORMALITY, iso_duration_days
from synthdx.patients import Case, Patient
from synthdx.synth import HPOPatientGenerator
from synthdx.synth.hpo_patients import (GENERIC_ONSET, patient_shape, richness_bin, shape_by_richness,
                                        shape_table)
from synthdx.tasks.rare_ddx_render import render_summary

# the tiny_hpo_knowledge release (tests/tiny_hpo.py):
#   OMIM:1  A1 pooled (1 + 3) / (2 + 4) = 2/3, B Occasional 0.17; congenital onset
#   OMIM:2  B (no frequency: default_frequency), A2 0.5, A1a 1/1 MALE only; no onset annotation
#   OMIM:3  no phenotype annotation
# Phenotypic abnormality's children (A, B) are the organ-system level.
A, A1, A1a, A2, B = "HP:0001000", "HP:0001001", "HP:0001003", "HP:0001002", "HP:0002000"
CONGENITAL = "HP:0003577"
# every step that changes or adds terms switched off: present terms are observed as they are
PLAIN = dict(mean_observed=None, p_imprecise=0.0, p_specific=0.0, noise_share=0.0)


def observed_rate(cases, term):
    return sum(term in c.patient.observed for c in cases) / len(cases)


def within(rate, p, n):
    """Within 4 binomial standard deviations of p."""
    return abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / n)


def test_follows_annotated_frequencies(tiny_hpo_knowledge):
    n = 2000
    cases = HPOPatientGenerator(tiny_hpo_knowledge, seed=1, **PLAIN).generate(["OMIM:1"], n)
    assert within(observed_rate(cases, B), 0.17, n)
    # A1 present 2/3 of the time; when neither A1 nor B is, A1 (the most frequent) is taken
    assert within(observed_rate(cases, A1), 2 / 3 + (1 / 3) * (1 - 0.17), n)
    assert all(c.patient.observed for c in cases)
    # a row without frequency counts as default_frequency (B of OMIM:2)
    gen = HPOPatientGenerator(tiny_hpo_knowledge, seed=1, default_frequency=0.3, **PLAIN)
    cases = gen.generate(["OMIM:2"], n)
    assert within(observed_rate(cases, B), 0.3, n)


def test_male_only_terms_never_in_female_patients(tiny_hpo_knowledge, hpo):
    gen = HPOPatientGenerator(tiny_hpo_knowledge, seed=0, p_sex_unknown=0.0, **PLAIN)
    cases = gen.generate(["OMIM:2"], 400)
    females = [c for c in cases if c.patient.sex == "FEMALE"]
    males = [c for c in cases if c.patient.sex == "MALE"]
    assert 150 < len(females) < 250  # 50/50 without X-linked inheritance
    assert all(A1a not in c.patient.observed + c.patient.excluded for c in females)
    assert all(A1a in c.patient.observed for c in males)  # 1/1 for men
    # on the real HPO: genital annotations mostly carry no sex; the ontology branch decides.
    # Noonan syndrome 1 has Cryptorchidism (HP:0000028) without a sex restriction.
    male_genitalia = hpo.ontology.descendants("HP:0010461")
    cases = HPOPatientGenerator(hpo, seed=0, p_sex_unknown=0.0).generate(["OMIM:163950"], 100)
    females = [c for c in cases if c.patient.sex == "FEMALE"]
    assert females and all(not set(c.patient.observed + c.patient.excluded) & male_genitalia for c in females)
    assert any(set(c.patient.observed) & male_genitalia for c in cases if c.patient.sex == "MALE")


def test_deterministic_and_independent_of_other_diseases(tiny_hpo_knowledge):
    both = HPOPatientGenerator(tiny_hpo_knowledge, seed=3).generate(["OMIM:1", "OMIM:2"], 6)
    again = HPOPatientGenerator(tiny_hpo_knowledge, seed=3).generate(["OMIM:1", "OMIM:2"], 6)
    alone = HPOPatientGenerator(tiny_hpo_knowledge, seed=3).generate(["OMIM:2"], 6)
    assert [c.to_dict() for c in both] == [c.to_dict() for c in again]
    assert [c.to_dict() for c in both[6:]] == [c.to_dict() for c in alone]
    # resuming: patients 4.. of a later call are those of one long call
    later = list(HPOPatientGenerator(tiny_hpo_knowledge, seed=3).iter_cases(["OMIM:2"], 2, start=4))
    assert [c.to_dict() for c in later] == [c.to_dict() for c in alone[4:]]
    other = HPOPatientGenerator(tiny_hpo_knowledge, seed=4).generate(["OMIM:1", "OMIM:2"], 6)
    assert [c.to_dict() for c in other] != [c.to_dict() for c in both]
    assert len({c.id for c in both + other}) == 24


def test_excluded_never_contradicts_observed(tiny_hpo_knowledge, hpo):
    def check(cases, ont):
        for c in cases:
            p = c.patient
            assert p.observed
            for e in p.excluded:
                assert e not in p.observed
                for o in p.observed:
                    assert e not in ont.ancestors(o) and o not in ont.ancestors(e), (p.id, e, o)

    gen = HPOPatientGenerator(tiny_hpo_knowledge, seed=0, p_excluded=1.0, mean_excluded=4, p_imprecise=0.3,
                              p_specific=0.3, noise_share=0.3)
    cases = gen.generate(["OMIM:1", "OMIM:2"], 300)
    check(cases, tiny_hpo_knowledge.ontology)
    assert sum(bool(c.patient.excluded) for c in cases) > 300
    cases = HPOPatientGenerator(hpo, seed=0).generate(["OMIM:154700", "OMIM:163950", "OMIM:300624"], 30)
    check(cases, hpo.ontology)


def test_imprecise_terms_are_near_ancestors_below_organ_level(tiny_hpo_knowledge, hpo):
    # tiny: A1a climbs to A1 and stops (A is organ level); A2 and B have no permitted parent
    gen = HPOPatientGenerator(tiny_hpo_knowledge, seed=0, p_sex_unknown=0.0, **{**PLAIN, "p_imprecise": 1.0})
    males = [c for c in gen.generate(["OMIM:2"], 200) if c.patient.sex == "MALE"]
    assert males and all(A1 in c.patient.observed and A1a not in c.patient.observed for c in males)
    # real HPO: every observed term is an annotated term or one of its parents / grandparents
    ont = hpo.ontology
    organ_level = {PHENOTYPIC_ABNORMALITY, *ont.children(PHENOTYPIC_ABNORMALITY)}
    annotated = {a.hpo_id for a in hpo.diseases["OMIM:154700"].phenotypes}
    near = set(annotated)
    for a in annotated:
        for p in ont.parents(a):
            near |= {p, *ont.parents(p)}
    gen = HPOPatientGenerator(hpo, seed=0, **{**PLAIN, "p_imprecise": 1.0})
    observed = {t for c in gen.generate(["OMIM:154700"], 30) for t in c.patient.observed}
    assert observed <= near and not observed & organ_level
    assert observed - annotated  # some terms did move up


def test_more_specific_terms_and_noise(tiny_hpo_knowledge):
    # p_specific: A1 (OMIM:1) becomes its child A1a; B has no child and stays
    gen = HPOPatientGenerator(tiny_hpo_knowledge, seed=0, **{**PLAIN, "p_specific": 1.0})
    assert {t for c in gen.generate(["OMIM:1"], 100) for t in c.patient.observed} == {A1a, B}
    # noise for OMIM:1: the pool (terms below the organ level: A1, A1a, A2) minus what is related
    # to OMIM:1's annotations (A1 and its child A1a) leaves A2
    gen = HPOPatientGenerator(tiny_hpo_knowledge, seed=0, **{**PLAIN, "noise_share": 0.5})
    cases = gen.generate(["OMIM:1"], 200)
    assert {t for c in cases for t in c.patient.observed} == {A1, B, A2}
    assert 0.1 < observed_rate(cases, A2) < 0.9


def test_case_fields_hide_the_disease(tiny_hpo_knowledge, hpo):
    cases = HPOPatientGenerator(hpo, seed=0).generate(["OMIM:154700"], 20)
    for c in cases:
        assert c.gold == ("OMIM:154700",) and c.gold_labels == ("Marfan syndrome",)
        assert c.source == "hpo-patients" and c.patient.pmids == ()
        pid = c.patient.id.lower()
        assert pid.startswith("synth-") and "omim" not in pid and "154700" not in pid and "marfan" not in pid
    # the JSONL form round-trips
    for c in cases:
        assert Case.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    # the one renderer reads them
    assert render_summary(cases[0].patient, hpo).endswith(".")


def test_onset_and_age(tiny_hpo_knowledge):
    gen = HPOPatientGenerator(tiny_hpo_knowledge, seed=0, p_onset_term=1.0, p_onset_age=0.0, p_age=1.0)
    one = gen.generate(["OMIM:1"], 50)
    assert {c.patient.onset for c in one} == {CONGENITAL}  # its only onset annotation
    assert {c.patient.onset for c in gen.generate(["OMIM:2"], 200)} <= set(GENERIC_ONSET)
    gen = HPOPatientGenerator(tiny_hpo_knowledge, seed=0, p_onset_term=0.0, p_onset_age=1.0, p_age=1.0)
    for c in gen.generate(["OMIM:1", "OMIM:2"], 100):
        p = c.patient
        assert p.onset is None and iso_duration_days(p.age) is not None
        if c.gold == ("OMIM:1",):
            assert p.onset_age == "P0D"
        if p.onset_age is not None:  # None only for a prenatal onset
            assert iso_duration_days(p.onset_age) <= iso_duration_days(p.age)
    gen = HPOPatientGenerator(tiny_hpo_knowledge, seed=0, p_onset_term=0.0, p_onset_age=0.0, p_age=0.0,
                              p_sex_unknown=1.0)
    p = gen.patient_case("OMIM:1", 0).patient
    assert (p.onset, p.onset_age, p.age, p.sex) == (None, None, None, None)


def test_bad_input(tiny_hpo_knowledge):
    gen = HPOPatientGenerator(tiny_hpo_knowledge)
    assert gen.usable_diseases() == ["OMIM:1", "OMIM:2"]
    assert gen.usable_diseases(["OMIM:3", "OMIM:2", "OMIM:999"]) == ["OMIM:2"]
    with pytest.raises(KeyError):
        gen.generate(["OMIM:999"], 1)
    with pytest.raises(ValueError, match="OMIM:3"):
        gen.generate(["OMIM:1", "OMIM:3"], 1)
    with pytest.raises(ValueError, match="p_imprecise"):
        HPOPatientGenerator(tiny_hpo_knowledge, p_imprecise=1.5)
    with pytest.raises(ValueError, match="generic_onset"):
        HPOPatientGenerator(tiny_hpo_knowledge, generic_onset={"HP:0001001": 1.0})


def test_patient_shape_and_table(tiny_hpo_knowledge):
    def case(i, observed, excluded=(), **kw):
        return Case(Patient(id=f"p{i}", observed=observed, excluded=excluded, **kw), gold=("OMIM:1",))

    cases = [case(0, (A1, A2), (B,), sex="MALE", age="P3Y"), case(1, (A1,), onset=CONGENITAL),
             case(2, (A1, A2, B, A1a), (A2, B, A1), onset_age="P1M")]
    s = patient_shape(cases, tiny_hpo_knowledge)
    assert s["n"] == 3 and s["observed_mean"] == pytest.approx(7 / 3) and s["observed_median"] == 2
    assert s["observed_p10"] == pytest.approx(1.2) and s["excluded_mean"] == pytest.approx(4 / 3)
    assert s["share_with_excluded"] == pytest.approx(2 / 3)
    assert s["excluded_share_of_terms"] == pytest.approx(4 / 11)
    assert s["share_with_age"] == pytest.approx(1 / 3) and s["share_male"] == pytest.approx(1 / 3)
    assert s["share_onset_term"] == pytest.approx(1 / 3) and s["share_onset_age"] == pytest.approx(1 / 3)
    # OMIM:1 is annotated with A1 and B; A1a is below A1, A2 neither
    assert s["observed_own_share"] == pytest.approx(4 / 7)
    assert s["observed_descendant_share"] == pytest.approx(1 / 7)
    assert s["observed_other_share"] == pytest.approx(2 / 7) and s["observed_ancestor_share"] == 0
    assert s["excluded_own_share"] == pytest.approx(3 / 4)
    table = shape_table(cases, cases[:1])
    lines = table.splitlines()
    assert lines[0] == "| statistic | synthetic | real |"
    assert "| cases | 3 | 1 |" in lines and "| observed terms, mean | 2.33 | 2 |" in lines


def test_shape_by_richness_of_the_gold_disease(tiny_hpo_knowledge):
    bins = ["1-9", "1-9", "10-19", "30-59", "60+", "60+"]
    assert [richness_bin(n) for n in (1, 9, 10, 59, 60, 500)] == bins
    assert [richness_bin(n, (3,)) for n in (1, 2, 3)] == ["1-2", "1-2", "3+"]

    def case(i, gold, observed, excluded=()):
        return Case(Patient(id=f"p{i}", observed=observed, excluded=excluded), gold=gold)

    # OMIM:1 has 2 annotated terms (A1, B), OMIM:2 has 3 (B, A2, A1a), OMIM:9 is not in the knowledge;
    # a case with two gold diseases counts the richer
    cases = [case(0, ("OMIM:1",), (A1, A2), (B,)), case(1, ("OMIM:1",), (A1,)),
             case(2, ("OMIM:2",), (B, A2, A1a, A1)), case(3, ("OMIM:9",), (A1,), (B, A2)),
             case(4, ("OMIM:1", "OMIM:2"), (B,))]
    by = shape_by_richness(cases, tiny_hpo_knowledge, edges=(3,))
    assert list(by) == ["1-2", "3+", "not annotated"]
    assert by["1-2"]["n"] == 2 and by["1-2"]["share"] == pytest.approx(2 / 5)
    assert by["1-2"]["observed_mean"] == pytest.approx(3 / 2)
    assert by["1-2"]["excluded_mean"] == pytest.approx(1 / 2)
    assert by["1-2"]["observed_other_share"] == pytest.approx(1 / 3)  # A2 is not OMIM:1's
    assert by["1-2"]["excluded_own_share"] == 1
    assert by["3+"]["n"] == 2 and by["3+"]["observed_mean"] == pytest.approx(5 / 2)
    assert by["3+"]["observed_other_share"] == 0  # A1 of case 2 is an ancestor of OMIM:2's A1a
    assert by["not annotated"] == {"n": 1, "share": pytest.approx(1 / 5), "observed_mean": 1.0,
                                   "excluded_mean": 2.0, "excluded_share_of_terms": pytest.approx(2 / 3)}


def test_marfan_patients_are_recognisable(hpo):
    from synthdx.baselines.phenotype_ranker import PhenotypeRanker

    cases = HPOPatientGenerator(hpo, seed=0).generate(["OMIM:154700"], 20)
    ranker = PhenotypeRanker(hpo).fit()
    ranks = [ranker.gold_rank(s, c.gold) for s, c in zip(ranker.scores_many(c.patient for c in cases), cases)]
    assert sum(r <= 10 for r in ranks) >= 14, ranks
