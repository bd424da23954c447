"""tools/compare_seeds.py on hand-made mixture run folders: the per-run differences and the t-interval
over runs can be checked by hand."""

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def tool(load_tool):
    return load_tool("compare_seeds")


def _run(root: Path, alone: float, joint: float) -> Path:
    root.mkdir()
    row = {"task": "radiology", "metric": "micro-F1", "n": 10, "alone": {"value": alone, "ci": [0, 1]},
           "joint": {"value": joint, "ci": [0, 1]}, "diff": {"diff": joint - alone, "ci": [0, 0], "p_value": 1}}
    (root / "metrics.json").write_text(json.dumps({"systems": {"summary": [row]}}))
    return root


def test_seed_spread_by_hand(tool):
    # differences 0.1, 0.2, 0.3: mean 0.2, SD 0.1, half-width t(0.975, 2) * 0.1 / sqrt(3) = 4.3027 * 0.057735
    s = tool.seed_spread([0.1, 0.2, 0.3])
    assert s["mean"] == pytest.approx(0.2) and s["sd"] == pytest.approx(0.1)
    assert s["ci"] == pytest.approx([0.2 - 0.248414, 0.2 + 0.248414], abs=1e-5)
    assert tool.seed_spread([0.5]) == {"n": 1, "mean": 0.5, "sd": None, "ci": None}


def test_table_over_runs(tool, tmp_path, capsys):
    runs = [_run(tmp_path / f"s{i}", 0.6, j) for i, j in enumerate((0.7, 0.5, 0.6))]
    tool.main([str(r) for r in runs])
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| radiology")][0]
    assert "0.600 / 0.700 / +0.100" in line and "0.600 / 0.500 / -0.100" in line
    assert "+0.000 [-0.248, +0.248]" in line and "| 0.100 |" in line


def test_unfinished_run_is_named(tool, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="empty/metrics.json"):
        tool.main([str(tmp_path / "empty")])
