"""Phenopacket loader: phenotype only (genetic data never reaches a patient), the same patients
from a directory, a zip and JSONL, and errors that name the file, member or line and the field."""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import pytest

from synthdx.datasets.phenopackets import load_phenopackets, parse_phenopacket
from synthdx.errors import DataError
from synthdx.patients import Case, Patient

DEV_ZIP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "phenopacket-store" / \
    "phenopacket-store.dev.zip"

# words that only the genetic part of the packets below contains
GENETIC = ["FBN1", "HGNC", "NM_000138", "c.1585C>T", "p.Arg529Ter", "variant", "HETEROZYGOUS", "chr15",
           "48773", "pathogenic", "genomic", "Fibrillin"]


def marfan_packet(pid: str = "PMID_1_proband") -> dict:
    return {
        "id": pid,
        "subject": {"id": "proband", "timeAtLastEncounter": {"age": {"iso8601duration": "P34Y"}},
                    "sex": "FEMALE"},
        "phenotypicFeatures": [
            {"type": {"id": "HP:0001083", "label": "Ectopia lentis"},
             "onset": {"age": {"iso8601duration": "P7Y"}}},
            {"type": {"id": "HP:0002616", "label": "Aortic root aneurysm"},
             "onset": {"ontologyClass": {"id": "HP:0003593", "label": "Infantile onset"}}},
            {"type": {"id": "HP:0001166", "label": "Arachnodactyly"}},
            {"type": {"id": "HP:0000545", "label": "Myopia"}, "excluded": True},
            {"type": {"id": "HP:0002650", "label": "Scoliosis"}, "excluded": True},
        ],
        "interpretations": [{
            "id": "interp-1", "progressStatus": "SOLVED",
            "diagnosis": {
                "disease": {"id": "OMIM:154700", "label": "Marfan syndrome"},
                "genomicInterpretations": [{
                    "subjectOrBiosampleId": "proband", "interpretationStatus": "CAUSATIVE",
                    "variantInterpretation": {
                        "acmgPathogenicityClassification": "PATHOGENIC",
                        "variationDescriptor": {
                            "id": "variant-1", "label": "NM_000138.5:c.1585C>T (p.Arg529Ter)",
                            "geneContext": {"valueId": "HGNC:3603", "symbol": "FBN1"},
                            "expressions": [{"syntax": "hgvs.c", "value": "NM_000138.5:c.1585C>T"},
                                            {"syntax": "hgvs.p", "value": "p.Arg529Ter"}],
                            "vcfRecord": {"genomeAssembly": "hg38", "chrom": "chr15", "pos": "48773000",
                                          "ref": "G", "alt": "A"},
                            "allelicState": {"id": "GENO:0000135", "label": "HETEROZYGOUS"},
                        }}}],
            }}],
        "diseases": [{"term": {"id": "OMIM:154700", "label": "Marfan syndrome"},
                      "onset": {"ontologyClass": {"id": "HP:0011463", "label": "Childhood onset"}}}],
        "metaData": {"created": "2024-01-01T00:00:00Z", "createdBy": "test",
                     "externalReferences": [{"id": "PMID:1", "reference": "https://pubmed.ncbi.nlm.nih.gov/1",
                                             "description": "A pathogenic FBN1 variant in Fibrillin-1 ..."}],
                     "phenopacketSchemaVersion": "2.0"},
    }


def plain_packet(pid: str, hpo: str = "HP:0001250") -> dict:
    return {"id": pid, "subject": {"id": pid, "sex": "MALE"},
            "phenotypicFeatures": [{"type": {"id": hpo, "label": "Seizure"}}],
            "interpretations": [{"id": "i", "progressStatus": "SOLVED",
                                 "diagnosis": {"disease": {"id": "OMIM:607208", "label": "Dravet"}}}],
            "metaData": {"externalReferences": [{"id": "PMID:2"}, {"id": "DOI:10.1/x"}]}}


