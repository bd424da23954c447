"""tools/compare_rare_ddx_runs.py on two hand-made run folders: the paired counts and the weight sweep
can be checked by hand."""

import json
from pathlib import Path

import pytest

SYSTEMS = ("knowledge ranker", "fine-tuned model reranks top 10", "fine-tuned model + ranker (weight 0.1)")


@pytest.fixture(scope="module")
def tool(load_tool):
    return load_tool("compare_rare_ddx_runs")


def _run(root: Path, model_favours: dict[str, str], ranker_correct: bool, publications: bool = False) -> Path:
    """Two cases, gold D1; the ranker prefers D1 (or D2) by 1 nat; the model favours the given name."""
    (root / "predictions").mkdir(parents=True)
    (root / "data").mkdir()
    cal, ranker, scores = [], [], {}
    for case, fav in model_favours.items():
        first, second = ("D1", "D2") if ranker_correct else ("D2", "D1")
        ranker.append({"id": case, "ranking": [{"id": first, "label": first, "score": 1.0},
                                               {"id": second, "label": second, "score": 0.0}]})
        scores[case] = {"D1": 0.0 if fav == "D1" else -20.0, "D2": 0.0 if fav == "D2" else -20.0}
        hits = [ranker_correct, fav == "D1", fav == "D1"]  # at weight 0.1 the model's 20 nats win
        systems = {s: {"correct": h} for s, h in zip(SYSTEMS, hits)}
        cal.append({"id": case, "gold": ["D1"], "systems": systems,
                    **({"publication": "PMID:1"} if publications else {})})
    for name, rows in (("calibration", cal), ("knowledge_ranker", ranker)):
        (root / "predictions" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "data" / "scores_model_cases.json").write_text(json.dumps(scores))
    return root


def test_paired_counts_and_weight_sweep_by_hand(tmp_path, tool):
    a = _run(tmp_path / "a", {"c1": "D1", "c2": "D1"}, ranker_correct=False)
    b = _run(tmp_path / "b", {"c1": "D2", "c2": "D1"}, ranker_correct=False)
    lines = tool.compare(a, b, [0.0, 0.1], n_resamples=200)
    assert lines[0].startswith("2 cases scored by both runs")
    alone = next(line for line in lines if line.startswith("| fine-tuned model reranks"))
    assert "| 1.000 | 0.500 | +0.500" in alone and "| 1 / 0 |" in alone  # only case c1 differs
    # weight 0: the ranker's wrong first choice in both runs; weight 0.1: -20 x 0.1 = -2 outweighs 1 nat
    assert lines[-2:] == ["| 0 | 0.000 | 0.000 |", "| 0.1 | 1.000 | 0.500 |"]
    assert "| — | — |" in alone  # runs that do not name publications: cases resampled only
    # both cases from one publication: every resample draws both, so the interval is the point
    a = _run(tmp_path / "pa", {"c1": "D1", "c2": "D1"}, ranker_correct=False, publications=True)
    b = _run(tmp_path / "pb", {"c1": "D2", "c2": "D1"}, ranker_correct=False, publications=True)
    alone = next(line for line in tool.compare(a, b, [0.0], n_resamples=200)
                 if line.startswith("| fine-tuned model reranks"))
    assert "| [+0.500, +0.500] |" in alone


def test_runs_without_common_cases_are_refused(tmp_path, tool):
    a = _run(tmp_path / "a", {"c1": "D1"}, ranker_correct=True)
    b = _run(tmp_path / "b", {"c9": "D1"}, ranker_correct=True)
    with pytest.raises(SystemExit, match="no case in common"):
        tool.compare(a, b, [0.0])
