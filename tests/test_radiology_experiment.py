"""The radiology experiment end to end on a tiny model: duplicate-aware split, validation-tuned
thresholds, paired tests, calibration, fidelity, error examples, provenance; and the contamination
guard refusing a test part that copies training records."""

from __future__ import annotations

import json

import pytest

from synthdx.config import ExperimentConfig
from synthdx.evaluate.contamination import ContaminationError
from synthdx.experiments.radiology import run_radiology
from synthdx.io import write_jsonl
from synthdx.synth.radiology_reports import RadiologyReportGenerator


@pytest.fixture()
def reports(tmp_path):
    """'Real' reports with curated labels: generated with another seed than the synthetic ones."""
    records = RadiologyReportGenerator(seed=123).generate(90)
    path = tmp_path / "reports.jsonl"
    write_jsonl(path, ({"id": f"real-{i}", "text": r.text, "labels": r.labels} for i, r in enumerate(records)))
    return path, records


def _config(path, model_dir, **data) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "data": {"path": str(path), "loader": "jsonl", "test_fraction": 0.3, "validation_fraction": 0.25, **data},
        "synthetic": {"n": 12, "seed": 0},
        "train": {"model": str(model_dir), "method": "full", "max_steps": 2, "batch_size": 4, "save_every": 0},
        "eval": {"zero_shot": False, "free_generation_sample": 0, "n_resamples": 100, "error_examples": 3},
    })


def test_radiology_experiment_reports_the_evidence(tmp_path, reports, tiny_model_dir):
    path, records = reports
    out = tmp_path / "run"
    result = run_radiology(_config(path, tiny_model_dir), out)
    systems = result["systems"]
    assert {"rule teacher", "student (fine-tuned)", "student, thresholds tuned on validation"} <= set(systems)
    assert any(name.startswith("TF-IDF") and name.endswith("tuned on validation") for name in systems)
    metrics = json.loads((out / "metrics.json").read_text())
    paired = metrics["evidence"]["paired"]
    assert paired[0]["system_a"] == "student (fine-tuned)" and paired[0]["system_b"] == "rule teacher"
    assert 0 < paired[0]["micro_f1"]["p_value"] <= 1
    assert len(paired[0]["per_label"]) == 14
    calibration = metrics["evidence"]["calibration"]
    assert set(calibration) >= {"student (fine-tuned)"} and 0 <= calibration["student (fine-tuned)"]["ece"] <= 1
    assert metrics["evidence"]["fidelity"]["two_sample"]
    page = (out / "report.html").read_text()
    for heading in ("Paired comparisons", "Calibration and thresholds", "Fidelity", "Error examples"):
        assert heading in page
    assert page.count('src="data:image/png;base64,') >= 1 and (out / "plots" / "reliability.png").exists()
    # include_text is off by default: no report text appears in the page
    split = json.loads((out / "data" / "split.json").read_text())
    test_ids = set(split["test"])
    assert not any(r.text in page for i, r in enumerate(records) if f"real-{i}" in test_ids)
    # validation and test never share a duplicate group with training
    assert not test_ids & set(split["pool"]) and not set(split["validation"]) & set(split["pool"])
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["data_sources"] and prov["seeds"]["train"] == 0 and "torch" in prov["libraries"]


def test_contamination_guard_refuses_a_copied_test_part(tmp_path, reports, tiny_model_dir, monkeypatch):
    """A synthetic generator that copies real reports: the test part would be scored on its own
    training data, so the run stops before training, naming ids."""
    path, records = reports
    from synthdx.synth import radiology_reports

    monkeypatch.setattr(radiology_reports.RadiologyReportGenerator, "generate",
                        lambda self, n: [r for r in records[:n]])
    with pytest.raises(ContaminationError, match=r"appear in the training data.*real-") as e:
        run_radiology(_config(path, tiny_model_dir, near_duplicate=0.95), tmp_path / "run")
    assert not (tmp_path / "run" / "model").exists()
    assert all(r.text not in str(e.value) for r in records)
