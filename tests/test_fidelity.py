"""Synthetic-vs-real fidelity: every number checked by hand on tiny sets, and the two-sample test on
generators a model can / cannot tell apart."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest

from synthdx.evaluate.fidelity import (
    FIDELITY_HEADER,
    cue_patterns,
    fidelity_report,
    fidelity_table,
    sentence_cue_rates,
    split_sentences,
    two_sample_test,
    words,
)
from synthdx.records import LabelSpace, Record

_IDS = itertools.count()


def _r(text, labels=None):
    return Record(id=str(next(_IDS)), text=text, labels=labels)


def test_prevalence_by_hand():
    syn = [_r("a", ["A"]), _r("b", ["A", "B"]), _r("c", []), _r("d", None)]  # 3 labelled: A 2/3, B 1/3
    real = [_r("e", ["B"]), _r("f", ["B"]), _r("g", ["A"]), _r("h", ["C"])]  # A 1/4, B 1/2, C 1/4
    rep = fidelity_report(syn, real, n_permutations=0)
    p = rep["prevalence"]
    assert p["names"] == ["A", "B", "C"]  # every label seen, sorted
    assert p["n_labelled"] == {"synthetic": 3, "real": 4}
    assert p["synthetic"] == pytest.approx({"A": 2 / 3, "B": 1 / 3, "C": 0.0})
    assert p["real"] == pytest.approx({"A": 0.25, "B": 0.5, "C": 0.25})
    assert p["abs_diff"] == pytest.approx({"A": 5 / 12, "B": 1 / 6, "C": 0.25})
    assert p["mean_abs_diff"] == pytest.approx((5 / 12 + 1 / 6 + 0.25) / 3)
    # names given (a LabelSpace works too): only those, in that order
    rep = fidelity_report(syn, real, names=LabelSpace(["C", "A"]), n_permutations=0)
    assert rep["prevalence"]["names"] == ["C", "A"]
    assert rep["prevalence"]["synthetic"] == pytest.approx({"C": 0.0, "A": 2 / 3})


def test_prevalence_skipped_for_an_unlabelled_set():
    syn = [_r("no labels here"), _r("nor here")]
    real = [_r("x", ["A"]), _r("y", [])]
    p = fidelity_report(syn, real, n_permutations=0)["prevalence"]
    assert p["synthetic"] is None and p["abs_diff"] is None and p["mean_abs_diff"] is None
    assert p["real"] == {"A": 0.5}
    assert "skipped" in p["note"]


def test_length_by_hand():
    syn = [_r("one"), _r("one two"), _r("one two three"), _r("one  two\nthree four")]  # 1, 2, 3, 4 words
    real = [_r("a b c d e")] * 3
    L = fidelity_report(syn, real, n_permutations=0)["length_words"]
    assert L["synthetic"] == pytest.approx({"mean": 2.5, "sd": math.sqrt(5 / 3), "median": 2.5,
                                            "p10": 1.3, "p90": 3.7})
    assert L["real"] == pytest.approx({"mean": 5.0, "sd": 0.0, "median": 5.0, "p10": 5.0, "p90": 5.0})


def test_vocabulary_by_hand():
    assert words("Heart enlarged, lungs clear 2x.") == ["heart", "enlarged", "lungs", "clear", "x"]
    syn = [_r("Heart normal. Lungs clear.")]  # {heart, normal, lungs, clear}, 4 occurrences
    real = [_r("Heart enlarged, lungs CLEAR 2x.")]  # {heart, enlarged, lungs, clear, x}, 5 occurrences
    v = fidelity_report(syn, real, n_permutations=0)["vocabulary"]
    assert (v["synthetic_size"], v["real_size"], v["shared"]) == (4, 5, 3)
    assert v["jaccard"] == pytest.approx(3 / 6)
    assert v["synthetic_tokens_in_real_vocab"] == pytest.approx(3 / 4)
    assert v["real_tokens_in_synthetic_vocab"] == pytest.approx(3 / 5)


def test_over_represented_words():
    syn = [_r("Cardiomegaly. Cardiomegaly with effusion. The heart is enlarged.")] * 20
    real = [_r("The heart is normal. The lungs are clear. Small effusion.")] * 20
    v = fidelity_report(syn, real, n_permutations=0)["vocabulary"]
    top_syn = [w["word"] for w in v["over_represented_in_synthetic"]]
    top_real = [w["word"] for w in v["over_represented_in_real"]]
    # words only one set uses come first; shared words follow by their (per-token) rate difference
    assert top_syn[0] == "cardiomegaly" and set(top_syn[:3]) == {"cardiomegaly", "with", "enlarged"}
    assert {"normal", "lungs", "are", "clear", "small"} <= set(top_real)
    first = v["over_represented_in_synthetic"][0]
    assert first["synthetic_count"] == 40 and first["real_count"] == 0 and first["z"] > 0
    assert len(top_syn) <= 10 and len(top_real) <= 10
    assert all(w["z"] > 0 for w in v["over_represented_in_synthetic"])
    assert all(w["z"] < 0 for w in v["over_represented_in_real"])
    # a word with the same share of word occurrences in both sets is in neither list
    syn = [_r("heart big heart big")] * 5
    real = [_r("heart small")] * 5
    v = fidelity_report(syn, real, n_permutations=0)["vocabulary"]
    assert [w["word"] for w in v["over_represented_in_synthetic"]] == ["big"]
    assert [w["word"] for w in v["over_represented_in_real"]] == ["small"]


def test_sentences_and_negation_rate():
    assert split_sentences("No pneumothorax. Heart is normal.") == ["No pneumothorax.", "Heart is normal."]
    assert split_sentences("FINDINGS: clear lungs\nIMPRESSION: normal. ...") == [
        "FINDINGS: clear lungs", "IMPRESSION: normal."]
    c = sentence_cue_rates(["No pneumothorax. Heart is normal."])
    assert (c["n_sentences"], c["negation_sentences"], c["negation_rate"], c["hedge_rate"]) == (2, 1, 0.5, 0.0)
    assert c["top_negation_cues"] == [["no", 1]]
    # a cue counts at word boundaries only: "Notable", "knot", "Norway", "possibles" are no cues
    c = sentence_cue_rates(["Notable knot in Norway. Possibles ignored."])
    assert c["negation_rate"] == 0.0 and c["hedge_rate"] == 0.0


@pytest.mark.parametrize("sentence,neg,hedge", [
    ("Lungs are clear without effusion.", 1, 0),
    ("There is no evidence of pneumothorax.", 1, 0),
    ("The heart isn't enlarged.", 1, 0),  # "n't" after "is", as spaCy splits it
    ("Pneumothorax: none.", 1, 0),
    ("Negative for acute disease.", 1, 0),
    ("Possible left lower lobe pneumonia.", 0, 1),
    ("Findings suspicious for malignancy.", 0, 1),
    ("Cannot rule out early pneumonia.", 0, 1),
    ("Mild cardiomegaly.", 0, 0),
])
def test_medspacy_cues(sentence, neg, hedge):
    c = sentence_cue_rates([sentence])
    assert (c["negation_sentences"], c["hedge_sentences"]) == (neg, hedge)


def test_cues_come_from_medspacy_rules():
    pats = cue_patterns()
    assert set(pats) == {"negation", "hedge"}
    # a TERMINATE rule ("but", "secondary") is no negation cue
    assert not pats["negation"].search("small but real") and not pats["negation"].search("secondary to")


TEMPLATES_A = ["The heart is {s} in size. The lungs are {c}. No {f} is seen.",
               "Heart size is {s}. Lungs {c}. There is no {f}."]
TEMPLATES_B = ["{F} noted in the {side} {lobe} lobe, likely {d}.",
               "Interval development of {side} {lobe} lobe {F}; recommend follow-up for {d}."]


def _gen_a(rng):
    return rng.choice(TEMPLATES_A).format(s=rng.choice(["normal", "upper normal", "stable"]),
                                          c=rng.choice(["clear", "well expanded", "without infiltrate"]),
                                          f=rng.choice(["effusion", "pneumothorax", "consolidation"]))


def _gen_b(rng):
    return rng.choice(TEMPLATES_B).format(F=rng.choice(["Opacity", "Consolidation", "Nodular density"]),
                                          side=rng.choice(["right", "left"]),
                                          lobe=rng.choice(["upper", "lower", "middle"]),
                                          d=rng.choice(["pneumonia", "atelectasis", "neoplasm"]))


def test_two_sample_auc_near_one_for_different_generators():
    rng = random.Random(0)
    syn = [_r(_gen_a(rng)) for _ in range(40)]
    real = [_r(_gen_b(rng)) for _ in range(60)]
    t = fidelity_report(syn, real, n_permutations=20)["two_sample"]
    assert not t["skipped"] and t["n_per_side"] == 40 and len(t["fold_aucs"]) == 5
    assert t["auc"] > 0.95
    assert t["auc_ci"][0] <= t["auc"] <= t["auc_ci"][1] <= 1.0
    assert t["p_value"] == pytest.approx(1 / 21)  # no permutation reaches it: the smallest p


def test_two_sample_auc_near_half_for_two_halves_of_one_set():
    rng = random.Random(1)
    pool = [_gen_a(rng) if rng.random() < 0.5 else _gen_b(rng) for _ in range(200)]
    rng.shuffle(pool)
    t = two_sample_test(pool[:100], pool[100:], seed=0, n_permutations=20)
    assert abs(t["auc"] - 0.5) < 0.15
    assert t["p_value"] > 0.05
    assert t["auc_ci"][0] < 0.5 < t["auc_ci"][1]


def test_two_sample_is_reproducible_and_seeded():
    rng = random.Random(2)
    a = [_gen_a(rng) for _ in range(30)]
    b = [_gen_a(rng) for _ in range(30)]
    assert two_sample_test(a, b, seed=3, n_permutations=5) == two_sample_test(a, b, seed=3, n_permutations=5)


def test_two_sample_skipped_for_tiny_sets():
    syn = [_r(f"report {i} heart normal") for i in range(9)]
    real = [_r(f"report {i} lungs clear") for i in range(50)]
    rep = fidelity_report(syn, real)
    assert rep["two_sample"]["skipped"] and "at least 10" in rep["two_sample"]["note"]
    assert any("two-sample" in row[0] and "skipped" in row[1] for row in fidelity_table(rep))
    t = two_sample_test(["", ""] * 10, ["...", "!"] * 10)
    assert t["skipped"] and "no words" in t["note"]


def test_bad_inputs():
    with pytest.raises(ValueError, match="synthetic record set is empty"):
        fidelity_report([], [_r("x")])
    with pytest.raises(ValueError, match="real record set is empty"):
        fidelity_report([_r("x")], [])
    with pytest.raises(TypeError):
        fidelity_report(["a text"], [_r("x")])
    with pytest.raises(ValueError, match="n_permutations"):
        two_sample_test(["a"] * 20, ["b"] * 20, n_permutations=-1)


def test_report_is_json_and_renders_as_a_table():
    rng = random.Random(4)
    syn = [_r(_gen_a(rng), ["Normal"]) for _ in range(15)]
    real = [_r(_gen_b(rng), ["Pneumonia"] if rng.random() < 0.5 else ["Normal"]) for _ in range(15)]
    rep = fidelity_report(syn, real, n_permutations=5)
    json.dumps(rep, allow_nan=False)
    assert json.loads(json.dumps(rep)) == rep
    rows = fidelity_table(rep)
    assert FIDELITY_HEADER == ["measure", "synthetic", "real"]
    assert all(len(row) == 3 and all(isinstance(c, str) for c in row) for row in rows)
    table = {row[0]: row[1:] for row in rows}
    assert table["records"] == ["15", "15"]
    assert table["prevalence: Normal (|diff| " + f"{abs(1 - rep['prevalence']['real']['Normal']):.3f})"][0] == "1.000"
    assert table["sentences with a negation cue"][0] == f"{rep['cues']['synthetic']['negation_rate']:.3f}"
    auc_row = next(r for r in rows if r[0].startswith("two-sample AUC"))
    assert auc_row[1].startswith(f"{rep['two_sample']['auc']:.3f} [")
    assert any(r[0].startswith("two-sample permutation p") for r in rows)
