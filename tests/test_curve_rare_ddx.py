"""Rare-disease learning curves (`synthdx curve`, task rare-ddx): the publication-grouped split, rank
statistics against `evaluate_ranking`, nested training sets of a mix, and a tiny curve end to end
on a tiny model (train, rerank, resume, report)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from synthdx.config import CurveSource
from synthdx.evaluate.ranking import evaluate_ranking
from synthdx.experiments.curve import training_set
from synthdx.experiments.curve_rare_ddx import publication_split, rank_point_scores
from synthdx.patients import Case, Patient
from synthdx.records import Record
from synthdx.splits import publication_groups

from test_phenopackets import marfan_packet


def _case(cid: str, pmids: tuple[str, ...]) -> Case:
    return Case(Patient(cid, observed=("HP:0001250",), pmids=pmids), ("OMIM:1",))


def test_publication_split_never_puts_a_paper_on_both_sides():
    cases = [_case(f"c{i}", (f"PMID:{i % 40}",)) for i in range(400)]
    # cases citing two papers link them: PMID:1 and PMID:2 (and so everything citing either) go together
    cases += [_case("x1", ("PMID:1", "PMID:2")), _case("x2", ("PMID:2", "PMID:3")), _case("lone", ())]
    pool, test, summary = publication_split(cases, 0.3, "salt")
    assert len(pool) + len(test) == len(cases) and pool and test
    side = {}
    for part, name in ((pool, "pool"), (test, "test")):
        for c in part:
            for p in c.patient.pmids or (c.id,):
                assert side.setdefault(p, name) == name, f"{p} is on both sides"
    linked = {side[p] for p in ("PMID:1", "PMID:2", "PMID:3")}
    assert len(linked) == 1
    assert summary["publication_groups"] == 40 - 2 + 1
    # fixed: another order of the same cases gives the same split; another salt another one
    _, test2, _ = publication_split(list(reversed(cases)), 0.3, "salt")
    assert {c.id for c in test2} == {c.id for c in test}
    assert {c.id for c in publication_split(cases, 0.3, "other")[1]} != {c.id for c in test}


def test_publication_groups_join_chains():
    cases = [_case("a", ("PMID:9",)), _case("b", ("PMID:9", "PMID:5")), _case("c", ("PMID:5", "PMID:7")),
             _case("d", ("PMID:8",))]
    assert publication_groups(cases) == ["PMID:5", "PMID:5", "PMID:5", "PMID:8"]


def test_one_seed_rank_point_is_evaluate_ranking():
    rng = np.random.default_rng(0)
    ranks = [float(r) if r < 15 else math.inf for r in rng.integers(1, 20, size=80)]
    got = rank_point_scores([ranks], n_resamples=300, seed=4)
    ref = evaluate_ranking(ranks, n_resamples=300, seed=4)["all"]
    for m in ("top1", "top3", "top10", "mrr"):
        assert got[m]["mean"] == pytest.approx(ref[m])
        assert (got[m]["lo"], got[m]["hi"]) == pytest.approx(tuple(ref[f"{m}_ci"]))
        assert got[m]["sd"] == 0.0
    # resampling publications: the same interval as evaluate_ranking's, and for two seeds with equal
    # ranks the same as for one
    pubs = [f"PMID:{i % 23}" for i in range(80)]
    got = rank_point_scores([ranks], n_resamples=300, seed=4, groups=pubs)
    two = rank_point_scores([ranks, ranks], n_resamples=300, seed=4, groups=pubs)
    ref = evaluate_ranking(ranks, n_resamples=300, seed=4, groups=pubs)["all"]
    for m in ("top1", "top3", "top10", "mrr"):
        assert (got[m]["lo"], got[m]["hi"]) == pytest.approx(tuple(ref[f"{m}_ci"]))
        assert (two[m]["lo"], two[m]["hi"]) == pytest.approx((got[m]["lo"], got[m]["hi"]))


def test_two_seed_rank_point_is_the_bootstrap_of_the_seed_mean():
    from synthdx.evaluate.bootstrap import resample_indices

    a = np.array([1, 2, 1, 5, math.inf, 1, 3, 1, 2, 11], dtype=float)
    b = np.array([2, 1, 1, 1, 4, math.inf, 1, 1, 1, 1], dtype=float)
    got = rank_point_scores([a, b], n_resamples=200, seed=1)["top1"]
    means = [((a[idx] == 1).mean() + (b[idx] == 1).mean()) / 2
             for block in resample_indices(10, 200, 1) for idx in block]
    assert got["mean"] == pytest.approx(((a == 1).mean() + (b == 1).mean()) / 2)
    assert (got["lo"], got["hi"]) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert got["per_seed"] == [0.4, 0.7]


def test_training_sets_of_a_mix_are_nested_on_a_fixed_base():
    pools = {"real": [Record(f"r{i}", f"real {i}", ["OMIM:1"]) for i in range(40)],
             "synthetic": [Record(f"s{i}", f"synthetic {i}", ["OMIM:2"]) for i in range(30)]}
    mix = CurveSource(name="mix", kind="real", base="synthetic", base_n=10)
    small, large = training_set(mix, pools, 5, 0), training_set(mix, pools, 20, 0)
    assert small[:10] == large[:10] and all(r.id.startswith("s") for r in large[:10])
    assert small[10:] == large[10:15] and all(r.id.startswith("r") for r in large[10:])
    synth = CurveSource(name="synthetic", kind="synthetic")
    assert training_set(synth, pools, 10, 0) == training_set(synth, pools, 20, 0)[:10]
    assert training_set(synth, pools, 31, 0) is None


def _packets(hpo, tmp_path: Path) -> Path:
    """Phenopackets of synthetic patients of four diseases, from eight publications (JSONL)."""
    from synthdx.synth.hpo_patients import HPOPatientGenerator

    diseases = ["OMIM:154700", "OMIM:101600", "OMIM:143100", "OMIM:219700"]
    gen = HPOPatientGenerator(hpo, seed=5)
    rows = []
    for i, case in enumerate(gen.generate(diseases, 6)):
        p = copy.deepcopy(marfan_packet(f"PMID_{i % 8}_{i}"))
        p["phenotypicFeatures"] = ([{"type": {"id": t, "label": "x"}} for t in case.patient.observed]
                                   + [{"type": {"id": t, "label": "x"}, "excluded": True}
                                      for t in case.patient.excluded])
        p["interpretations"][0]["diagnosis"]["disease"] = {"id": case.gold[0], "label": "x"}
        p["metaData"]["externalReferences"] = [{"id": f"PMID:{100 + i % 8}"}]
        rows.append(json.dumps(p))
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_tiny_rare_ddx_curve_end_to_end_and_resume(tmp_path, tiny_model_dir, hpo):
    from synthdx.config import load_config
    from synthdx.experiments.curve import run_curve

    cases = _packets(hpo, tmp_path)
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "curve-rare-ddx.yaml", [
        f"data.path={cases}", "data.test_fraction=0.4", "rare_ddx.test_cases=null",
        "rare_ddx.patients.validation_patients=10", "sizes=[4,8]", "seeds=[0]", "eval.n_resamples=100",
        "rare_ddx.zero_shot=true", "sources=[{name: synthetic patients, kind: synthetic}, {name: real cases, "
        "kind: real}, {name: mix, kind: real, base: synthetic, base_n: 3}]",
        f"learners.0.train.model={tiny_model_dir}", "learners.0.train.max_steps=1",
        "learners.0.train.batch_size=4"])
    out = tmp_path / "run"
    result = run_curve(cfg, out)
    split = json.loads((out / "data" / "split.json").read_text())
    test_ids = set(split["test"])
    assert test_ids and len(test_ids) < 24
    # no publication on both sides: every training id of every real point is from another paper
    test_pubs = {i.split("_")[1] for i in test_ids}
    for path in (out / "points").rglob("*.json"):
        row = json.loads(path.read_text())
        if row["source"] == "real cases":
            assert row["train_records"] == row["n"]
            assert not {i.split("_")[1] for i in row["train_ids"]} & test_pubs
        assert row["test_ids"] == split["test"]
        assert len(row["ranks"]["alone"]) == len(test_ids)
    small = json.loads((out / "points" / "smollm2-135m" / "real-cases" / "n4-s0.json").read_text())
    large = json.loads((out / "points" / "smollm2-135m" / "real-cases" / "n8-s0.json").read_text())
    assert large["train_ids"][:4] == small["train_ids"]  # nested
    assert set(result["curves"]) == {"SmolLM2-135M reranks top 10", "SmolLM2-135M + ranker"}
    for system in result["curves"].values():
        assert set(system) == {"synthetic patients", "real cases", "mix"}
        for p in system["synthetic patients"]:
            assert 0 <= p["top1"]["lo"] <= p["top1"]["mean"] <= p["top1"]["hi"] <= 1
            assert "equivalent_real_n" in p["top1"]
    assert "knowledge ranker" in result["references"]
    assert "base model zero-shot reranks top 10" in result["references"]
    mix = json.loads((out / "points" / "smollm2-135m" / "mix" / "n4-s0.json").read_text())
    assert mix["train_records"] == 7 and not set(mix["train_ids"][3:]) & set(mix["train_ids"][:3])
    report = (out / "report.md").read_text()
    assert "top-1" in report and "by publication" in report and "knowledge ranker" in report
    assert "Paired: each point" in report
    assert len(result["paired"]) == 1 + 3 * 2 and all(0 < c["top1"]["p_value"] <= 1 for c in result["paired"])
    assert all(0 < c["top1_by_publication"]["p_value"] <= 1 for c in result["paired"])
    assert "publications resampled" in report
    assert not list(out.rglob("model.safetensors"))  # the points' models are deleted
    # a rerun trains nothing and gives the same numbers
    stamp = {p: p.stat().st_mtime_ns for p in (out / "points").rglob("*.json")}
    again = run_curve(cfg, out, report_only=True)
    assert again["curves"] == result["curves"] and not again["skipped_points"]
    assert stamp == {p: p.stat().st_mtime_ns for p in (out / "points").rglob("*.json")}


def test_rare_ddx_curve_config_refuses_other_learners_and_teacher():
    from synthdx.config import CurveConfig

    base = {"experiment": "curve", "task": "rare-ddx", "data": {"path": "x.zip"},
            "sources": [{"name": "s", "kind": "synthetic"}], "learners": [{"kind": "llm"}]}
    CurveConfig.model_validate(base)
    with pytest.raises(ValueError, match="llm"):
        CurveConfig.model_validate({**base, "learners": [{"kind": "tfidf"}]})
    with pytest.raises(ValueError, match="teacher"):
        CurveConfig.model_validate({**base, "sources": [{"name": "t", "kind": "teacher"}]})