def write_all(tmp_path: Path, packets: dict[str, dict]) -> dict[str, Path]:
    """The same packets as a directory, a zip (<cohort>/<case>.json) and JSONL."""
    d = tmp_path / "dir"
    for member, pp in packets.items():
        (d / member).parent.mkdir(parents=True, exist_ok=True)
        (d / member).write_text(json.dumps(pp, indent=2))
    z = tmp_path / "cases.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for member, pp in packets.items():
            zf.writestr(member, json.dumps(pp, indent=2))
    j = tmp_path / "cases.jsonl"
    j.write_text("".join(json.dumps(packets[m]) + "\n" for m in sorted(packets)))
    return {"dir": d, "zip": z, "jsonl": j}


def test_phenotype_fields_and_gold():
    case = parse_phenopacket(marfan_packet())
    p = case.patient
    assert p.id == "PMID_1_proband"
    assert p.sex == "FEMALE" and p.age == "P34Y"
    assert p.observed == ("HP:0001083", "HP:0002616", "HP:0001166")
    assert p.excluded == ("HP:0000545", "HP:0002650")
    assert p.onset == "HP:0011463" and p.onset_age is None   # the disease onset wins over feature onsets
    assert p.pmids == ("PMID:1",)
    assert p.term_labels["HP:0001083"] == "Ectopia lentis"
    assert case.gold == ("OMIM:154700",) and case.gold_labels == ("Marfan syndrome",)


def test_onset_falls_back_to_the_earliest_feature_onset():
    pp = marfan_packet()
    del pp["diseases"][0]["onset"]
    p = parse_phenopacket(pp).patient
    assert p.onset == "HP:0003593" and p.onset_age is None  # infantile (before the P7Y feature)
    pp["phenotypicFeatures"][1].pop("onset")
    p = parse_phenopacket(pp).patient
    assert p.onset is None and p.onset_age == "P7Y"


def test_genetic_data_never_reaches_the_patient_or_its_text(tmp_path):
    from synthdx.knowledge.hpo import HPOKnowledge
    from synthdx.tasks.rare_ddx_render import case_to_record, render_summary
    from tiny_hpo import write_tiny_hpo

    # the zip's cohort folder is named after the gene, as in phenopacket-store
    paths = write_all(tmp_path, {"FBN1/PMID_1_proband.json": marfan_packet()})
    folder = write_tiny_hpo(tmp_path / "hpo")
    tiny = HPOKnowledge.from_files(folder / "hp.obo", folder / "phenotype.hpoa")
    for kind, path in paths.items():
        (case,) = load_phenopackets(path)
        patient_json = json.dumps(case.patient.to_dict())
        text = render_summary(case.patient, tiny)
        record = case_to_record(case, tiny)
        model_side = patient_json + text + record.text + json.dumps(record.meta)
        for word in GENETIC:
            assert word.lower() not in model_side.lower(), (kind, word)
        assert "Ectopia lentis".lower() in text.lower()  # label from the file (not in the tiny ontology)
    # a Patient has no place for genetic data at all
    assert set(Patient.__dataclass_fields__) == {"id", "sex", "age", "observed", "excluded", "onset",
                                                 "onset_age", "pmids", "term_labels"}


def test_directory_zip_and_jsonl_give_the_same_cases(tmp_path):
    packets = {"FBN1/PMID_1_proband.json": marfan_packet(),
               "SCN1A/PMID_2_a.json": plain_packet("PMID_2_a"),
               "SCN1A/PMID_2_b.json": plain_packet("PMID_2_b", "HP:0001263")}
    paths = write_all(tmp_path, packets)
    loaded = {k: load_phenopackets(p) for k, p in paths.items()}
    as_dicts = {k: [(c.patient.to_dict(), c.gold, c.gold_labels) for c in v] for k, v in loaded.items()}
    assert as_dicts["dir"] == as_dicts["zip"] == as_dicts["jsonl"]
    assert [c.id for c in loaded["zip"]] == ["PMID_1_proband", "PMID_2_a", "PMID_2_b"]
    assert loaded["zip"][1].patient.pmids == ("PMID:2",)   # only PMID references
    assert "member SCN1A/PMID_2_a.json" in loaded["zip"][1].source
    assert loaded["jsonl"][2].source.endswith("line 3")


