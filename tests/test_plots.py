"""Report figures: each plot function returns a PNG data URI (and writes the file when asked), also
for degenerate input."""

from __future__ import annotations

import base64
import struct

import pytest

from synthdx.evaluate.plots import bar_comparison_plot, learning_curve_plot, reliability_plot

NAN = float("nan")


def _png(uri: str, max_bytes: int = 100_000) -> tuple[int, int]:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    data = base64.b64decode(uri[len(prefix):], validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 2_000 < len(data) < max_bytes
    width, height = struct.unpack(">II", data[16:24])
    assert 300 <= width <= 1000 and 150 <= height <= 3000
    return width, height


def _curve(ns, base=0.4):
    return [{"n": n, "mean": base + 0.05 * k, "lo": base + 0.05 * k - 0.03, "hi": base + 0.05 * k + 0.03}
            for k, n in enumerate(ns)]


def test_learning_curve(tmp_path):
    out = tmp_path / "lc.png"
    curves = {"fine-tuned": _curve([50, 100, 500, 2000]), "tf-idf": _curve([50, 100, 500], 0.3)}
    uri = learning_curve_plot(curves, "micro-F1", "Learning curve",
                              references={"rule teacher": 0.7, "published": 0.8}, path=out)
    w, _ = _png(uri)
    assert w >= 700  # 8 in at 100 dpi
    assert out.read_bytes() == base64.b64decode(uri.split(",", 1)[1])


@pytest.mark.parametrize("curves", [
    {"one": [{"n": 100, "mean": 0.5, "lo": 0.4, "hi": 0.6}]},
    {"one": [{"n": 100, "mean": 0.5, "lo": NAN, "hi": NAN}]},
    {"nan": [{"n": 10, "mean": 0.2, "lo": NAN, "hi": None}, {"n": 20, "mean": 0.3},
             {"n": 40, "mean": NAN, "lo": 0.3, "hi": 0.5}, {"n": 80, "mean": 0.0, "lo": 0.0, "hi": 0.1}]},
    {"empty": []},
    {},
])
def test_learning_curve_degenerate(curves):
    _png(learning_curve_plot(curves, "F1", "degenerate"))


def test_learning_curve_many_points_and_systems():
    ns = [10 * 2 ** k for k in range(12)]
    curves = {f"system {k} with a rather long name": _curve(ns, 0.1 * k) for k in range(6)}
    _png(learning_curve_plot(curves, "macro-F1", "many", references={"ref": 0.5}))


def test_reliability(tmp_path):
    bins = [0.05 + 0.1 * k for k in range(10)]
    systems = {
        "model": {"confidence": bins, "frequency": [b * 0.9 for b in bins],
                  "count": [500, 80, 0, 10, 5, 4, 3, 2, 1, 0], "ece": 0.04},
        "baseline": {"confidence": bins[:5] + [NAN] * 5, "frequency": bins[:5] + [NAN] * 5,
                     "count": [100] * 10},
        "no counts": {"confidence": [0.2, 0.8], "frequency": [0.1, 0.9]},
    }
    out = tmp_path / "rel.png"
    _png(reliability_plot(systems, path=out))
    assert out.exists()
    _png(reliability_plot({}))
    _png(reliability_plot({"empty": {"confidence": [], "frequency": [], "count": []}}))


def test_bar_comparison():
    rows = {f"finding {k}": {"synthetic": 0.02 * k, "real": 0.03 * k} for k in range(14)}
    rows["only real"] = {"real": 0.1}
    rows["nan"] = {"synthetic": NAN, "real": 0.05}
    _png(bar_comparison_plot(rows, "Prevalence", value_label="share of reports"))
    _png(bar_comparison_plot({"a": {"x": -2.0, "y": 3.5}, "b": {"x": 1.0}}, "signed"))
    _png(bar_comparison_plot({}, "empty"))
    _png(bar_comparison_plot({"a": {"x": NAN}}, "all nan"))
