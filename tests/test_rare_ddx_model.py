"""The model side of rare-disease ranking: task format, candidate scoring (fast path equals full
sequence scoring), fusion with the ranker, rank bookkeeping, `predict --task rare-ddx` and a tiny
end-to-end experiment run."""

from __future__ import annotations

import copy
import json
import math
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from synthdx.experiments.rare_ddx import (CalibrationInput, _richness_section, calibration_report,
                                          choose_weight, hash_sample, reranked_gold_rank, system_scores)
from synthdx.infer.rerank import fuse, log_posterior, score_names
from synthdx.patients import Case, Patient
from synthdx.records import Record
from synthdx.tasks.rare_ddx import DiseaseRankingTask, disease_names

from test_phenopackets import marfan_packet

NAMES = {"OMIM:1": "Alpha syndrome", "OMIM:2": "Alpha syndrome type 2", "OMIM:3": "Beta disease",
         "OMIM:4": "Developmental and epileptic encephalopathy 96"}


@pytest.fixture(scope="module")
def task():
    return DiseaseRankingTask(names=dict(NAMES), max_text_tokens=64)


def test_example_trains_on_the_name_and_end_token_only(task, tokenizer):
    ex = task.build_example(tokenizer, Record("p1", "A 3-year-old girl has seizures.", ["OMIM:2"]))
    answer = [t for t in ex.labels if t != -100]
    assert ex.input_ids[-len(answer):] == answer
    assert tokenizer.decode(answer[:-1]) == " Alpha syndrome type 2"
    assert answer[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert ex.labels[:len(ex.input_ids) - len(answer)] == [-100] * (len(ex.input_ids) - len(answer))
    with pytest.raises(KeyError):
        task.answer_ids(tokenizer, "OMIM:999")


def test_disease_names_are_unique(hpo):
    names = disease_names(hpo)
    assert len(names) == len(hpo.disease_ids)
    assert len({n.lower() for n in names.values()}) == len(names)
    assert names["OMIM:154700"] == "Marfan syndrome"


def _slow_scores(model, tokenizer, task, text, cands):
    """log p(answer | prompt) from one full forward pass per candidate."""
    prompt, _ = task.prompt_ids(tokenizer, text)
    out = []
    for c in cands:
        a = task.answer_ids(tokenizer, c)
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=torch.tensor([prompt + a])).logits[0].float(), -1)
        out.append(sum(float(lp[len(prompt) - 1 + i, a[i]]) for i in range(len(a))))
    return np.array(out)


@pytest.mark.parametrize("share_prefix", [True, False])
def test_fast_scoring_equals_full_sequence_scoring(task, tokenizer, tiny_model, share_prefix):
    texts = ["A 3-year-old girl has seizures and hypotonia.", "A newborn boy has cleft palate."]
    cands = [["OMIM:1", "OMIM:2", "OMIM:3", "OMIM:4"], ["OMIM:3", "OMIM:1"]]
    fast, truncated = score_names(tiny_model, tokenizer, task, texts, cands, share_prefix=share_prefix)
    assert truncated == [False, False]
    for text, c, f in zip(texts, cands, fast):
        np.testing.assert_allclose(f, _slow_scores(tiny_model, tokenizer, task, text, c), atol=2e-4)
    # a name that is the start of a longer one is scored with its end token: the two differ
    assert fast[0][0] != fast[0][1]


def test_fuse_weights():
    ranker = np.array([3.0, 2.0, 1.0])
    model = np.array([-9.0, -1.0, -5.0])
    assert list(np.argsort(-fuse(ranker, model, 0.0), kind="stable")) == [0, 1, 2]
    assert list(np.argsort(-fuse(ranker, model, math.inf), kind="stable")) == [1, 2, 0]
    # ties of the model are broken by the ranker
    tie = fuse(ranker, np.array([-1.0, -1.0, -5.0]), math.inf)
    assert list(np.argsort(-tie, kind="stable")) == [0, 1, 2]
    np.testing.assert_allclose(np.exp(log_posterior(ranker)).sum(), 1.0)
    np.testing.assert_allclose(fuse(ranker, model, 0.5), log_posterior(ranker) + 0.5 * model)