def test_unlabelled_cases_have_no_gold(tmp_path):
    pp = plain_packet("x")
    del pp["interpretations"]
    case = parse_phenopacket(pp)
    assert case.gold is None and case.gold_labels == ()
    pp["interpretations"] = [{"id": "i", "progressStatus": "IN_PROGRESS"}]
    assert parse_phenopacket(pp).gold is None
    # round trip through a dict keeps None apart from "labelled with nothing"
    assert Case.from_dict(case.to_dict()).gold is None


def test_malformed_json_names_the_zip_member(tmp_path):
    z = tmp_path / "bad.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("GENE/ok.json", json.dumps(plain_packet("ok")))
        zf.writestr("GENE/broken.json", '{"id": "broken", "subject": {')
    with pytest.raises(DataError, match=r"bad\.zip \(member GENE/broken\.json\).*not valid JSON"):
        load_phenopackets(z)


@pytest.mark.parametrize("mutate,field", [
    (lambda pp: pp["phenotypicFeatures"][1]["type"].update(id="HP:12"), "phenotypicFeatures[1].type.id"),
    (lambda pp: pp["phenotypicFeatures"][2].pop("type"), "phenotypicFeatures[2].type"),
    (lambda pp: pp["phenotypicFeatures"][0].update(excluded="yes"), "phenotypicFeatures[0].excluded"),
    (lambda pp: pp["subject"].update(sex="F"), "subject.sex"),
    (lambda pp: pp.update(phenotypicFeatures={"a": 1}), "phenotypicFeatures"),
    (lambda pp: pp["interpretations"][0]["diagnosis"]["disease"].pop("id"),
     "interpretations[0].diagnosis.disease.id"),
    (lambda pp: pp.pop("id"), "id"),
])
def test_malformed_fields_are_named(tmp_path, mutate, field):
    pp = marfan_packet()
    mutate(pp)
    z = tmp_path / "c.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("COHORT/case7.json", json.dumps(pp))
    with pytest.raises(DataError) as e:
        load_phenopackets(z)
    msg = str(e.value)
    assert "member COHORT/case7.json" in msg and f"field '{field}'" in msg
    assert e.value.field == field


def test_jsonl_errors_name_the_line(tmp_path):
    j = tmp_path / "c.jsonl"
    bad = copy.deepcopy(plain_packet("b"))
    bad["phenotypicFeatures"][0]["type"]["id"] = "seizure"
    j.write_text(json.dumps(plain_packet("a")) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"c\.jsonl, line 2.*phenotypicFeatures\[0\]\.type\.id"):
        load_phenopackets(j)
    j.write_text(json.dumps(plain_packet("a")) + "\n{oops\n")
    with pytest.raises(DataError, match=r"line 2"):
        load_phenopackets(j)


def test_unsupported_inputs(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_phenopackets(tmp_path / "missing.zip")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="expected a directory"):
        load_phenopackets(tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no \\*\\.json"):
        load_phenopackets(tmp_path / "empty")


@pytest.mark.skipif(not DEV_ZIP.exists(), reason="phenopacket-store dev zip not in ../shared/data")
def test_dev_zip_loads_without_genetic_fields():
    cases = load_phenopackets(DEV_ZIP)
    assert len(cases) == 6878
    assert all(c.gold for c in cases)
    assert sum(len(c.patient.pmids) == 1 for c in cases) == len(cases)
    with zipfile.ZipFile(DEV_ZIP) as zf:
        cohorts = {n.split("/")[0] for n in zf.namelist()}
    # the cohort (gene) folder name is kept out of every patient field except the opaque id
    for c in cases[::50]:
        d = c.patient.to_dict()
        d.pop("id")
        blob = json.dumps(d)
        cohort = c.source.split("(member ")[1].split("/")[0]
        assert cohort in cohorts and f'"{cohort}"' not in blob
