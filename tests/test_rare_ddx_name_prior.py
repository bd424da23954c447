"""tools/rare_ddx_name_prior.py: the name-prior correction on hand-made scores (checked by hand), and
the content-free scores of a model equal scoring each name alone against an empty summary."""

import numpy as np
import pytest

from synthdx.tasks.rare_ddx import DiseaseRankingTask


@pytest.fixture(scope="module")
def tool(load_tool):
    return load_tool("rare_ddx_name_prior")


def test_without_name_prior_by_hand(tool):
    scores = [{"D1": -1.0, "D2": -3.0}]
    free = {"D1": -0.5, "D2": -4.0}
    assert tool.without_name_prior(scores, free, 0.0) == scores
    assert tool.without_name_prior(scores, free, 1.0) == [{"D1": -0.5, "D2": 1.0}]
    assert tool.without_name_prior(scores, free, 0.5) == [{"D1": -0.75, "D2": -1.0}]


def _parts():
    """Four real cases, gold D2, one publication each. The ranker puts D1 first by 0.5 nats; the model
    gives the famous D1 the higher log-probability, but less above its prior than D2."""
    retrieved = [(["D1", "D2"], np.array([0.5, 0.0]), 2.0) for _ in range(4)]
    golds = [["D2"]] * 4
    parts = {"cases": (retrieved, golds, [f"PMID:{i}" for i in range(4)]),
             "val": (retrieved[:2], golds[:2], None)}
    row = {"D1": -1.0, "D2": -2.0}
    return parts, {"cases": [row] * 4, "val": [row] * 2}, {"D1": -0.2, "D2": -6.0}


def test_study_by_hand(tool):
    parts, scores, free = _parts()
    rows = tool.study(parts, scores, free, [0.0, 1.0], [0.0, 1.0, float("inf")], n_resamples=50)
    plain, pmi = rows
    # beta 0: the model agrees with the ranker (D1), so no weight helps; weight 0 wins the tie
    assert plain["alone"] == 0.0 and plain["weight"] == 0.0 and plain["fused"] == 0.0
    # beta 1: D1 -0.8, D2 +4.0; at weight 1 the fused scores are ranker log-posterior + 4.8 for D2: D2 first
    assert pmi["synthetic_alone"] == 1.0 and pmi["alone"] == 1.0
    assert pmi["weight"] == 1.0 and pmi["fused"] == 1.0
    diff = pmi["fused_minus_ranker"]
    assert diff["mcnemar"]["b"] == 4 and diff["mcnemar"]["c"] == 0
    assert diff["top1_by_publication"]["n_groups"] == 4
    assert tool.chosen_beta(rows) == 1.0


def test_weight_and_beta_are_chosen_on_tuning_cases_when_there_are_some(tool):
    parts, scores, free = _parts()
    # tuning cases whose gold is D1: there the correction hurts, so beta 0 and weight 0 are chosen
    parts["tune"] = (parts["cases"][0][:2], [["D1"]] * 2, ["PMID:9", "PMID:9"])
    scores["tune"] = scores["cases"][:2]
    rows = tool.study(parts, scores, free, [0.0, 1.0], [0.0, 1.0], n_resamples=50)
    assert [r["weight"] for r in rows] == [0.0, 0.0]
    assert tool.chosen_beta(rows) == 0.0
    lines, notes = tool.format_rows("m", rows)
    assert len(lines) == 2 and lines[1].startswith("| m | 1 |")


def test_content_free_scores_equal_scoring_each_name_alone(tool, tiny_model, tokenizer, monkeypatch):
    from synthdx.infer.rerank import score_names

    names = {f"D{i}": n for i, n in enumerate(["Alpha syndrome", "Beta disease type 2", "Gamma", "Delta-epsilon"])}
    task = DiseaseRankingTask(names=names, max_text_tokens=32)
    monkeypatch.setattr(tool, "CHUNK", 3)  # chunks of 3 and 1 names
    free = tool.content_free_scores(tiny_model, tokenizer, task, list(names))
    assert list(free) == list(names)
    for i in names:
        alone, _ = score_names(tiny_model, tokenizer, task, [""], [[i]])
        assert free[i] == pytest.approx(float(alone[0][0]), abs=1e-4)


def test_tool_on_a_finished_tiny_run(tmp_path, tiny_model_dir, tool, capsys, monkeypatch):
    """main() on a run with real tuning cases: one row per beta, the content-free scores cached for
    every retrieved name, and a second reading that needs no model."""
    import json

    from synthdx.experiments import rare_ddx
    from test_rare_ddx_model import tiny_tuning_config

    cfg = tiny_tuning_config(tmp_path, tiny_model_dir, zero_shot=False)
    run = tmp_path / "run"
    rare_ddx.run_rare_ddx(cfg, run)
    tool.main([str(run), "--betas", "0,1", "--n-resamples", "100"])
    out = capsys.readouterr().out
    assert "4 scored cases (4 publications)" in out and "weight chosen on real tuning cases" in out
    assert [line.split(" | ")[1] for line in out.splitlines() if line.startswith("| fine-tuned model |")] == ["0", "1"]
    assert "beta chosen with the weight, on the same cases:" in out
    free = json.loads((run / "data" / "scores_model_content_free.json").read_text())
    scored = json.loads((run / "data" / "scores_model_cases.json").read_text())
    ranked = {e["id"] for line in (run / "predictions" / "knowledge_ranker.jsonl").read_text().splitlines()
              for e in json.loads(line)["ranking"]}
    assert ranked <= set(free) and all(v < 0 for v in free.values()) and len(scored) == 4

    def no_model(path):
        raise AssertionError("every score is cached: no model should be loaded")

    monkeypatch.setattr(rare_ddx, "_load_for_scoring", no_model)
    tool.main([str(run), "--betas", "0,1", "--n-resamples", "100"])
    assert capsys.readouterr().out.splitlines()[-4:] == out.splitlines()[-4:]