def test_reranked_gold_rank_by_hand():
    top = ["D1", "D2", "D3"]
    assert reranked_gold_rank(top, np.array([0.1, 0.9, 0.5]), ["D3"], 3.0) == 2.0
    assert reranked_gold_rank(top, np.array([0.1, 0.9, 0.5]), ["D1", "D2"], 1.0) == 1.0
    # retrieval missed the gold: its ranker rank (beyond K) stands, or inf when not a candidate
    assert reranked_gold_rank(top, np.array([0.1, 0.9, 0.5]), ["D7"], 12.0) == 12.0
    assert reranked_gold_rank(top, np.array([0.1, 0.9, 0.5]), ["D7"], math.inf) == math.inf


def test_top1_confidence_of_hand_made_rankings():
    from synthdx.evaluate.calibration import top1_confidence

    # the ranker's top 3 with log-likelihood ratios 3, 2, 1 -> posterior 1 / (1 + e^-1 + e^-2) on the first
    retrieved = [(["A", "B", "C"], np.array([3.0, 2.0, 1.0]), 1.0)]
    model = [{"A": np.log(0.1), "B": np.log(0.4), "C": np.log(0.1)}]
    ranker = system_scores(retrieved, None, 0.0)[0]
    assert top1_confidence(ranker) == pytest.approx(1 / (1 + math.exp(-1) + math.exp(-2)))
    # the model alone ranks B first with 0.4 / (0.1 + 0.4 + 0.1) = 2/3
    alone = system_scores(retrieved, model, math.inf)[0]
    assert int(np.argmax(alone)) == 1 and top1_confidence(alone) == pytest.approx(2 / 3)
    # fused with weight 1: log-posterior + log p, softmax -> proportional to posterior x p:
    # A: e^0 * 0.1, B: e^-1 * 0.4, C: e^-2 * 0.1; B is first with 0.4e^-1 / (0.1 + 0.4e^-1 + 0.1e^-2)
    fused = system_scores(retrieved, model, 1.0)[0]
    b = 0.4 * math.exp(-1)
    assert int(np.argmax(fused)) == 1
    assert top1_confidence(fused) == pytest.approx(b / (0.1 + b + 0.1 * math.exp(-2)))


def test_calibration_report_fits_on_validation_only():
    # validation: margin 2, right 3 of 4 -> T = 2 / log 3; real cases: other scores, all right
    val = [np.array([2.0, 0.0])] * 4
    real = [np.array([1.0, 0.0]), np.array([4.0, 0.0])]
    rep = calibration_report([CalibrationInput("s", real, [True, True], val, [True, True, True, False])],
                             ["r1", "r2"], n_bins=10)
    s = rep["systems"]["s"]
    t = 2 / math.log(3)
    assert s["temperature"] == pytest.approx(t, rel=1e-5)
    conf = [1 / (1 + math.exp(-1)), 1 / (1 + math.exp(-4))]
    assert rep["cases"]["s"]["confidence"] == pytest.approx(conf, abs=1e-6)
    assert rep["cases"]["s"]["confidence_scaled"] == pytest.approx([1 / (1 + math.exp(-1 / t)),
                                                                     1 / (1 + math.exp(-4 / t))], abs=1e-6)
    assert s["ece"] == pytest.approx(np.mean([1 - c for c in conf]))  # two bins, both right
    assert s["brier"] == pytest.approx(np.mean([(1 - c) ** 2 for c in conf]))
    assert s["validation"]["ece_scaled"] == pytest.approx(0.0, abs=1e-5)  # 0.75 confident, 3/4 right
    assert rep["cases"]["ids"] == ["r1", "r2"] and rep["fitted_on"].startswith("held-out synthetic")


