"""Synthetic chest X-ray report generator: determinism, label space, prevalence, fit, text-label agreement."""

from __future__ import annotations

import re
import time

import pytest

from synthdx.records import Record
from synthdx.synth.radiology_reports import RadiologyReportGenerator
from synthdx.tasks.radiology import RADIOLOGY_LABELS

NAMES = RADIOLOGY_LABELS.names

# Written independently of the generator: words that mention each finding.
KEYWORDS: dict[str, str] = {
    "Cardiomegaly": r"cardiomegal|enlarg|heart[^.]*\blarge\b",
    "Lung Opacity": r"opacit|opacif|airspace|air space|infiltrat|densit",
    "Atelectasis": r"atelecta|collapse",
    "Pleural Effusion": r"effusion|pleural fluid",
    "Edema": r"edema|congest|\bchf\b|heart failure|vascular prominence|prominence of the [\w ]{0,30}vessels|engorged",
    "Pneumonia": r"pneumonia|pneumonitis",
    "Consolidation": r"consolidat",
    "Pneumothorax": r"pneumothora|\bptx\b",
    "Nodule or Mass": r"nodul|\bmass\b",
    "Granuloma": r"granulom",
    "Emphysema or COPD": r"emphysem|copd|obstructive",
    "Fracture": r"fractur",
    "Support Devices": r"pacemaker|pacer|aicd|\bicd\b|defibrillator|sternotomy|\bwires?\b|\bclips?\b|catheter|\bpicc\b|"
                       r"port-a-cath|\bport\b|\btubes?\b|\blines?\b|\bleads\b|device|\bstents?\b|hardware|valve|cabg|"
                       r"recorder|generator|filter|\btip\b",
}
_KW = {lab: re.compile(kw, re.IGNORECASE) for lab, kw in KEYWORDS.items()}
NEGATION = re.compile(r"\b(no|not|without|negative|w/o|clear of|free of)\b", re.IGNORECASE)


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.;])\s+|\n", text) if s.strip()]


@pytest.fixture(scope="module")
def default_reports() -> list[Record]:
    return RadiologyReportGenerator(seed=7).generate(2000)


def test_deterministic_and_prefix_stable():
    a = RadiologyReportGenerator(seed=3).generate(60)
    b = RadiologyReportGenerator(seed=3).generate(60)
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]
    c = RadiologyReportGenerator(seed=3).generate(20)
    assert [r.to_dict() for r in c] == [r.to_dict() for r in a[:20]]


def test_different_seeds_differ():
    a = RadiologyReportGenerator(seed=1).generate(50)
    b = RadiologyReportGenerator(seed=2).generate(50)
    assert sum(x.text != y.text for x, y in zip(a, b)) > 40


def test_ids_meta_and_format(default_reports):
    r = default_reports[0]
    assert r.id == "synth-rad-000001" and default_reports[1].id == "synth-rad-000002"
    assert r.meta["generator"] == "radiology-reports" and r.meta["seed"] == 7
    for r in default_reports:
        assert re.fullmatch(r"(FINDINGS: [^\n]+\n)?IMPRESSION: [^\n]+", r.text), r.text
    assert any("XXXX" in r.text for r in default_reports)
    assert any(r.text.startswith("IMPRESSION:") for r in default_reports)


def test_labels_in_space_ordered_and_no_finding_exclusive(default_reports):
    for r in default_reports:
        assert r.labels is not None
        assert set(r.labels) <= set(NAMES)
        assert r.labels == [n for n in NAMES if n in r.labels]
        if "No Finding" in r.labels:
            assert r.labels == ["No Finding"]
    # abnormal reports with no labelled finding exist (scoliosis, tortuous aorta, ...)
    assert any(r.labels == [] for r in default_reports)


def test_positive_findings_are_mentioned(default_reports):
    for r in default_reports:
        for lab in r.labels:
            if lab != "No Finding":
                assert _KW[lab].search(r.text), (lab, r.text)


