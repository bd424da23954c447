"""Learning curves: point statistics against a hand computation, the equivalent number of real
examples, nested training sets, and a tiny curve run end to end (TF-IDF learner)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthdx.config import CurveSource
from synthdx.evaluate.bootstrap import bootstrap_ci, micro_f1, resample_indices
from synthdx.evaluate.curve import equivalent_n, point_scores
from synthdx.experiments.curve import training_set
from synthdx.records import Record


def _random_pair(seed: int, n: int = 60, L: int = 4):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, size=(n, L)), rng.integers(0, 2, size=(n, L))


def test_one_seed_point_is_the_plain_bootstrap():
    t, p = _random_pair(0)
    got = point_scores(t, [p], n_resamples=300, seed=7)["micro_f1"]
    point, lo, hi = bootstrap_ci(micro_f1, t, p, n_resamples=300, seed=7)
    assert got["mean"] == pytest.approx(point)
    assert (got["lo"], got["hi"]) == pytest.approx((lo, hi))
    assert got["sd"] == 0.0


def test_band_is_the_bootstrap_of_the_seed_mean():
    t, p1 = _random_pair(1)
    _, p2 = _random_pair(2)
    got = point_scores(t, [p1, p2], n_resamples=200, seed=3)["micro_f1"]
    means = [(micro_f1(t[idx], p1[idx]) + micro_f1(t[idx], p2[idx])) / 2
             for block in resample_indices(len(t), 200, 3) for idx in block]
    lo, hi = np.percentile(means, [2.5, 97.5])
    assert got["mean"] == pytest.approx((micro_f1(t, p1) + micro_f1(t, p2)) / 2)
    assert (got["lo"], got["hi"]) == pytest.approx((lo, hi))
    assert got["sd"] == pytest.approx(np.std([micro_f1(t, p1), micro_f1(t, p2)], ddof=1))


def test_equivalent_real_examples_by_hand():
    real = [(50, 0.5), (100, 0.6), (200, 0.7)]
    # halfway between 100 and 200 in log n: sqrt(100 * 200)
    assert equivalent_n(real, 0.65)["n"] == pytest.approx(math.sqrt(20000))
    assert equivalent_n(real, 0.5)["n"] == pytest.approx(50)
    assert equivalent_n(real, 0.4)["n"] is None and "below" in equivalent_n(real, 0.4)["note"]
    assert equivalent_n(real, 0.8)["n"] is None and "above" in equivalent_n(real, 0.8)["note"]
    # a dip: the first crossing from below counts
    assert equivalent_n([(50, 0.5), (100, 0.7), (200, 0.6)], 0.65)["n"] == pytest.approx(50 * 2 ** 0.75)


def _pool(prefix: str, n: int) -> list[Record]:
    return [Record(f"{prefix}{i}", f"text {prefix} {i}", []) for i in range(n)]


def test_training_sets_are_nested_and_seeded():
    pools = {"real": _pool("r", 50), "synthetic": _pool("s", 30)}
    real = CurveSource(name="real", kind="real")
    small, large = training_set(real, pools, 10, 0), training_set(real, pools, 20, 0)
    assert [r.id for r in large[:10]] == [r.id for r in small]
    assert [r.id for r in training_set(real, pools, 10, 1)] != [r.id for r in small]
    assert training_set(real, pools, 51, 0) is None
    mix = CurveSource(name="mix", kind="real", base="synthetic", base_n=30)
    m10, m20 = training_set(mix, pools, 10, 0), training_set(mix, pools, 20, 0)
    assert len(m10) == 40 and {r.id for r in m10[:30]} == {r.id for r in pools["synthetic"]}
    assert [r.id for r in m20[:40]] == [r.id for r in m10]
    assert training_set(CurveSource(name="m", kind="real", base="synthetic", base_n=31), pools, 5, 0) is None
    # teacher labels on the same pool: the same reports at each N and seed, only the labels differ
    pools["teacher"] = [Record(r.id, r.text, ["x"]) for r in pools["real"]]
    teacher = training_set(CurveSource(name="t", kind="teacher"), pools, 10, 0)
    assert [r.id for r in teacher] == [r.id for r in small] and teacher[0].labels == ["x"]


def test_a_mix_needs_base_and_base_n():
    with pytest.raises(ValueError, match="base and base_n"):
        CurveSource(name="m", kind="real", base="synthetic")


def test_tiny_radiology_curve_end_to_end_and_resume(tmp_path):
    import json

    from synthdx.config import CurveConfig
    from synthdx.experiments.curve import run_curve
    from synthdx.io import write_jsonl
    from synthdx.synth.radiology_reports import RadiologyReportGenerator

    real = RadiologyReportGenerator(seed=321).generate(120)
    path = tmp_path / "reports.jsonl"
    write_jsonl(path, ({"id": f"real-{i}", "text": r.text, "labels": r.labels} for i, r in enumerate(real)))
    cfg = CurveConfig.model_validate({
        "experiment": "curve", "task": "radiology",
        "data": {"path": str(path), "loader": "jsonl", "test_fraction": 0.3},
        "sources": [{"name": "real", "kind": "real"}, {"name": "teacher", "kind": "teacher"},
                    {"name": "synthetic", "kind": "synthetic"},
                    {"name": "10 synthetic + real", "kind": "real", "base": "synthetic", "base_n": 10}],
        "sizes": [10, 20, 100], "seeds": [0, 1],
        "learners": [{"kind": "tfidf"}], "eval": {"n_resamples": 100}})
    out = tmp_path / "curve"
    result = run_curve(cfg, out)
    curves = result["curves"]["TF-IDF + LR"]
    assert set(curves) == {"real", "teacher", "synthetic", "10 synthetic + real"}
    # 100 is more than the real pool holds (83): skipped and said; the synthetic pool is generated to size
    assert [p["n"] for p in curves["real"]] == [10, 20] and [p["n"] for p in curves["synthetic"]] == [10, 20, 100]
    assert any("real / n=100" in s for s in result["skipped_points"])
    point = curves["synthetic"][1]
    assert point["seeds"] == 2 and point["micro_f1"]["lo"] <= point["micro_f1"]["mean"] <= point["micro_f1"]["hi"]
    assert "equivalent_real_n" in point["micro_f1"] and "equivalent_real_n" not in curves["real"][0]["micro_f1"]
    assert "rule teacher" in result["references"]
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2  # micro and macro plot of the one learner
    # a rerun reuses every finished point
    stamps = {p: p.stat().st_mtime_ns for p in (out / "points").rglob("*.json")}
    assert len(stamps) == 3 * 2 * 2 + 3 * 2
    again = run_curve(cfg, out)
    assert {p: p.stat().st_mtime_ns for p in (out / "points").rglob("*.json")} == stamps
    assert json.loads((out / "metrics.json").read_text())["systems"]["curves"] == json.loads(
        json.dumps(again["curves"]))


def test_learner_sizes_and_sources_must_be_in_the_curve():
    from pydantic import ValidationError

    from synthdx.config import CurveConfig

    base = {"experiment": "curve", "task": "radiology", "data": {"path": "x"}, "sizes": [10, 20],
            "sources": [{"name": "real", "kind": "real"}]}
    with pytest.raises(ValidationError, match=r"sizes \[30\]"):
        CurveConfig.model_validate({**base, "learners": [{"kind": "tfidf", "sizes": [30]}]})
    with pytest.raises(ValidationError, match="unknown sources: nope"):
        CurveConfig.model_validate({**base, "learners": [{"kind": "tfidf", "sources": ["nope"]}]})
    with pytest.raises(ValidationError, match="distinct names"):
        CurveConfig.model_validate({**base, "learners": [{"kind": "tfidf"}, {"kind": "tfidf"}]})


def test_mtsamples_curve_runs_on_real_labels_and_refuses_other_sources(tmp_path):
    import csv

    from synthdx.config import CurveConfig
    from synthdx.experiments.curve import run_curve

    words = {"Cardiology": "heart murmur chest pain echocardiogram valve",
             "Orthopedic": "knee fracture cast bone joint",
             "Neurology": "seizure headache mri brain nerve"}
    path = tmp_path / "mts.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "description", "medical_specialty", "sample_name", "transcription", "keywords"])
        k = 0
        for spec, vocab in words.items():
            for i in range(16):
                text = f"Patient {k} seen. " + " ".join(vocab.split()[j % 5] for j in range(i, i + 7)) + f" visit {k * 7}."
                w.writerow([k, "d", spec, "s", text, ""])
                w.writerow([k + 1000, "d", "Surgery", "s", text, ""])  # a document type: not a label
                k += 1
    base = {"experiment": "curve", "task": "mtsamples",
            "data": {"path": str(path), "loader": "mtsamples", "test_fraction": 0.3, "min_label_count": 5},
            "sizes": [10, 20], "seeds": [0], "eval": {"n_resamples": 100},
            "learners": [{"kind": "tfidf"}, {"kind": "tfidf", "name": "TF-IDF, C=1", "options": {"C": 1.0}}]}
    result = run_curve(CurveConfig.model_validate({**base, "sources": [{"name": "real", "kind": "real"}]}),
                       tmp_path / "run")
    assert result["labels"] == sorted(words) and [p["n"] for p in result["curves"]["TF-IDF + LR"]["real"]] == [10, 20]
    assert "Learners compared: real" in (tmp_path / "run" / "report.md").read_text()  # one plot, every learner
    with pytest.raises(ValueError, match="sources of kind teacher"):
        run_curve(CurveConfig.model_validate({**base, "sources": [{"name": "t", "kind": "teacher"}]}),
                  tmp_path / "run2")


def test_llm_learner_trains_predicts_and_cleans_up(tmp_path, tiny_model_dir):
    from synthdx.config import CurveLearner
    from synthdx.experiments.learners import Learner
    from synthdx.synth.radiology_reports import RadiologyReportGenerator
    from synthdx.tasks.multilabel import radiology_task

    task = radiology_task()
    spec = CurveLearner(kind="llm", train={"model": str(tiny_model_dir), "method": "full", "max_steps": 2,
                                           "batch_size": 4, "save_every": 0})
    records = RadiologyReportGenerator(seed=1).generate(8)
    work = tmp_path / "point"
    pred, scores = Learner(spec, task.label_space, task).fit_predict(records, [r.text for r in records[:3]], work, 0)
    assert pred.shape == (3, len(task.label_space)) and scores.shape == pred.shape
    assert ((scores >= 0) & (scores <= 1)).all() and not work.exists()  # the point's model is deleted


def test_report_only_trains_nothing_and_lists_what_is_missing(tmp_path):
    from typer.testing import CliRunner

    from synthdx.cli import app
    from synthdx.io import write_jsonl
    from synthdx.synth.radiology_reports import RadiologyReportGenerator

    real = RadiologyReportGenerator(seed=7).generate(60)
    data = tmp_path / "reports.jsonl"
    write_jsonl(data, ({"id": f"r{i}", "text": r.text, "labels": r.labels} for i, r in enumerate(real)))
    config = tmp_path / "curve.yaml"
    config.write_text(f"""experiment: curve
task: radiology
data: {{path: {data}, loader: jsonl, test_fraction: 0.3}}
sources: [{{name: real, kind: real}}]
sizes: [10]
seeds: [0]
learners: [{{kind: tfidf}}]
eval: {{n_resamples: 100}}
""", encoding="utf-8")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["curve", str(config), "--out", str(out), "--report-only"])
    assert result.exit_code == 0, result.output
    assert not (out / "points").exists() or not list((out / "points").rglob("*.json"))
    assert "not run (report only)" in (out / "report.md").read_text()
    result = CliRunner().invoke(app, ["curve", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(list((out / "points").rglob("*.json"))) == 1