def test_choose_weight_follows_the_validation_patients():
    retrieved = [(["A", "B"], np.array([1.0, 0.0]), 1.0), (["A", "B"], np.array([1.0, 0.0]), 2.0)]
    golds = [["B"], ["B"]]
    good = [{"A": -5.0, "B": -1.0}, {"A": -5.0, "B": -1.0}]   # the model knows B; the ranker says A
    w, table = choose_weight(retrieved, good, golds, [0.0, 1.0, math.inf])
    assert table["0.0"]["top1"] == 0.0 and table["inf"]["top1"] == 1.0 and w == 1.0
    assert table["1.0"]["chosen_share"] == 1.0 and table["inf"]["chosen_share"] == 0.0  # every resample agrees
    bad = [{"A": -1.0, "B": -5.0}, {"A": -1.0, "B": -5.0}]
    w, _ = choose_weight(retrieved, bad, [["A"], ["A"]], [0.0, 1.0, math.inf])
    assert w == 0.0


def test_choose_weight_reports_how_often_resamples_agree():
    """Two patients: the model rescues the first (gold B) and sinks the second (gold A). Weight 0
    keeps the ranker's order (A first: top-1 1/2); inf follows the model (B first: top-1 1/2); the
    tie goes to the higher MRR, equal too, so to the first weight listed. A resample holding only
    the first patient picks inf, only the second picks 0 (1/4 each); mixed ones tie and pick 0."""
    retrieved = [(["A", "B"], np.array([1.0, 0.0]), 2.0), (["A", "B"], np.array([1.0, 0.0]), 1.0)]
    ms = [{"A": -5.0, "B": -1.0}, {"A": -5.0, "B": -1.0}]
    w, table = choose_weight(retrieved, ms, [["B"], ["A"]], [0.0, math.inf], n_resamples=4000)
    assert w == 0.0
    assert table["inf"]["chosen_share"] == pytest.approx(0.25, abs=0.03)
    assert table["0.0"]["chosen_share"] + table["inf"]["chosen_share"] == pytest.approx(1.0)


def test_choose_weight_resamples_whole_publications():
    """The two patients of the test above as real cases. From one publication, every resample holds
    both (a tie: weight 0 always); from two, a resample holds either alone a quarter of the time each."""
    retrieved = [(["A", "B"], np.array([1.0, 0.0]), 2.0), (["A", "B"], np.array([1.0, 0.0]), 1.0)]
    ms = [{"A": -5.0, "B": -1.0}, {"A": -5.0, "B": -1.0}]
    _, table = choose_weight(retrieved, ms, [["B"], ["A"]], [0.0, math.inf], n_resamples=4000,
                             groups=["PMID:1", "PMID:1"])
    assert table["0.0"]["chosen_share"] == 1.0 and table["inf"]["chosen_share"] == 0.0
    _, table = choose_weight(retrieved, ms, [["B"], ["A"]], [0.0, math.inf], n_resamples=4000,
                             groups=["PMID:1", "PMID:2"])
    assert table["inf"]["chosen_share"] == pytest.approx(0.25, abs=0.03)


def test_largest_publications_by_hand():
    from synthdx.experiments.rare_ddx import _largest_publications

    hit = [1, 1, 1, 0, 1, 0]
    other = [0, 0, 1, 1, 1, 1]
    pubs = ["P1", "P1", "P1", "P2", "P3", "P3"]
    # P1: 3 cases, A alone first twice; P2: B alone once; P3: B alone once (tie on 1, by name)
    assert _largest_publications(hit, other, pubs, n=2) == [
        {"publication": "P1", "cases": 3, "only_a": 2, "only_b": 0},
        {"publication": "P2", "cases": 1, "only_a": 0, "only_b": 1}]
    assert _largest_publications([1, 0], [1, 0], ["P1", "P2"]) == []  # no difference: nothing to name


