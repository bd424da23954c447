import json

import numpy as np

from synthdx.evaluate import evaluate_system, format_table, multilabel_scores, write_report

NAMES = ["Cardiomegaly", "Pleural Effusion", "Edema"]


def _systems():
    rng = np.random.default_rng(0)
    t = (rng.random((80, 3)) < 0.3).astype(int)
    p1 = t.copy()
    p1[:10] = 1 - p1[:10]
    p2 = (rng.random((80, 3)) < 0.3).astype(int)
    a = evaluate_system(t, p1, NAMES, n_resamples=200)
    a.update(invalid_outputs=3, notes="fine-tuned <small> | model")
    b = evaluate_system(t, p2, NAMES, n_resamples=200)
    c = multilabel_scores(t, p2, NAMES)  # no intervals
    return {"student-135m": a, "tfidf": b, "random": c}


def test_write_report_files(tmp_path):
    systems = _systems()
    extra = {"timings_s": {"train": 12.5, "eval": np.float64(0.25)}, "n_test": np.int64(80),
             "config": {"labels": NAMES}}
    paths = write_report(tmp_path / "out", "IU X-ray test", systems, NAMES, extra=extra)
    assert {p.name for p in paths.values()} == {"metrics.json", "report.md", "report.html"}
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert data["systems"]["tfidf"]["micro"]["f1"] == systems["tfidf"]["micro"]["f1"]
    assert data["extra"]["n_test"] == 80 and data["labels"] == NAMES
    micro = f"{systems['student-135m']['micro']['f1']:.3f}"
    lo, hi = systems["student-135m"]["micro"]["f1_ci"]
    md = (tmp_path / "out" / "report.md").read_text()
    html = (tmp_path / "out" / "report.html").read_text()
    for text in (md, html):
        for name in systems:
            assert name in text
        assert micro in text and f"{lo:.3f}" in text and f"{hi:.3f}" in text
        assert "Pleural Effusion" in text and "Details" in text and "timings_s.train" in text
        assert f"{systems['tfidf']['per_label']['Edema']['f1']:.3f}" in text
    assert "| student-135m | 80 |" in md and "**student-135m**: fine-tuned" in md
    assert "<link" not in html and "<script" not in html and "&lt;small&gt;" in html
    assert not list((tmp_path / "out").glob(".*"))  # no temp files left behind


def test_format_table():
    systems = _systems()
    out = format_table(systems)
    lines = out.splitlines()
    assert len(lines) == 2 + len(systems)
    assert "micro-F1 [95% CI]" in lines[0]
    assert lines[2].startswith("student-135m") and lines[2].rstrip().endswith("3")
    assert f"{systems['tfidf']['macro']['f1']:.3f}" in out
    assert "—" in lines[4]  # no invalid-output count for "random"
