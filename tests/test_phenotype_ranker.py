"""The likelihood-ratio phenotype ranker: scores equal the documented formulas on a hand-sized
release, leaving a publication out, sex and onset work, and a textbook case ranks first on the
real HPO."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthdx.baselines.phenotype_ranker import PhenotypeRanker
from synthdx.patients import Patient

# the tiny_hpo_knowledge release (tests/tiny_hpo.py), by hand, with default frequency 0.5:
#   OMIM:1  A1 = 4/6 (pooled 1/2 + 3/4), B = 0.17            onset: congenital
#   OMIM:2  B = 0.5 (default), A2 = 0.5, A1a = 1.0 (MALE only)
#   propagated U(t|D):  OMIM:1: A1 2/3, A 2/3;  OMIM:2: A1a 1, A1 1, A 1, A2 0.5
#   bg(t) = mean over the 2 diseases: A1a 0.5, A1 5/6, A2 0.25, A 5/6, B 0.335
A, A1, A1a, A2, B = "HP:0001000", "HP:0001001", "HP:0001003", "HP:0001002", "HP:0002000"
CONGENITAL, ADULT = "HP:0003577", "HP:0003581"
PARAMS = dict(default_frequency=0.5, noise=0.05, partial_weight=0.1, min_partial_ic=2.5, false_negative=0.1,
              use_onset=False, use_sex=False, drop_redundant=True, pseudo_count=0.0)


def ranker(tiny_hpo_knowledge, **kw):
    return PhenotypeRanker(tiny_hpo_knowledge, **{**PARAMS, **kw}).fit()


def by_id(r, patient, **kw):
    return dict(zip(r.candidates_, r.score(patient, **kw)))


def test_fit_returns_self_with_learned_attributes(tiny_hpo_knowledge):
    r = PhenotypeRanker(tiny_hpo_knowledge, **PARAMS)
    with pytest.raises(RuntimeError):
        r.rank(Patient(id="x", observed=(A1,)))
    assert r.fit() is r
    assert r.candidates_ == ["OMIM:1", "OMIM:2"]
    assert r.candidate_names_ == ["Disease one", "Disease two"]
    bg = dict(zip(tiny_hpo_knowledge.ontology.ids, r.background_))
    assert bg[A1a] == pytest.approx(0.5) and bg[A1] == pytest.approx(5 / 6)
    assert bg[A2] == pytest.approx(0.25) and bg[B] == pytest.approx((0.17 + 0.5) / 2)
    assert r.get_params()["noise"] == 0.05


def test_observed_terms_by_hand(tiny_hpo_knowledge):
    r = ranker(tiny_hpo_knowledge)
    # exact: OMIM:2 has A2 (0.5 / bg 0.25); OMIM:1 has nothing of it -> noise only
    s = by_id(r, Patient(id="p", observed=(A2,)))
    assert s["OMIM:2"] == pytest.approx(math.log(0.95 * 2 + 0.05))
    assert s["OMIM:1"] == pytest.approx(math.log(0.05))
    # patient more specific than the annotation: A1a vs OMIM:1's A1 -> f(A1) / bg(A1)
    s = by_id(r, Patient(id="p", observed=(A1a,)))
    assert s["OMIM:1"] == pytest.approx(math.log(0.95 * (4 / 6) / (5 / 6) + 0.05))
    assert s["OMIM:2"] == pytest.approx(math.log(0.95 * 1.0 / 0.5 + 0.05))
    # terms add up
    s2 = by_id(r, Patient(id="p", observed=(A2, B)))
    assert s2["OMIM:1"] == pytest.approx(math.log(0.05) + math.log(0.95 * 0.17 / 0.335 + 0.05))


def test_pseudo_counts_shrink_small_fractions(tiny_hpo_knowledge):
    r = ranker(tiny_hpo_knowledge, pseudo_count=2.0)
    # OMIM:2's A1a 1/1 -> (1 + 2 * 0.5) / (1 + 2) = 2/3; OMIM:1's A1 4/6 -> 5/8; bg(A1a) = (0 + 2/3) / 2
    s = by_id(r, Patient(id="p", observed=(A1a,)))
    assert s["OMIM:2"] == pytest.approx(math.log(0.95 * (2 / 3) / (1 / 3) + 0.05))
    bg_a1 = (5 / 8 + 2 / 3) / 2
    assert s["OMIM:1"] == pytest.approx(math.log(0.95 * (5 / 8) / bg_a1 + 0.05))


def test_partial_credit_through_a_common_ancestor(tiny_hpo_knowledge):
    r = ranker(tiny_hpo_knowledge, min_partial_ic=0.0)   # "Abnormality of A" counts as informative here
    s = by_id(r, Patient(id="p", observed=(A2,)))
    # OMIM:1 has A1 under the common ancestor A: w * U(A|D) / bg(A) = 0.1 * (2/3) / (5/6)
    assert s["OMIM:1"] == pytest.approx(math.log(0.95 * 0.1 * 0.8 + 0.05))
    assert s["OMIM:2"] == pytest.approx(math.log(0.95 * 2 + 0.05))


def test_excluded_terms_by_hand(tiny_hpo_knowledge):
    r = ranker(tiny_hpo_knowledge)
    s = by_id(r, Patient(id="p", excluded=(A1,)))
    den = math.log(1 - 0.9 * 5 / 6)
    assert s["OMIM:1"] == pytest.approx(math.log(1 - 0.9 * 4 / 6) - den)
    assert s["OMIM:2"] == pytest.approx(math.log(1 - 0.9 * 1.0) - den)
    # an excluded term that contradicts an observed one (its ancestor) is ignored
    s = by_id(r, Patient(id="p", observed=(A1a,), excluded=(A1,)))
    assert s == pytest.approx(by_id(r, Patient(id="p", observed=(A1a,))))


def test_redundant_and_unknown_terms(tiny_hpo_knowledge):
    r = ranker(tiny_hpo_knowledge)
    base = by_id(r, Patient(id="p", observed=(A1a,)))
    # A1 is implied by A1a; HP:7777777 is not in this release; the alt id is the same term
    assert by_id(r, Patient(id="p", observed=(A1a, A1, "HP:7777777"))) == pytest.approx(base)
    alt = by_id(r, Patient(id="p", observed=("HP:0001099",)))
    assert alt == pytest.approx(by_id(r, Patient(id="p", observed=(A1,))))
    kept = ranker(tiny_hpo_knowledge, drop_redundant=False)
    assert by_id(kept, Patient(id="p", observed=(A1a, A1)))["OMIM:2"] > base["OMIM:2"]


def test_leaving_out_a_publication(tiny_hpo_knowledge):
    r = ranker(tiny_hpo_knowledge)
    p = Patient(id="p", observed=(A1,))
    full = by_id(r, p)
    assert full["OMIM:1"] == pytest.approx(math.log(0.95 * (4 / 6) / (5 / 6) + 0.05))
    assert full["OMIM:2"] == pytest.approx(math.log(0.95 * 1.0 / (5 / 6) + 0.05))
    # without PMID:2 OMIM:1 keeps A1 at 1/2; the background stays that of the full knowledge
    s = by_id(r, p, exclude_references=["PMID:2"])
    assert s["OMIM:1"] == pytest.approx(math.log(0.95 * 0.5 / (5 / 6) + 0.05))
    assert s["OMIM:2"] == pytest.approx(full["OMIM:2"])
    # without both, OMIM:1 has no A1 at all
    s = by_id(r, p, exclude_references=["PMID:1", "PMID:2"])
    assert s["OMIM:1"] == pytest.approx(math.log(0.05))
    # a reference nobody cites changes nothing; the cache does not leak between calls
    assert by_id(r, p, exclude_references=["PMID:999"]) == pytest.approx(full)
    assert by_id(r, p) == pytest.approx(full)


def test_publication_prior_by_hand(tiny_hpo_knowledge):
    # phenotype annotations cite OMIM:1: PMID:1, PMID:2; OMIM:2: PMID:3, PMID:4, PMID:5
    uniform, pub = ranker(tiny_hpo_knowledge), ranker(tiny_hpo_knowledge, prior="publications")
    p = Patient(id="p", observed=(A1,))
    u, s = by_id(uniform, p), by_id(pub, p)
    assert s["OMIM:1"] == pytest.approx(u["OMIM:1"] + math.log(3))
    assert s["OMIM:2"] == pytest.approx(u["OMIM:2"] + math.log(4))
    # a left-out publication is not counted: OMIM:1 keeps PMID:1 only, OMIM:2 is untouched
    u2, s2 = by_id(uniform, p, exclude_references=["PMID:2"]), by_id(pub, p, exclude_references=["PMID:2"])
    assert s2["OMIM:1"] == pytest.approx(u2["OMIM:1"] + math.log(2))
    assert s2["OMIM:2"] == pytest.approx(u2["OMIM:2"] + math.log(4))
    # with nothing observed only the prior speaks: the better-published disease first
    empty = Patient(id="e")
    assert by_id(pub, empty)["OMIM:2"] > by_id(pub, empty)["OMIM:1"]
    assert by_id(uniform, empty)["OMIM:2"] == by_id(uniform, empty)["OMIM:1"]
    with pytest.raises(ValueError, match="prior"):
        ranker(tiny_hpo_knowledge, prior="popularity")


def test_leave_out_any_or_sole(tiny_hpo_knowledge):
    # OMIM:2's A1a row cites PMID:4 and PMID:5
    p = Patient(id="p", observed=(A1a,))
    strict, sole = ranker(tiny_hpo_knowledge), ranker(tiny_hpo_knowledge, leave_out="sole")
    kept = math.log(0.95 * 1.0 / 0.5 + 0.05)
    assert by_id(strict, p, exclude_references=["PMID:4"])["OMIM:2"] == pytest.approx(math.log(0.05))
    assert by_id(sole, p, exclude_references=["PMID:4"])["OMIM:2"] == pytest.approx(kept)
    assert by_id(sole, p, exclude_references=["PMID:4", "PMID:5"])["OMIM:2"] == pytest.approx(math.log(0.05))


def test_own_publication_left_out_in_batch(tiny_hpo_knowledge):
    r = ranker(tiny_hpo_knowledge)
    p = Patient(id="p", observed=(A1, B), pmids=("PMID:2",))
    (s_batch,) = list(r.scores_many([p], leave_out_own_publication=True))
    np.testing.assert_allclose(s_batch, r.score(p, exclude_references=["PMID:2"]))
    (top,) = r.rank_many([p], k=1, leave_out_own_publication=False)
    assert top == r.rank(p, k=1)


def test_sex_restricted_annotations(tiny_hpo_knowledge):
    on = ranker(tiny_hpo_knowledge, use_sex=True)
    male = by_id(on, Patient(id="m", sex="MALE", observed=(A1a,)))
    female = by_id(on, Patient(id="f", sex="FEMALE", observed=(A1a,)))
    assert male["OMIM:2"] == pytest.approx(math.log(0.95 * 2 + 0.05))
    assert female["OMIM:2"] == pytest.approx(math.log(0.05))        # A1a is a male-only annotation
    assert female["OMIM:1"] == male["OMIM:1"]
    assert on.rank(Patient(id="f", sex="FEMALE", observed=(A1a,)), k=1)[0][0] == "OMIM:1"
    assert on.rank(Patient(id="m", sex="MALE", observed=(A1a,)), k=1)[0][0] == "OMIM:2"


def test_onset(tiny_hpo_knowledge):
    r = ranker(tiny_hpo_knowledge, use_onset=True, onset_mismatch=0.25)
    # OMIM:1 is the only onset-annotated disease (congenital): q(congenital) = 1.5/2, q(adult) = 0.5/2
    congenital = by_id(r, Patient(id="p", onset=CONGENITAL))
    adult = by_id(r, Patient(id="p", onset=ADULT))
    assert congenital["OMIM:1"] == pytest.approx(math.log(0.75 / 0.75))
    assert adult["OMIM:1"] == pytest.approx(math.log(0.25 / 0.75))
    assert congenital["OMIM:2"] == adult["OMIM:2"] == 0.0
    # the onset annotation cites PMID:1: left out with it
    assert by_id(r, Patient(id="p", onset=ADULT), exclude_references=["PMID:1"])["OMIM:1"] == 0.0


def test_rank_output_and_gold_rank(tiny_hpo_knowledge):
    r = ranker(tiny_hpo_knowledge)
    p = Patient(id="p", observed=(A2,))
    out = r.rank(p, k=5)
    assert [d for d, _, _ in out] == ["OMIM:2", "OMIM:1"]
    assert out[0][1] == "Disease two" and out[0][2] > out[1][2]
    assert r.rank(p, k=1) == out[:1]
    s = r.score(p)
    assert r.gold_rank(s, ["OMIM:1"]) == 2 and r.gold_rank(s, ["OMIM:1", "OMIM:2"]) == 1
    assert r.gold_rank(s, ["OMIM:999"]) == math.inf
    # ties: candidate order (sorted ids)
    tie = Patient(id="t")
    assert [d for d, _, _ in r.rank(tie)] == ["OMIM:1", "OMIM:2"]
    assert r.gold_rank(r.score(tie), ["OMIM:2"]) == 2


def test_candidate_panel_keeps_the_background(tiny_hpo_knowledge):
    full = ranker(tiny_hpo_knowledge)
    panel = ranker(tiny_hpo_knowledge, candidate_ids=["OMIM:2"])
    assert panel.candidates_ == ["OMIM:2"]
    np.testing.assert_allclose(panel.background_, full.background_)
    p = Patient(id="p", observed=(A2, B), excluded=(A1,))
    assert panel.score(p)[0] == pytest.approx(by_id(full, p)["OMIM:2"])
    assert ranker(tiny_hpo_knowledge, branch=A2).candidates_ == ["OMIM:2"]


def test_bad_parameters(tiny_hpo_knowledge):
    for bad in (dict(noise=0.0), dict(false_negative=1.0), dict(default_frequency=0.0),
                dict(propagation="sum"), dict(leave_out="some")):
        with pytest.raises(ValueError):
            PhenotypeRanker(tiny_hpo_knowledge, **bad).fit()


# ---------------------------------------------------------------- the real HPO

@pytest.fixture(scope="module")
def real(hpo):
    return PhenotypeRanker(hpo).fit()


def test_textbook_marfan_ranks_first(real):
    marfan = Patient(id="textbook", sex="MALE", age="P19Y", observed=(
        "HP:0001083",   # Ectopia lentis
        "HP:0002616",   # Aortic root aneurysm
        "HP:0001166",   # Arachnodactyly
        "HP:0000098",   # Tall stature
        "HP:0000767",   # Pectus excavatum
        "HP:0001065",   # Striae distensae
    ))
    top = real.rank(marfan, k=3)
    assert top[0][:2] == ("OMIM:154700", "Marfan syndrome")
    assert all(d in real.candidates_ for d, _, _ in top)


def test_textbook_dravet_ranks_first(real):
    # the features HPO annotates to Dravet syndrome (it has no "Febrile seizure" annotation in 2025-01-16)
    dravet = Patient(id="textbook", sex="FEMALE", age="P3Y", onset="HP:0003593", observed=(
        "HP:0006813",   # Focal hemiclonic seizure
        "HP:0002123",   # Generalized myoclonic seizure
        "HP:0002133",   # Status epilepticus
        "HP:0020216",   # Visually-induced seizure
        "HP:0001251",   # Ataxia
        "HP:0002376",   # Developmental regression
    ))
    assert real.rank(dravet, k=1)[0][0] == "OMIM:607208"