def test_richness_section_and_mix_adjusted_means():
    """Synthetic bin means weighted by the real cases' bins: (2 * 1 + 6 * 3) / 4 observed, by hand."""
    syn = {"1-9": {"n": 8, "share": 0.8, "observed_mean": 2.0, "excluded_mean": 1.0},
           "10-19": {"n": 2, "share": 0.2, "observed_mean": 6.0, "excluded_mean": 4.0}}
    real = {"1-9": {"n": 1, "share": 0.2, "observed_mean": 3.0, "excluded_mean": 2.0},
            "10-19": {"n": 3, "share": 0.6, "observed_mean": 9.0, "excluded_mean": 8.0},
            "not annotated": {"n": 1, "share": 0.2, "observed_mean": 50.0, "excluded_mean": 50.0}}
    section = _richness_section({"synthetic": syn, "real": real})
    assert [r[:4] for r in section.rows] == [["1-9", "8 (80%)", "1 (20%)", "2.0 / 3.0"],
                                             ["10-19", "2 (20%)", "3 (60%)", "6.0 / 9.0"],
                                             ["not annotated", "0", "1 (20%)", "— / 50.0"]]
    assert section.notes == ["Synthetic patients reweighted to the real cases' mix of richness (annotated "
                             "gold diseases only): observed terms 5.0 vs 7.5 real, excluded terms 3.2 vs 6.5 "
                             "real."]
    del syn["10-19"]  # a bin of real cases without synthetic patients: no reweighting
    assert _richness_section({"synthetic": syn, "real": real}).notes == []


def test_model_scores_resume_after_an_interruption(tmp_path, tiny_model_dir, task, monkeypatch):
    """Scores are written every SCORE_CHUNK cases: a run killed in the second chunk keeps the first,
    the rerun scores only the rest, and the result equals an uninterrupted run's."""
    import synthdx.experiments.rare_ddx as rd
    import synthdx.infer.rerank as rerank

    texts = [f"A {n}-year-old girl has seizures." for n in range(1, 6)]
    ids = [f"c{n}" for n in range(5)]
    cands = [["OMIM:1", "OMIM:3"], ["OMIM:2"], ["OMIM:4", "OMIM:1"], ["OMIM:3"], ["OMIM:3"]]
    whole = rd._model_scores(str(tiny_model_dir), task, texts, cands, tmp_path / "whole.json", ids, "whole")
    monkeypatch.setattr(rd, "SCORE_CHUNK", 2)
    real, seen = rerank.score_names, []

    def dies_on_second_chunk(model, tok, task_, chunk_texts, *a, **kw):
        seen.append(len(chunk_texts))
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(model, tok, task_, chunk_texts, *a, **kw)

    monkeypatch.setattr(rerank, "score_names", dies_on_second_chunk)
    cache = tmp_path / "scores.json"
    with pytest.raises(KeyboardInterrupt):
        rd._model_scores(str(tiny_model_dir), task, texts, cands, cache, ids, "interrupted")
    assert sorted(json.loads(cache.read_text())) == ["c0", "c1"]
    seen.clear()
    monkeypatch.setattr(rerank, "score_names", lambda *a, **kw: (seen.append(len(a[3])), real(*a, **kw))[1])
    resumed = rd._model_scores(str(tiny_model_dir), task, texts, cands, cache, ids, "resumed")
    assert seen == [2, 1]  # c2, c3, then c4: nothing scored twice
    # equal to the uninterrupted run's up to rounding: on a CPU with native bf16 the scores are computed in
    # bf16, where a batch of 1 and a batch of 5 round differently (0.01 nats of 40 seen); a resume bug
    # (a case scored against another's names, or a chunk lost) would be off by whole nats or keys
    assert [sorted(r) for r in resumed] == [sorted(r) for r in whole]
    assert all(r == pytest.approx(w, rel=1e-3) for r, w in zip(resumed, whole))
    assert rd._model_scores(str(tiny_model_dir), task, texts, cands, cache, ids, "cached") == resumed
    assert seen == [2, 1]  # all cached: no scoring at all


def test_hash_sample_is_fixed_and_order_free():
    cases = [Case(Patient(f"c{i}", observed=("HP:0001250",)), ("OMIM:1",)) for i in range(50)]
    a = hash_sample(cases, 10, "s")
    b = hash_sample(list(reversed(cases)), 10, "s")
    assert [c.id for c in a] == [c.id for c in b] and len(a) == 10
    assert hash_sample(cases, None, "s") == cases