def test_absent_findings_are_only_mentioned_negated(default_reports):
    n_negated = 0
    for r in default_reports:
        sentences = _sentences(r.text)
        for lab, kw in _KW.items():
            if lab in r.labels:
                continue
            for s in sentences:
                if kw.search(s):
                    assert NEGATION.search(s), (lab, s, r.text)
                    n_negated += 1
    assert n_negated > 1000  # negations of absent findings are common


def test_normal_reports_negate_but_have_no_labels(default_reports):
    normal = [r for r in default_reports if r.labels == ["No Finding"]]
    assert normal
    assert any(re.search(r"no (pneumothorax|pleural effusion)", r.text, re.IGNORECASE) for r in normal)


def test_prevalence_override_is_matched():
    gen = RadiologyReportGenerator(seed=11, prevalence={"Pneumothorax": 0.3, "No Finding": 0.2,
                                                         "cardiomegaly": 0.25})
    recs = gen.generate(5000)
    freq = {n: sum(n in r.labels for r in recs) / len(recs) for n in NAMES}
    assert abs(freq["Pneumothorax"] - 0.3) < 0.03
    assert abs(freq["No Finding"] - 0.2) < 0.03
    assert abs(freq["Cardiomegaly"] - 0.25) < 0.03
    exp = gen.expected_prevalence()
    assert exp["Pneumothorax"] == 0.3 and exp["Cardiomegaly"] == 0.25


def test_default_prevalence_is_realistic(default_reports):
    exp = RadiologyReportGenerator().expected_prevalence()
    freq = {n: sum(n in r.labels for r in default_reports) / len(default_reports) for n in NAMES}
    assert 0.3 <= exp["No Finding"] <= 0.45
    for n in ("No Finding", "Cardiomegaly", "Lung Opacity", "Granuloma"):
        assert abs(freq[n] - exp[n]) < 0.035, n


def test_bad_prevalence_rejected():
    with pytest.raises(ValueError):
        RadiologyReportGenerator(prevalence={"Not A Label": 0.1}).generate(1)
    with pytest.raises(ValueError):
        RadiologyReportGenerator(prevalence={"Edema": 1.5}).generate(1)
    with pytest.raises(ValueError):
        RadiologyReportGenerator(prevalence={"No Finding": 0.9, "Edema": 0.2}).generate(1)


def test_fit_learns_prevalence_and_cooccurrence():
    recs = ([Record(f"n{i}", "x", ["No Finding"]) for i in range(500)]
            + [Record(f"c{i}", "x", ["Cardiomegaly", "Pleural Effusion"]) for i in range(300)]
            + [Record(f"g{i}", "x", ["Granuloma"]) for i in range(200)]
            + [Record("u", "x", None)])
    gen = RadiologyReportGenerator(seed=5).fit(recs)
    assert gen.prevalence_["No Finding"] == pytest.approx(0.5)
    assert gen.prevalence_["Cardiomegaly"] == pytest.approx(0.3)
    assert gen.prevalence_["Granuloma"] == pytest.approx(0.2)
    assert gen.prevalence_["Edema"] == 0.0
    i, j = NAMES.index("Cardiomegaly"), NAMES.index("Pleural Effusion")
    assert gen.cooccurrence_[i, j] == pytest.approx(0.3)
    out = gen.generate(3000)
    freq = {n: sum(n in r.labels for r in out) / len(out) for n in NAMES}
    assert abs(freq["Cardiomegaly"] - 0.3) < 0.04
    assert abs(freq["No Finding"] - 0.5) < 0.04
    assert freq["Edema"] == 0.0
    cm = [r for r in out if "Cardiomegaly" in r.labels]
    assert sum("Pleural Effusion" in r.labels for r in cm) / len(cm) > 0.7  # co-occurrence learned
    assert sum("Granuloma" in r.labels for r in cm) / len(cm) < 0.2


def test_speed():
    gen = RadiologyReportGenerator(seed=0)
    t = time.perf_counter()
    gen.generate(1000)
    assert time.perf_counter() - t < 2.0  # < 1 s on a normal machine; slack for loaded CI