def test_pick_diseases_random_or_best_studied(hpo):
    import random

    from synthdx.config import HPOSyntheticConfig
    from synthdx.experiments.rare_ddx import pick_diseases

    usable = sorted(hpo.candidates(None, None))[:400]
    pubs = {d: len(hpo.diseases[d].publications) for d in usable}
    syn = HPOSyntheticConfig(n_diseases=20, validation_patients=50)
    train, val = pick_diseases(hpo, usable, syn, random.Random(0))
    assert len(train) == 20 and len(val) == 50 and set(train) | set(val) <= set(usable)
    assert (train, val) == pick_diseases(hpo, usable, syn, random.Random(0))  # seeded
    best = syn.model_copy(update={"diseases": "best-studied"})
    train_b, val_b = pick_diseases(hpo, usable, best, random.Random(0))
    # the 20 with most publications: none left out has more than the least of them
    assert len(train_b) == 20 and min(pubs[d] for d in train_b) >= max(pubs[d] for d in usable if d not in train_b)
    # validation in proportion to 1 + publications: better studied than a uniform draw, on average
    assert len(set(val_b)) == 50 and np.mean([pubs[d] for d in val_b]) > np.mean(list(pubs.values()))
    assert pick_diseases(hpo, usable, best.model_copy(update={"n_diseases": None}), random.Random(0))[0] == usable
    # the validation draw set on its own: the training diseases stay those of the default draw
    train_p, val_p = pick_diseases(hpo, usable, syn.model_copy(update={"validation_diseases": "publications"}),
                                   random.Random(0))
    assert train_p == train and val_p != val and np.mean([pubs[d] for d in val_p]) > np.mean(list(pubs.values()))
    train_u, val_u = pick_diseases(hpo, usable, best.model_copy(update={"validation_diseases": "uniform"}),
                                   random.Random(0))
    assert train_u == train_b and len(val_u) == 50


def _packet_zip(tmp_path: Path) -> Path:
    path = tmp_path / "cases.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i, (pid, hpo) in enumerate([("PMID_1_a", None), ("PMID_1_b", "HP:0001250"), ("PMID_2_c", "HP:0000256")]):
            p = copy.deepcopy(marfan_packet(pid))
            if hpo:
                p["phenotypicFeatures"] = [{"type": {"id": hpo, "label": "x"}}]
            z.writestr(f"FBN1/{pid}.json", json.dumps(p))
    return path


def test_predict_rare_ddx_writes_valid_rankings_and_resumes(tmp_path, tiny_model_dir, hpo):
    from synthdx.infer.batch import rank_file

    cases, out = _packet_zip(tmp_path), tmp_path / "ranked.jsonl"
    assert rank_file(str(tiny_model_dir), cases, out, chunk=1) == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["PMID_1_a", "PMID_1_b", "PMID_2_c"]
    for r in rows:
        assert len(r["ranking"]) >= 10
        assert all(e["id"] in hpo.diseases and e["label"] for e in r["ranking"])
        scores = [e["score"] for e in r["ranking"]]
        assert scores == sorted(scores, reverse=True)
    # an interrupted run: two rows written, the second torn; the rerun completes and agrees
    partial = tmp_path / "again.jsonl.partial"
    lines = out.read_text().splitlines()
    partial.write_text(lines[0] + "\n" + lines[1][:20])
    rank_file(str(tiny_model_dir), cases, tmp_path / "again.jsonl", chunk=1)
    assert (tmp_path / "again.jsonl").read_text() == out.read_text()
    assert not partial.exists()


def test_cli_predict_rare_ddx_reads_synthetic_jsonl(tmp_path, tiny_model_dir, hpo):
    from typer.testing import CliRunner

    from synthdx.cli import app

    runner = CliRunner()
    synth = tmp_path / "patients.jsonl"
    res = runner.invoke(app, ["synth", "--generator", "hpo-patients", "--n", "2", "--diseases",
                              "OMIM:154700,OMIM:101600", "--output", str(synth)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in synth.read_text().splitlines()]
    assert len(rows) == 4 and all(r["text"] and r["labels"][0] in ("OMIM:154700", "OMIM:101600") for r in rows)
    out = tmp_path / "ranked.jsonl"
    res = runner.invoke(app, ["predict", "--task", "rare-ddx", "--model", str(tiny_model_dir),
                              "--input", str(synth), "--output", str(out)])
    assert res.exit_code == 0, res.output
    ranked = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in ranked] == [r["id"] for r in rows]
    res = runner.invoke(app, ["synth", "--generator", "hpo-patients", "--diseases", "OMIM:0000000",
                              "--output", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2 and "OMIM:0000000" in res.output


def test_tiny_experiment_end_to_end(tmp_path, tiny_model_dir, hpo):
    from synthdx.config import load_config
    from synthdx.experiments.rare_ddx import PRIOR_RANKER, run_rare_ddx

    cases = _packet_zip(tmp_path)
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "rare-ddx-cpu.yaml", [
        f"data.path={cases}", "synthetic.n_diseases=3", "synthetic.validation_patients=10",
        f"train.model={tiny_model_dir}", "train.max_steps=1", "eval.zero_shot=false", "eval.n_resamples=100",
        "eval.constrained_beam=3"])
    out = tmp_path / "run"
    result = run_rare_ddx(cfg, out)
    assert (out / "model" / "synthdx_task.json").exists()
    spec = json.loads((out / "model" / "synthdx_task.json").read_text())
    assert spec["kind"] == "disease-ranking" and spec["rerank"]["top_k"] == 10
    assert spec["rerank"]["prior"] == "uniform"  # the ranker `synthdx predict` must retrieve with
    assert result["all_cases"]["knowledge ranker"]["n"] == 3
    model_rows = [k for k in result["model_cases"] if k.startswith("fine-tuned model")]
    assert len(model_rows) == 5  # alone and fused, with and without the own publication; constrained decoding
    constrained = "fine-tuned model alone, constrained decoding over all candidates (beam 3)"
    assert result["model_cases"][constrained]["n"] == 3
    found = json.loads((out / "data" / "constrained_model_cases.json").read_text())
    assert found["beam"] == 3
    assert all(len(f) == 3 and set(f) <= set(hpo.disease_ids) for f in found["found"].values())
    ranked = [json.loads(line) for line in (out / "predictions" / "model.jsonl").read_text().splitlines()]
    assert len(ranked) == 3 and all(len(r["ranking"]) == 10 for r in ranked)
    report = (out / "report.md").read_text()
    assert "Exomiser" in report and "shape" in report
    assert "Shape by how richly the gold disease is annotated" in report
    assert "| observed terms, mean |" in report  # readable statistic names, not keys
    richness = result["shape_by_richness"]
    assert sum(b["n"] for b in richness["real (all cases)"].values()) == 3
    assert "Paired comparisons (top-1" in report and "Fidelity" in report
    assert "prevalence: OMIM:" not in report  # texts are compared, not one row per disease
    assert "one each of diseases drawn from all candidates uniformly" in report  # the config's draw
    assert "| chosen in resamples |" in report
    shares = [d["chosen_share"] for d in result["fusion_weights"]["fine-tuned model"].values()]
    assert sum(shares) == pytest.approx(1.0)
    assert "Calibration of the top-1 confidence" in report and "synthetic validation patients" in report
    assert (out / "plots" / "rare-ddx-reliability.png").exists()
    cal = result["calibration"]
    assert {"knowledge ranker", "fine-tuned model reranks top 10"} <= set(cal["systems"])
    assert all(0 < s["temperature"] and 0 <= s["ece"] <= 1 for s in cal["systems"].values())
    cal_rows = [json.loads(line) for line in (out / "predictions" / "calibration.jsonl").read_text().splitlines()]
    assert len(cal_rows) == 3 and all(0 < v["confidence"] <= 1 for r in cal_rows for v in r["systems"].values())
    assert all(0 < r["top1_confidence"] <= 1 for r in ranked)
    # each model system against the ranker and against the ranker with the publication prior
    assert [c["system_b"] for c in result["paired"]] == ["knowledge ranker", PRIOR_RANKER] * 3
    assert result["paired"][4]["system_a"] == constrained
    paired = result["paired"][2]
    assert paired["system_a"].startswith("fine-tuned model + ranker") and 0 < paired["top1"]["p_value"] <= 1
    assert paired["mcnemar"]["n"] == 3
    for name in (PRIOR_RANKER, f"{PRIOR_RANKER}, own publication left out"):
        assert result["all_cases"][name]["n"] == 3 and result["model_cases"][name]["n"] == 3
    assert json.loads((out / "provenance.json").read_text())["settings"]["hpo_version"]
    # predict retrieves with the prior the model's settings name: with weight 0 its ranking is that ranker's
    from synthdx.baselines.phenotype_ranker import PhenotypeRanker
    from synthdx.datasets.phenopackets import load_phenopackets
    from synthdx.infer.batch import rank_file

    tuned = json.loads(json.dumps(spec))
    tuned["rerank"].update(weight=0.0, prior="publications")
    (out / "model" / "synthdx_task.json").write_text(json.dumps(tuned))
    rank_file(str(out / "model"), cases, tmp_path / "prior.jsonl")
    prior = PhenotypeRanker(hpo, prior="publications").fit()
    want = [[d for d, _, _ in prior.rank(c.patient, 10)] for c in load_phenopackets(cases)]
    rows = (tmp_path / "prior.jsonl").read_text().splitlines()
    got = [[e["id"] for e in json.loads(line)["ranking"]] for line in rows]
    assert got == want
    uniform = PhenotypeRanker(hpo).fit()
    assert want != [[d for d, _, _ in uniform.rank(c.patient, 10)] for c in load_phenopackets(cases)]
    (out / "model" / "synthdx_task.json").write_text(json.dumps(spec))
    # a rerun reuses every stage's output and gives the same numbers
    again = run_rare_ddx(cfg, out)
    assert again["model_cases"] == result["model_cases"]
    # the same directory with another config is refused before any work (its outputs would be reused)
    from synthdx.errors import ConfigError

    other = cfg.model_copy(update={"rerank": cfg.rerank.model_copy(update={"top_k": 12})})
    with pytest.raises(ConfigError, match="rerank.top_k"):
        run_rare_ddx(other, out)


def test_split_tuning_cases_sets_real_cases_apart(tmp_path):
    from synthdx.errors import ConfigError
    from synthdx.experiments.rare_ddx import split_tuning_cases

    cases = [SimpleNamespace(id=f"case_{i}") for i in range(30)]
    tuning, rest = split_tuning_cases(cases, 10, "s", "cases.zip", by="cases")
    assert len(tuning) == 10 and len(rest) == 20 and not {c.id for c in tuning} & {c.id for c in rest}
    assert [c.id for c in rest] == [c.id for c in cases if c not in tuning]  # the rest keep their order
    # the last 10 by hash: the scored sample (first N by hash) is the same as without tuning cases
    assert [c.id for c in hash_sample(rest, 5, "s")] == [c.id for c in hash_sample(cases, 5, "s")]
    assert split_tuning_cases(list(reversed(cases)), 10, "s", "x", by="cases")[0] == tuning  # not file order
    assert split_tuning_cases(cases, None, "s", "x") == ([], cases)
    with pytest.raises(ConfigError, match="cases.zip has 30 labelled cases"):
        split_tuning_cases(cases, 30, "s", "cases.zip")


def test_split_tuning_cases_by_publication():
    """Whole publications until there are enough cases: no scored case shares one with a tuning case."""
    from synthdx.experiments.rare_ddx import split_tuning_cases

    cases = [SimpleNamespace(id=f"c{p}_{i}", patient=SimpleNamespace(pmids=(f"PMID:{p}",)))
             for p in range(12) for i in range(p % 3 + 1)]  # 12 publications of 1-3 cases
    tuning, rest = split_tuning_cases(cases, 5, "s", "cases.zip")
    pubs_t = {c.patient.pmids[0] for c in tuning}
    assert len(tuning) >= 5 and not pubs_t & {c.patient.pmids[0] for c in rest}
    assert len(tuning) - 5 < 3  # it stops at the first publication that reaches 5 cases
    assert all(sum(c.patient.pmids[0] == p for c in tuning) == p_count
               for p, p_count in ((p, sum(c.patient.pmids[0] == p for c in cases)) for p in pubs_t))
    again = split_tuning_cases(list(reversed(cases)), 5, "s", "x")[0]  # not file order
    assert {c.id for c in again} == {c.id for c in tuning}


def tiny_tuning_config(tmp_path, tiny_model_dir, zero_shot: bool):
    """The CPU configuration cut to the tiny model: 14 cases from 14 publications, 10 of them set apart
    as real tuning cases (whole publications), so 4 are scored."""
    from synthdx.config import load_config

    path = tmp_path / "cases.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(14):  # one publication each: tuning cases are set apart by publication
            packet = marfan_packet(f"PMID_{i}_x")
            packet["metaData"]["externalReferences"][0]["id"] = f"PMID:{i}"
            z.writestr(f"FBN1/PMID_{i}_x.json", json.dumps(packet))
    return load_config(Path(__file__).resolve().parents[1] / "configs" / "rare-ddx-cpu.yaml", [
        f"data.path={path}", "data.max_model_cases=null", "synthetic.n_diseases=3", "synthetic.validation_patients=10",
        f"train.model={tiny_model_dir}", "train.max_steps=1", f"eval.zero_shot={str(zero_shot).lower()}",
        "eval.n_resamples=100", "eval.constrained_beam=0", "rerank.tuning_cases=10"])


def test_fusion_weight_chosen_on_real_tuning_cases(tmp_path, tiny_model_dir):
    """rerank.tuning_cases: the weight is chosen on real cases that are never scored, and the report,
    the metrics and the model's task file say so."""
    from synthdx.experiments.rare_ddx import run_rare_ddx

    cfg = tiny_tuning_config(tmp_path, tiny_model_dir, zero_shot=True)
    out = tmp_path / "run"
    result = run_rare_ddx(cfg, out)
    assert result["all_cases"]["knowledge ranker"]["n"] == 14 and result["model_cases"]["knowledge ranker"]["n"] == 4
    metrics = json.loads((out / "metrics.json").read_text())
    tuned = set(metrics["extra"]["data"]["tuning_cases"])
    scored = {json.loads(line)["id"] for line in (out / "predictions" / "model.jsonl").read_text().splitlines()}
    assert len(tuned) == 10 and len(scored) == 4 and not tuned & scored
    assert set(json.loads((out / "data" / "scores_model_tuning.json").read_text())) == tuned
    report = (out / "report.md").read_text()
    assert "Fusion weights tried on real tuning cases" in report and "chosen on 10 labelled real cases" in report
    spec = json.loads((out / "model" / "synthdx_task.json").read_text())
    assert spec["rerank"]["weight_chosen_on"].startswith("10 real tuning cases")
    # the base model's weight is chosen on the same tuning cases, and each fine-tuned system is paired
    # with the base model's system of the same kind (what the synthetic training adds)
    assert set(json.loads((out / "data" / "scores_zero_shot_tuning.json").read_text())) == tuned
    base = [c for c in result["paired"] if c["system_b"].startswith("base model zero-shot")]
    assert [(c["system_a"].split(" (")[0], c["system_b"].split(" (")[0]) for c in base] == [
        ("fine-tuned model alone", "base model zero-shot alone"),
        ("fine-tuned model + ranker", "base model zero-shot + ranker")]
    assert all(c["mcnemar"]["n"] == 4 for c in base)
    # each pair is also tested by resampling whole publications (the scored cases' PMIDs)
    assert all(c["top1_by_publication"]["n"] == 4 and 1 <= c["top1_by_publication"]["n_groups"] <= 4
               for c in result["paired"])
    assert "publications resampled" in report
