"""The rare-disease experiment, end to end: synthetic patients from HPO annotations -> fine-tuned
model -> rankings of real published cases (phenopacket-store) -> scores, next to the knowledge
ranker and published figures.

How the model ranks: retrieve-then-rerank (`infer.rerank`). The knowledge ranker scores every
candidate disease; its top K are scored by the model (log-probability of each disease name); the
model's ranking of those K, then the ranker's order beyond K. "model + ranker" adds the two scores
with a weight chosen on held-out synthetic patients (never on real cases). Every output id is a
candidate by construction. The ranker's prior over diseases is `knowledge.prior` (uniform, as
LIRICAL, or publications: `PhenotypeRanker(prior=...)`); the same ranker with the other prior is a
reference, reported and paired with every model system.

Calibration: each system's top-1 confidence (its scores' softmax over the top K, at its first-ranked
disease) against whether that disease is the gold one, before and after temperature scaling fitted
on the held-out synthetic validation patients (`calibration_report`).

The real cases are only ever evaluated on: nothing is trained or tuned on them. Every stage writes
its output into the run directory and is skipped when that output is there, so an interrupted run
resumes (training from its checkpoint).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import RareDdxConfig
from ..errors import ConfigError
from ..io import read_jsonl, write_json, write_jsonl
from ..patients import Case
from ..progress import StageTimer, console, log, make_progress, run_log
from ..records import Record
from ..splits import hash_bucket, publication_groups
from ..evaluate.contamination import guard_contamination
from ..provenance import write_provenance
from .common import claim_run_dir, hardware, train_or_reuse

# Reese et al. 2024, AJHG: 5,213 phenopacket-store cases (not the same cases as here)
PUBLISHED = {
    "Exomiser (Reese et al. 2024)": {"published": {"cases": "5,213 published", "n": 5213, "top1": "0.355"}},
    "GPT-4o (Reese et al. 2024)": {"published": {"cases": "5,213 published", "n": 5213, "top1": "0.236"}},
}


def run_rare_ddx(cfg: RareDdxConfig, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with run_log(out / "run.log"):
        return _run(cfg, out)


def _say(msg: str) -> None:
    console.print(msg)
    log.info(msg)


def _write_cases(path: Path, cases: Sequence[Case]) -> None:
    write_jsonl(path, (c.to_dict() for c in cases))


def _read_cases(path: Path) -> list[Case]:
    return [Case.from_dict(row) for _, row in read_jsonl(path)]


def hash_sample(cases: Sequence[Case], n: int | None, salt: str) -> list[Case]:
    """`n` cases chosen by the hash of their id (all when n is None): a fixed sample that does not
    depend on file order."""
    if n is None or n >= len(cases):
        return list(cases)
    return sorted(cases, key=lambda c: hash_bucket(c.id, salt))[:n]


def _retrieve(ranker, cases: Sequence[Case], k: int, leave_out: bool) -> list[tuple[list[str], np.ndarray, float]]:
    """Per case: the ranker's top-k ids, their scores, and the gold's rank over all candidates."""
    out = []
    for case, score in zip(cases, ranker.scores_many((c.patient for c in cases), leave_out)):
        top = np.argsort(-score, kind="stable")[:k]
        out.append(([ranker.candidates_[i] for i in top], score[top], ranker.gold_rank(score, case.gold or ())))
    return out


PRIOR_RANKER = "knowledge ranker + publication prior (reference)"
UNIFORM_RANKER = "knowledge ranker, uniform prior (reference)"


def reference_ranker(prior: str) -> tuple[str, str]:
    """(the reference ranker's name, its prior): the one with the prior the experiment's ranker lacks."""
    return (PRIOR_RANKER, "publications") if prior == "uniform" else (UNIFORM_RANKER, "uniform")


def union_candidates(retrieved, *more) -> list[list[str]]:
    """Per case, the ids the model must score: the union of its top K in each retrieval given
    (with and without its own publication), so one scoring pass serves every variant."""
    lists = [retrieved] + [m for m in more if m is not None]
    return [list(dict.fromkeys(i for r in rows for i in r[0])) for rows in zip(*lists)]


def reranked_gold_rank(top_ids: Sequence[str], fused: np.ndarray, gold: Sequence[str], ranker_rank: float) -> float:
    """The gold's rank when the top K are reordered by `fused` and the rest keep the ranker's order:
    its position among the K, or its ranker rank (> K) when retrieval missed it."""
    order = np.argsort(-np.asarray(fused), kind="stable")
    gold = set(gold)
    for pos, i in enumerate(order, 1):
        if top_ids[i] in gold:
            return float(pos)
    return ranker_rank


def _load_for_scoring(model_path: str):
    """(tokenizer, model on the default device prepared for inference, the autocast dtype: bf16
    where the hardware runs it natively)."""
    from ..models.inference import prepare_for_inference
    from ..models.loading import default_device, load_causal_lm, load_tokenizer, pick_dtype

    device = default_device()
    model = load_causal_lm(model_path, device=device)
    return load_tokenizer(model_path), model, prepare_for_inference(model, pick_dtype(device))


SCORE_CHUNK = 100
"""Cases scored between two writes of a score cache: an interrupted scoring run loses at most these."""


def _model_scores(model_path: str, task, texts: list[str], cand_lists: list[list[str]], cache: Path,
                  ids: list[str], desc: str) -> list[dict[str, float]]:
    """{disease id: model log-probability} per text, cached in `cache` (JSON by id), written every
    `SCORE_CHUNK` texts, so a resumed run scores only what is not there yet."""
    from ..infer.rerank import score_names

    stored = json.loads(cache.read_text()) if cache.exists() else {}
    todo = [j for j, (i, c) in enumerate(zip(ids, cand_lists)) if not (i in stored and set(c) <= set(stored[i]))]
    if not todo:
        return [stored[i] for i in ids]
    tok, model, autocast = _load_for_scoring(model_path)
    n_cut = 0
    with make_progress() as bar:
        t = bar.add_task(desc, total=len(todo), info="")
        for start in range(0, len(todo), SCORE_CHUNK):
            chunk = todo[start:start + SCORE_CHUNK]
            scores, truncated = score_names(model, tok, task, [texts[j] for j in chunk],
                                            [cand_lists[j] for j in chunk], autocast_dtype=autocast,
                                            progress=lambda n: bar.advance(t, n))
            for j, sc in zip(chunk, scores):
                new = {c: round(float(s), 5) for c, s in zip(cand_lists[j], sc)}
                stored[ids[j]] = {**stored.get(ids[j], {}), **new}
            n_cut += sum(truncated)
            write_json(cache, stored)
    if n_cut:
        _say(f"{desc}: {n_cut} of {len(todo)} summaries were longer than {task.max_text_tokens} "
             "tokens and were cut")
    return [stored[i] for i in ids]


def _constrained_search(model_path: str, task, texts: list[str], ids: list[str], beam: int,
                        cache: Path) -> tuple[list[list[str]], float]:
    """Per text, the fine-tuned model's `beam` best candidates by constrained decoding over every
    candidate name (`infer.name_search`), and the seconds it took per text; cached in `cache`."""
    import time

    from ..infer.name_search import NameTrie, search_names

    if cache.exists():
        stored = json.loads(cache.read_text())
        if stored.get("beam") == beam and all(i in stored["found"] for i in ids):
            return [stored["found"][i] for i in ids], stored["seconds_per_case"]
    tok, model, autocast = _load_for_scoring(model_path)
    trie = NameTrie.for_task(task, tok)
    start = time.perf_counter()
    with make_progress() as bar:
        t = bar.add_task(f"constrained decoding, beam {beam}", total=len(texts), info="")
        found, _ = search_names(model, tok, task, texts, trie, beam, autocast_dtype=autocast,
                                progress=lambda n: bar.advance(t, n))
    per_case = (time.perf_counter() - start) / max(len(texts), 1)
    rows = {i: [c for c, _ in f] for i, f in zip(ids, found)}
    write_json(cache, {"beam": beam, "seconds_per_case": round(per_case, 4), "found": rows})
    return [rows[i] for i in ids], per_case


def _fused_ranks(retrieved, model_scores: list[dict[str, float]], golds, weight: float) -> list[float]:
    from ..infer.rerank import fuse

    ranks = []
    for (top_ids, top_scores, ranker_rank), ms, gold in zip(retrieved, model_scores, golds):
        fused = fuse(top_scores, np.array([ms[d] for d in top_ids]), weight)
        ranks.append(reranked_gold_rank(top_ids, fused, gold, ranker_rank))
    return ranks


def choose_weight(retrieved, model_scores, golds, weights: Sequence[float], n_resamples: int = 1000,
                  seed: int = 0, groups: Sequence[str] | None = None) -> tuple[float, dict]:
    """The fusion weight with the best top-1 (then MRR) on the held-out patients or cases given
    (synthetic validation patients, or real tuning cases), and a table of each weight's top-1, MRR and
    `chosen_share`: the share of bootstrap resamples of them in which it would have been chosen. A
    choice made in few resamples rests on a handful of patients. `groups` (real cases: each one's
    publication) resamples whole groups, since the cases of one publication are alike."""
    from ..evaluate.bootstrap import group_rows, resampled_sums

    ranks = np.array([_fused_ranks(retrieved, model_scores, golds, w) for w in weights], dtype=float)
    hit, rr = (ranks == 1).astype(float), 1.0 / ranks
    table = {str(w): _quick(r) for w, r in zip(weights, ranks)}
    best = max(weights, key=lambda w: (table[str(w)]["top1"], table[str(w)]["mrr"]))
    counts = np.zeros(len(weights))
    n = ranks.shape[1]
    if n and groups is None:
        idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
        for top1, mrr in zip(hit[:, idx].mean(axis=2).T, rr[:, idx].mean(axis=2).T):
            counts[max(range(len(weights)), key=lambda i: (top1[i], mrr[i]))] += 1
    elif n:
        # every weight's hits and reciprocal ranks summed per group, then over the drawn groups: within
        # a resample all weights share one denominator, so sums rank the weights as means would
        k = len(weights)
        sums = resampled_sums(group_rows(np.concatenate([hit, rr]).T, groups), n_resamples, seed)
        for top1, mrr in zip(sums[:, :k], sums[:, k:]):
            counts[max(range(k), key=lambda i: (top1[i], mrr[i]))] += 1
    for w, c in zip(weights, counts):
        table[str(w)]["chosen_share"] = float(c / n_resamples) if n else float("nan")
    return best, table


def system_scores(retrieved, model_scores, weight: float) -> list[np.ndarray]:
    """Per case, the scores a system ranks its top K by: the ranker's log-likelihood ratios
    (`model_scores` None), or `fuse` of them with the model's log-probabilities (weight inf: the
    model alone, ties broken by the ranker)."""
    from ..infer.rerank import fuse

    if model_scores is None:
        return [np.asarray(top_scores, dtype=np.float64) for _, top_scores, _ in retrieved]
    return [fuse(top_scores, np.array([ms[d] for d in top_ids]), weight)
            for (top_ids, top_scores, _), ms in zip(retrieved, model_scores)]


def _ranking_rows(ids, retrieved, model_scores, weight, names) -> list[dict]:
    from ..evaluate.calibration import top1_confidence
    from ..infer.rerank import ranking_entries

    rows = []
    for cid, (top_ids, _, _), sc in zip(ids, retrieved, system_scores(retrieved, model_scores, weight)):
        rows.append({"id": cid, "ranking": ranking_entries(top_ids, sc, names),
                     "top1_confidence": round(top1_confidence(sc), 6)})
    return rows


TEMPERATURE_BOUNDS = (0.01, 100.0)
"""The range searched for the temperature; a fit at its edge is flagged in the report."""


@dataclass
class CalibrationInput:
    """One ranking system's top-1 confidences to assess: the scores of the top K on the real cases
    and on the held-out synthetic validation patients (where the temperature is fitted), and
    whether the gold disease is ranked first on each."""

    name: str
    real_scores: list[np.ndarray]
    real_correct: list[bool]
    val_scores: list[np.ndarray]
    val_correct: list[bool]
    main: bool = True
    """Drawn in the reliability diagrams (the own-publication-left-out variants are table rows only)."""


def calibration_report(inputs: Sequence[CalibrationInput], ids: Sequence[str], n_bins: int = 10,
                       n_resamples: int = 0, seed: int = 0, groups: Sequence[str] | None = None) -> dict:
    """Per system: reliability, ECE and Brier of the top-1 confidence on the real cases, before and
    after temperature scaling fitted on the synthetic validation patients (and on those patients),
    and every case's confidence and outcome (`cases`), so that each number can be recomputed.
    `groups` (each real case's publication): the ECE intervals resample whole publications."""
    from ..evaluate.calibration import fit_temperature, top1_calibration, top1_confidence

    systems, cases = {}, {"ids": list(ids)}
    lo, hi = TEMPERATURE_BOUNDS
    for inp in inputs:
        t = fit_temperature(inp.val_scores, inp.val_correct, TEMPERATURE_BOUNDS)
        conf = [top1_confidence(sc) for sc in inp.real_scores]
        conf_t = [top1_confidence(sc, t) for sc in inp.real_scores]
        val_conf = [top1_confidence(sc) for sc in inp.val_scores]
        val_conf_t = [top1_confidence(sc, t) for sc in inp.val_scores]
        before = top1_calibration(conf, inp.real_correct, n_bins, n_resamples, seed, groups=groups)
        after = top1_calibration(conf_t, inp.real_correct, n_bins, n_resamples, seed, groups=groups)
        systems[inp.name] = {
            **before, "temperature": t, "temperature_at_bound": bool(t <= lo * 1.0001 or t >= hi * 0.9999),
            "scaled": after, "main": inp.main,
            "validation": {"n": len(val_conf), "top1": float(np.mean(inp.val_correct)),
                           "ece": top1_calibration(val_conf, inp.val_correct, n_bins)["ece"],
                           "ece_scaled": top1_calibration(val_conf_t, inp.val_correct, n_bins)["ece"]},
        }
        cases[inp.name] = {"confidence": [round(c, 6) for c in conf],
                           "confidence_scaled": [round(c, 6) for c in conf_t],
                           "correct": [bool(c) for c in inp.real_correct]}
    return {"n_bins": n_bins, "fitted_on": "held-out synthetic validation patients",
            "temperature_bounds": list(TEMPERATURE_BOUNDS), "systems": systems, "cases": cases}


@dataclass
class RareDdxData:
    """The data stages' output: knowledge, candidates, the knowledge ranker and the task; the real
    cases and the sample the model is scored on (with their rendered summaries); the synthetic
    training and validation patients and the training records, checked by the contamination guard."""

    knowledge: object
    candidates: list[str]
    ranker: object
    task: object
    cases: list[Case]
    sample: list[Case]
    train_cases: list[Case]
    val_cases: list[Case]
    records: list[Record]
    s_texts: list[str]
    s_ids: list[str]
    synthetic_seed: int
    tuning: list[Case] = field(default_factory=list)  # real cases the fusion weight is chosen on, never scored

    def text_of(self, case: Case, seed: int) -> str:
        from ..tasks.rare_ddx_render import render_summary

        return render_summary(case.patient, self.knowledge, seed=seed)

    def validation_texts(self) -> list[str]:
        return [self.text_of(c, self.synthetic_seed + 1) for c in self.val_cases]


def validation_draw(syn) -> str:
    """How the validation patients' diseases are drawn: as set, or by default uniformly when the
    training diseases are a random sample and in proportion to publications when the best-studied."""
    return syn.validation_diseases or ("uniform" if syn.diseases == "random" else "publications")


def pick_diseases(knowledge, usable: Sequence[str], syn, rng: random.Random) -> tuple[list[str], list[str]]:
    """(training diseases, validation diseases). Training: every usable candidate, or
    `syn.n_diseases` of them, a random sample or the best-studied. Validation
    (`syn.validation_patients`, one patient each) is drawn from all usable candidates, seen in
    training or not, as real cases are: uniformly, or in proportion to 1 + the disease's
    publications (`validation_draw`)."""
    n, n_val = syn.n_diseases, min(syn.validation_patients, len(usable))
    pubs = np.array([len(knowledge.diseases[d].publications) for d in usable], dtype=float)
    if syn.diseases == "random":
        train = sorted(rng.sample(list(usable), n)) if n and n < len(usable) else list(usable)
    else:
        order = sorted(range(len(usable)), key=lambda i: (-pubs[i], usable[i]))  # ties: by id, reproducibly
        train = sorted(usable[i] for i in order[:n]) if n else list(usable)
    if validation_draw(syn) == "uniform":
        return train, sorted(rng.sample(list(usable), n_val))
    p = (1.0 + pubs) / (1.0 + pubs).sum()
    val = np.random.default_rng(rng.randrange(2**32)).choice(len(usable), n_val, replace=False, p=p)
    return train, sorted(usable[i] for i in val)


def prepare_rare_ddx_data(cfg: RareDdxConfig, out: Path, timer: StageTimer) -> RareDdxData:
    """Knowledge and ranker, the real cases and their model sample, the synthetic patients (cached in
    `out/data`), their rendered training records, and the contamination guard."""
    from ..baselines.phenotype_ranker import PhenotypeRanker
    from ..datasets.phenopackets import load_phenopackets
    from ..knowledge.hpo import load_hpo
    from ..synth.hpo_patients import HPOPatientGenerator
    from ..tasks.rare_ddx import rare_ddx_task
    from ..tasks.rare_ddx_render import render_summary

    data_dir = out / "data"
    with timer.stage("HPO knowledge and the knowledge ranker"):
        knowledge = load_hpo()
        candidates = knowledge.candidates(cfg.knowledge.candidates, cfg.knowledge.branch)
        ranker = PhenotypeRanker(knowledge, candidate_ids=candidates, prior=cfg.knowledge.prior).fit()
        task = rare_ddx_task(knowledge, candidates, cfg.train.max_text_tokens)
        _say(f"HPO {knowledge.version}: {len(candidates)} candidate diseases")

    with timer.stage("load real cases"):
        cases = [c for c in load_phenopackets(cfg.data.path) if c.gold]
        if not cases:
            raise ValueError(f"{cfg.data.path}: no case has a diagnosis to score against")
        tuning, cases_left = split_tuning_cases(cases, cfg.rerank.tuning_cases, cfg.data.sample_salt,
                                                cfg.data.path, cfg.rerank.tuning_split)
        sample = hash_sample(cases_left, cfg.data.max_model_cases, cfg.data.sample_salt)
        write_json(data_dir / "model_cases.json", {"rule": f"first {cfg.data.max_model_cases} by sha256("
                                                           f"'{cfg.data.sample_salt}:'+id)", "ids": [c.id for c in sample],
                                                   "tuning_ids (never scored)":
                                                       [c.id for c in tuning]})
        _say(f"{len(cases)} labelled cases; the model systems are scored on {len(sample)} of them")

    with timer.stage("generate synthetic patients"):
        train_path, val_path = data_dir / "synthetic_train.jsonl", data_dir / "synthetic_validation.jsonl"
        if train_path.exists() and val_path.exists():
            train_cases, val_cases = _read_cases(train_path), _read_cases(val_path)
        else:
            rng = random.Random(cfg.synthetic.seed)
            gen = HPOPatientGenerator(knowledge, seed=cfg.synthetic.seed, **cfg.synthetic.generator)
            usable = gen.usable_diseases(candidates)  # a disease needs a feature with frequency > 0
            train_diseases, val_diseases = pick_diseases(knowledge, usable, cfg.synthetic, rng)
            train_cases = gen.generate(train_diseases, cfg.synthetic.patients_per_disease)
            # validation patients from another seed, so none repeats a training patient
            val_gen = HPOPatientGenerator(knowledge, seed=cfg.synthetic.seed + 1, **cfg.synthetic.generator)
            val_cases = val_gen.generate(sorted(val_diseases), 1)
            _write_cases(train_path, train_cases)
            _write_cases(val_path, val_cases)
        _say(f"{len(train_cases)} training patients ({len({c.gold[0] for c in train_cases})} diseases), "
             f"{len(val_cases)} validation patients")

    def text_of(case: Case, seed: int) -> str:
        return render_summary(case.patient, knowledge, seed=seed)

    s_texts, s_ids = [text_of(c, 0) for c in sample], [c.id for c in sample]
    records = [Record(c.id, text_of(c, cfg.synthetic.seed), [c.gold[0]]) for c in train_cases]
    with timer.stage("contamination guard"):
        guard_contamination(records, [Record(i, t, None) for i, t in zip(s_ids, s_texts)],
                            what="the real cases the model is scored on (against the synthetic training patients)")

    return RareDdxData(knowledge, candidates, ranker, task, cases, sample, train_cases, val_cases, records,
                       s_texts, s_ids, cfg.synthetic.seed, tuning)


def split_tuning_cases(cases: Sequence[Case], n: int | None, salt: str, path,
                       by: str = "publications") -> tuple[list[Case], list[Case]]:
    """(tuning cases, the others in their order): real cases to choose the fusion weight on, kept out
    of every sample the model is scored on. `by` "publications": whole publication groups, the last in
    the hash order of their names, until there are at least `n` cases, so that no scored case shares a
    publication with a tuning one; "cases": the last `n` cases in the hash order of ids."""
    if not n:
        return [], list(cases)
    if n >= len(cases):
        raise ConfigError(f"rerank.tuning_cases={n}: {path} has {len(cases)} labelled cases; "
                          "some must be left to score")
    if by == "cases":
        tuning = sorted(cases, key=lambda c: hash_bucket(c.id, salt))[-n:]
    else:
        members: dict[str, list[Case]] = {}
        for case, group in zip(cases, publication_groups(cases)):
            members.setdefault(group, []).append(case)
        tuning = []
        for group in sorted(members, key=lambda g: hash_bucket(g, salt), reverse=True):
            if len(tuning) >= n:
                break
            tuning += members[group]
        if len(tuning) >= len(cases):
            raise ConfigError(f"rerank.tuning_cases={n}: the publications of {path} leave no case to score")
    ids = {c.id for c in tuning}
    return tuning, [c for c in cases if c.id not in ids]


def _run(cfg: RareDdxConfig, out: Path) -> dict:
    from ..baselines.phenotype_ranker import PhenotypeRanker
    from ..evaluate.ranking import evaluate_ranking, format_ranking_table

    claim_run_dir(out, cfg)
    timer = StageTimer()
    data_dir, pred_dir = out / "data", out / "predictions"
    k = cfg.rerank.top_k

    d = prepare_rare_ddx_data(cfg, out, timer)
    knowledge, candidates, ranker, task = d.knowledge, d.candidates, d.ranker, d.task
    cases, sample, train_cases, val_cases, records = d.cases, d.sample, d.train_cases, d.val_cases, d.records
    s_texts, s_ids = d.s_texts, d.s_ids

    with timer.stage("fine-tune the model"):
        train_stats = train_or_reuse(records, task, out, cfg.train)

    golds = [list(c.gold) for c in cases]
    cand_set = set(candidates)
    covered = np.array([any(g in cand_set for g in gold) for gold in golds])
    n_obs = [len(c.patient.observed) for c in cases]
    pubs = publication_groups(cases)  # every interval resamples whole publications (evaluate.ranking)
    ev = dict(n_resamples=cfg.eval.n_resamples, seed=cfg.eval.seed)
    systems_all: dict[str, dict] = {}
    sample_idx = {c.id: i for i, c in enumerate(cases)}
    s_golds = [list(c.gold) for c in sample]
    s_cov = np.array([covered[sample_idx[c.id]] for c in sample])
    s_obs = [len(c.patient.observed) for c in sample]
    s_pubs = [pubs[sample_idx[c.id]] for c in sample]
    # the reference: the same ranker with the other prior, on all cases and on the model's cases
    ref_name, ref_prior = reference_ranker(cfg.knowledge.prior)
    ref_rows: dict[str, dict] = {}
    with timer.stage("knowledge ranker on all cases"):
        modes = [("knowledge ranker", ranker, False)]
        ref = PhenotypeRanker(knowledge, candidate_ids=candidates, prior=ref_prior).fit()
        modes.append((ref_name, ref, False))
        if cfg.eval.leave_out_own_publication:
            sole = PhenotypeRanker(knowledge, candidate_ids=candidates, leave_out="sole",
                                   prior=cfg.knowledge.prior).fit()
            modes += [("knowledge ranker, own publication left out", ranker, True),
                      ("knowledge ranker, own publication left out (sole)", sole, True),
                      (f"{ref_name}, own publication left out", ref, True)]
        for name, rk, leave in modes:
            ranks = [rk.gold_rank(s, g) for s, g in zip(rk.scores_many((c.patient for c in cases), leave), golds)]
            systems_all[name] = evaluate_ranking(ranks, covered, n_obs, groups=pubs, **ev)
            if rk is ref:
                s_ranks = [ranks[sample_idx[c.id]] for c in sample]
                ref_rows[name] = evaluate_ranking(s_ranks, s_cov, s_obs, groups=s_pubs, **ev)
                if not leave:
                    ref_hit = np.asarray(s_ranks) == 1
    v_golds = [list(c.gold) for c in val_cases]
    v_texts, v_ids = d.validation_texts(), [c.id for c in val_cases]
    t_texts, t_ids = [d.text_of(c, 0) for c in d.tuning], [c.id for c in d.tuning]  # real tuning cases, if any
    t_golds = [list(c.gold) for c in d.tuning]
    t_pubs = publication_groups(d.tuning)  # the weight's resamples draw whole publications

    with timer.stage("retrieve the top candidates"):
        retrieved = {"full": _retrieve(ranker, sample, k, False), "val": _retrieve(ranker, val_cases, k, False)}
        if d.tuning:
            retrieved["tune"] = _retrieve(ranker, d.tuning, k, False)
        if cfg.eval.leave_out_own_publication:
            retrieved["left_out"] = _retrieve(ranker, sample, k, True)
        s_cands = union_candidates(retrieved["full"], retrieved.get("left_out"))
        v_cands = [r[0] for r in retrieved["val"]]

    systems: dict[str, dict] = {"knowledge ranker": evaluate_ranking(
        [r[2] for r in retrieved["full"]], s_cov, s_obs, groups=s_pubs, **ev)}
    if "left_out" in retrieved:
        systems["knowledge ranker, own publication left out"] = evaluate_ranking(
            [r[2] for r in retrieved["left_out"]], s_cov, s_obs, groups=s_pubs, **ev)
    systems.update(ref_rows)
    synthetic_scores: dict[str, dict] = {"knowledge ranker": _quick(
        [r[2] for r in retrieved["val"]])}
    weights_table = {}
    v_ranker_correct = [r[2] == 1 for r in retrieved["val"]]
    v_ranker_scores = system_scores(retrieved["val"], None, 0.0)
    cal_inputs = [CalibrationInput("knowledge ranker", system_scores(retrieved["full"], None, 0.0),
                                   [r[2] == 1 for r in retrieved["full"]], v_ranker_scores, v_ranker_correct)]
    if "left_out" in retrieved:
        cal_inputs.append(CalibrationInput(
            "knowledge ranker, own publication left out", system_scores(retrieved["left_out"], None, 0.0),
            [r[2] == 1 for r in retrieved["left_out"]], v_ranker_scores, v_ranker_correct, main=False))
    models = [("fine-tuned model", str(out / "model"), "model")]
    if cfg.eval.zero_shot:
        models.append(("base model zero-shot", cfg.train.model, "zero_shot"))
    chosen, model_ranks = {}, {}
    for label, path, key in models:
        with timer.stage(f"{label} reranks the top {k}"):
            v_ms = _model_scores(path, task, v_texts, v_cands, data_dir / f"scores_{key}_validation.json",
                                 v_ids, f"{label}: synthetic validation")
            s_ms = _model_scores(path, task, s_texts, s_cands, data_dir / f"scores_{key}_cases.json",
                                 s_ids, f"{label}: real cases")
            if d.tuning:  # chosen on real cases set apart for it; the synthetic patients only report
                t_ms = _model_scores(path, task, t_texts, [r[0] for r in retrieved["tune"]],
                                     data_dir / f"scores_{key}_tuning.json", t_ids, f"{label}: real tuning cases")
                w, table = choose_weight(retrieved["tune"], t_ms, t_golds, cfg.rerank.weights, groups=t_pubs)
            else:
                w, table = choose_weight(retrieved["val"], v_ms, v_golds, cfg.rerank.weights)
            weights_table[label] = table
            chosen[label] = w
            synthetic_scores[f"{label} alone"] = _quick(_fused_ranks(retrieved["val"], v_ms, v_golds, float("inf")))
            synthetic_scores[f"{label} + ranker (weight {w:g})"] = _quick(_fused_ranks(retrieved["val"], v_ms,
                                                                                       v_golds, w))
            for variant, ret_key in (("", "full"), (", own publication left out", "left_out")):
                if ret_key not in retrieved:
                    continue
                alone = _fused_ranks(retrieved[ret_key], s_ms, s_golds, float("inf"))
                fused = _fused_ranks(retrieved[ret_key], s_ms, s_golds, w)
                if not variant:  # the full-knowledge systems, for the paired tests
                    model_ranks[key] = {f"{label} alone": alone, f"{label} + ranker (weight {w:g})": fused}
                for sys_name, weight, ranks in ((f"{label} reranks top {k}{variant}", float("inf"), alone),
                                                (f"{label} + ranker (weight {w:g}){variant}", w, fused)):
                    systems[sys_name] = evaluate_ranking(ranks, s_cov, s_obs, groups=s_pubs, **ev)
                    cal_inputs.append(CalibrationInput(
                        sys_name, system_scores(retrieved[ret_key], s_ms, weight), [r == 1 for r in ranks],
                        system_scores(retrieved["val"], v_ms, weight),
                        [r == 1 for r in _fused_ranks(retrieved["val"], v_ms, v_golds, weight)], main=not variant))
            if key == "model":
                paired_ranks = dict(model_ranks[key])
                names = task.names
                write_jsonl(pred_dir / "model.jsonl", _ranking_rows(s_ids, retrieved["full"], s_ms, float("inf"), names))
                write_jsonl(pred_dir / "model_ranker.jsonl", _ranking_rows(s_ids, retrieved["full"], s_ms, w, names))
                write_jsonl(pred_dir / "knowledge_ranker.jsonl",
                            _ranking_rows(s_ids, retrieved["full"], None, 0.0, names))
                store_rerank_settings(out / "model", k, w, cfg.knowledge.prior, chosen_on=weight_chosen_on(d))

    constrained = None
    if cfg.eval.constrained_beam:
        from ..infer.name_search import ranks_with_fill

        beam = cfg.eval.constrained_beam
        with timer.stage(f"fine-tuned model: constrained decoding over all {len(candidates)} candidates"):
            found, per_case = _constrained_search(str(out / "model"), task, s_texts, s_ids, beam,
                                                  data_dir / "constrained_model_cases.json")
            orders = ([ranker.candidates_[i] for i in np.argsort(-s, kind="stable")]
                      for s in ranker.scores_many(c.patient for c in sample))
            ranks = [ranks_with_fill(f, order, g) for f, order, g in zip(found, orders, s_golds)]
            name = f"fine-tuned model alone, constrained decoding over all candidates (beam {beam})"
            systems[name] = evaluate_ranking(ranks, s_cov, s_obs, groups=s_pubs, **ev)
            paired_ranks[name] = ranks
            constrained = {"system": name, "beam": beam, "seconds_per_case": per_case,
                           "candidates": len(candidates)}

    with timer.stage("calibration of the top-1 confidence"):
        calibration = calibration_report(cal_inputs, s_ids, n_resamples=cfg.eval.n_resamples, seed=cfg.eval.seed,
                                         groups=s_pubs)
        _write_calibration_cases(pred_dir / "calibration.jsonl", calibration, s_golds, s_pubs)

    with timer.stage("paired tests and fidelity"):
        from ..evaluate.fidelity import fidelity_report

        def pair(name: str, hit: np.ndarray, other: str, other_hit: np.ndarray) -> dict:
            return paired_top1(name, hit, other, other_hit, s_pubs, **ev)

        ranker_hit = np.array([r[2] == 1 for r in retrieved["full"]])
        paired = [pair(name, np.asarray(ranks) == 1, other, other_hit) for name, ranks in paired_ranks.items()
                  for other, other_hit in (("knowledge ranker", ranker_hit), (ref_name, ref_hit))]
        # What the synthetic training adds: each fine-tuned system against the same system built on the
        # base model it started from (alone vs alone, fused vs fused, each with its own chosen weight).
        if "zero_shot" in model_ranks:
            paired += [pair(name, np.asarray(ranks) == 1, base_name, np.asarray(base_ranks) == 1)
                       for (name, ranks), (base_name, base_ranks)
                       in zip(model_ranks["model"].items(), model_ranks["zero_shot"].items())]
        # The texts are compared, not the labels: with one disease per patient a per-label prevalence
        # table would be a row for each of thousands of diseases, so neither side carries labels here.
        fidelity = fidelity_report([Record(r.id, r.text, None) for r in records],
                                   [Record(i, t, None) for i, t in zip(s_ids, s_texts)], seed=cfg.eval.seed)

    with timer.stage("report"):
        from ..synth.hpo_patients import patient_shape, shape_by_richness

        trained = {c.gold[0] for c in train_cases}
        shapes = {"synthetic (training)": patient_shape(train_cases, knowledge),
                  "real (all cases)": patient_shape(cases, knowledge)}
        richness = {"synthetic (training)": shape_by_richness(train_cases, knowledge),
                    "real (all cases)": shape_by_richness(cases, knowledge)}
        result = _report(cfg, out, systems_all, systems, synthetic_scores, weights_table, shapes, richness,
                         chosen, paired, fidelity, calibration, {
            "data": {"cases": cfg.data.path, "labelled_cases": len(cases), "model_cases": len(sample),
                     "candidates": len(candidates), "hpo_version": knowledge.version,
                     "synthetic_training_patients": len(train_cases),
                     "synthetic_training_diseases": len(trained),
                     # a diagnostic of the disease choice, read after training (never used by it)
                     "scored_cases_with_trained_disease": float(np.mean([
                         bool(set(c.gold) & trained) for c in sample])),
                     "synthetic_validation_patients": len(val_cases),
                     "tuning_cases": [c.id for c in d.tuning], "tuning_publications": len(set(t_pubs)),
                     "publications": len(set(pubs))},
            "constrained_decoding": constrained,
            "training": train_stats, "timings_seconds": timer.timings, "hardware": hardware()})
        write_provenance(out, config=cfg.model_dump(), data_sources={"real cases": cfg.data.path},
                         seeds={"synthetic": cfg.synthetic.seed, "train": cfg.train.seed, "eval": cfg.eval.seed},
                         models={"base": cfg.train.model, "fine-tuned": str(out / "model")},
                         settings={"hpo_version": knowledge.version, "synthetic": cfg.synthetic.model_dump(),
                                   "rerank": {**cfg.rerank.model_dump(), "chosen_weights": chosen}},
                         timings=timer.timings)
        console.print(format_ranking_table({**{f"{n} [all cases]": s for n, s in systems_all.items()}, **systems}),
                      soft_wrap=True, markup=False)
        for c in paired:
            d = c["top1"]
            g = c["top1_by_publication"]
            console.print(f"{c['system_a']} - {c['system_b']}: top-1 {d['diff']:+.3f} "
                          f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}], p = {d['p_value']:.4f}; publications "
                          f"resampled [{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}], p = {g['p_value']:.4f}", markup=False)
        console.print(f"report: {out / 'report.html'}")
    return result


def _quick(ranks: Sequence[float]) -> dict:
    from ..evaluate.ranking import ranking_metrics

    m = ranking_metrics(ranks)
    return {"top1": m["top1"], "mrr": m["mrr"]}


SYNTHETIC_CHOICE = "held-out synthetic patients (top-1, then MRR)"


def weight_chosen_on(d: RareDdxData) -> str:
    """Where the fusion weight was chosen, in words."""
    return f"{len(d.tuning)} real tuning cases, never scored (top-1, then MRR)" if d.tuning else SYNTHETIC_CHOICE


def store_rerank_settings(model_dir: Path, top_k: int, weight: float, prior: str, task: str = "rare-ddx",
                          chosen_on: str = SYNTHETIC_CHOICE) -> None:
    """How the model ranks, in its task file (read by `synthdx predict --task rare-ddx`): at the top
    of a one-task spec, in the task's own spec of a jointly trained model (`experiments.mixture`)."""
    from ..train.mixture import MULTI_TASK_KIND
    from ..train.sft import TASK_FILE

    path = model_dir / TASK_FILE
    spec = json.loads(path.read_text())
    target = spec["tasks"][task] if spec.get("kind") == MULTI_TASK_KIND else spec
    target["rerank"] = {"top_k": top_k, "weight": None if np.isinf(weight) else weight, "prior": prior,
                        "weight_chosen_on": chosen_on}
    write_json(path, spec)


def paired_top1(system_a: str, hit, system_b: str, other_hit, publications: Sequence[str], **ev) -> dict:
    """Two systems' top-1 hits on the same cases compared: paired bootstrap over cases, over whole
    publications (`publications`: each case's group; its cases are alike, one cohort and one disease,
    so that interval is the one to trust), and the exact McNemar test."""
    from ..evaluate.paired import mcnemar, paired_bootstrap_correct

    return {"system_a": system_a, "system_b": system_b, "top1": paired_bootstrap_correct(hit, other_hit, **ev),
            "top1_by_publication": paired_bootstrap_correct(hit, other_hit, groups=publications, **ev),
            "mcnemar": mcnemar(hit, other_hit), "largest_publications": _largest_publications(hit, other_hit,
                                                                                           publications)}


def _largest_publications(hit, other_hit, publications: Sequence[str], n: int = 3) -> list[dict]:
    """The `n` publications whose cases move the difference most (only A first minus only B first),
    each with its number of cases: shows whether a difference is spread or one cohort's."""
    rows: dict[str, list[int]] = {}
    for a, b, pub in zip(np.asarray(hit, dtype=bool), np.asarray(other_hit, dtype=bool), publications):
        r = rows.setdefault(pub, [0, 0, 0])
        r[0], r[1], r[2] = r[0] + 1, r[1] + int(a and not b), r[2] + int(b and not a)
    top = sorted(rows.items(), key=lambda kv: (-abs(kv[1][1] - kv[1][2]), kv[0]))[:n]
    return [{"publication": pub, "cases": c, "only_a": oa, "only_b": ob} for pub, (c, oa, ob) in top if oa != ob]


def paired_top1_cells(c: dict) -> list[str]:
    """One `paired_top1` comparison as table cells: both top-1s, the difference with its case-level interval
    and p, the publication-level interval and p, McNemar's discordant counts and exact p."""
    from ..evaluate.evidence import p_text, signed

    d, g, m = c["top1"], c["top1_by_publication"], c["mcnemar"]
    return [f"{d['a']:.3f}", f"{d['b']:.3f}", f"{signed(d['diff'])} [{signed(d['ci'][0])}, {signed(d['ci'][1])}]",
            p_text(d["p_value"]), f"[{signed(g['ci'][0])}, {signed(g['ci'][1])}]", p_text(g["p_value"]),
            f"{m['b']} / {m['c']}", p_text(m["p_value"])]


def _paired_section(paired: list[dict]):
    from ..evaluate.ranking_report import Section

    rows = [[f"{c['system_a']} vs {c['system_b']}", *paired_top1_cells(c)] for c in paired]
    groups = paired[0]["top1_by_publication"]["n_groups"] if paired else None
    notes = [f"{c['system_a']} vs {c['system_b']}: the publications that move it most: "
             + ", ".join(f"{p['publication']} {p['only_a'] - p['only_b']:+d} of {p['cases']} cases"
                         for p in c["largest_publications"])
             for c in paired if c["largest_publications"]]
    return Section("Paired comparisons (top-1, same cases)",
                   header=["A vs B", "top-1 A", "top-1 B", "A − B [95% CI], cases resampled", "p",
                           "95% CI, publications resampled", "p", "only A / only B first", "p (McNemar exact)"],
                   rows=rows, num_from=1,
                   text="Both systems rank the same cases, resampled together: single cases, or whole "
                        "publications" + (f" ({groups} here)" if groups else "") + "; McNemar uses the cases where "
                        "exactly one system puts the gold first. Cases of one publication are alike (one cohort, one "
                        "disease, one way of describing them), so the interval and p that resample publications are "
                        "the ones to trust; the case-level ones and McNemar treat every case as independent and are "
                        "too sure."
                        + (" A fine-tuned system against the base model's (zero-shot) system of the same kind "
                           "measures what training on synthetic patients adds."
                           if any("zero-shot" in c["system_b"] for c in paired) else ""), notes=notes)


def _write_calibration_cases(path: Path, calibration: dict, golds: Sequence[Sequence[str]],
                             publications: Sequence[str]) -> None:
    """One row per scored real case: its gold ids, its publication group (what intervals resample)
    and, per system, the top-1 confidence (before and after temperature scaling) and whether the
    first-ranked disease is a gold one."""
    cases = calibration["cases"]
    names = [n for n in cases if n != "ids"]
    write_jsonl(path, ({"id": cid, "gold": list(gold), "publication": pub,
                        "systems": {n: {"confidence": cases[n]["confidence"][i],
                                        "confidence_scaled": cases[n]["confidence_scaled"][i],
                                        "correct": cases[n]["correct"][i]} for n in names}}
                       for i, (cid, gold, pub) in enumerate(zip(cases["ids"], golds, publications))))


def _calibration_section(calibration: dict, top_k: int, n_val: int):
    from ..evaluate.report import _num
    from ..evaluate.plots import reliability_plot
    from ..evaluate.ranking_report import Section
    from ..evaluate.sections import Plot

    def ci(d: dict) -> str:
        lo_hi = d.get("ece_ci")
        return f"{_num(d['ece'])} [{_num(lo_hi[0])}, {_num(lo_hi[1])}]" if lo_hi else _num(d["ece"])

    rows = []
    for name, d in calibration["systems"].items():
        sc, v = d["scaled"], d["validation"]
        rows.append([name, str(d["n"]), _num(d["top1"]), _num(d["confidence"]), ci(d), _num(d["brier"]),
                     f"{d['temperature']:.3g}" + (" (bound)" if d.get("temperature_at_bound") else ""),
                _num(sc["confidence"]), ci(sc), _num(sc["brier"]),
                     f"{_num(v['ece'])} → {_num(v['ece_scaled'])}"])

    def plot(key: str | None, name: str, title: str):
        data = {}
        for n, d in calibration["systems"].items():
            if not d["main"]:
                continue
            r = d[key] if key else d
            data[n] = {"confidence": r["reliability"]["mean_confidence"], "frequency": r["reliability"]["frequency"],
                       "count": r["reliability"]["count"], "ece": r["ece"]}
        return Plot(name, reliability_plot(data, title), alt=title)

    n_cases = max((d["n"] for d in calibration["systems"].values()), default=0)
    return Section(
        "Calibration of the top-1 confidence",
        text=(f"Top-1 confidence: the probability a system gives its first-ranked disease, its scores "
              f"normalised (softmax) over the {top_k} candidates it ranks: the knowledge ranker's posterior from "
              "its log-likelihood ratios, the model's log-probabilities of the disease names, or the fused score. "
              "Correct: a gold disease is ranked first (a case whose gold the ranker did not retrieve is a miss "
              f"for every system). ECE over {calibration['n_bins']} equal-width bins, with a 95% bootstrap "
              "interval over whole publications; Brier = mean (confidence − correct)². Temperature scaling "
              f"divides each system's scores by T before the softmax (the ranking does not change); T minimises "
              f"the log-loss of the top-1 confidence on the {n_val} held-out synthetic validation patients, "
              "never on the real cases."),
        header=["system", "cases", "top-1", "mean confidence", "ECE [95% CI]", "Brier", "T (fitted on synthetic)",
                "mean confidence after T", "ECE after T [95% CI]", "Brier after T",
                "ECE on synthetic validation: before → after T"],
        rows=rows, num_from=1,
        plots=[plot(None, "rare-ddx-reliability", "Top-1 confidence on the real cases"),
               plot("scaled", "rare-ddx-reliability-scaled",
                    "After temperature scaling (T fitted on synthetic patients)")],
        notes=["In the diagrams, 'observed frequency of positives' is the share of cases whose first-ranked "
               "disease is a gold one; the bars below count cases per bin.",
               f"With {n_cases} cases and {calibration['n_bins']} bins, ECE is biased upward (a perfectly calibrated system scores above 0) and its "
               "bootstrap interval is wide; Brier has no binning.",
               "Case-level confidences and outcomes: predictions/calibration.jsonl and metrics.json "
               "(systems.calibration.cases); model.jsonl, model_ranker.jsonl and knowledge_ranker.jsonl carry "
               "each ranking's top1_confidence (before scaling).",
               *([f"T (bound): the fit reached the edge of the searched range {TEMPERATURE_BOUNDS}; at the "
                  f"upper edge, T = {TEMPERATURE_BOUNDS[1]:g}, every case's confidence is flattened to about 1/{top_k}, i.e. the "
                  "system's scores tell nothing on the synthetic patients about whether its first choice is "
                  "right; its low ECE after T is that of a near-constant guess."]
                 if any(d.get("temperature_at_bound") for d in calibration["systems"].values()) else []),
               "Own-publication-left-out rows use the T of the same system with full annotations (synthetic "
               "patients have no publication to leave out)."])


def _report(cfg, out, systems_all, systems, synthetic_scores, weights_table, shapes, richness, chosen, paired,
            fidelity, calibration, extra) -> dict:
    from ..evaluate.evidence import fidelity_section
    from ..evaluate.ranking_report import RANKING_HEADER, Section, ranking_rows, write_ranking_report

    n_model = next(iter(systems.values()))["n"]
    tuned = extra["data"]["tuning_cases"]  # ids of the real cases the fusion weight was chosen on, if any
    sections = [
        Section("Knowledge ranker on all cases", header=RANKING_HEADER,
                rows=ranking_rows({**systems_all, **PUBLISHED}),
                text=(f"LIRICAL-style likelihood-ratio ranker over phenotype.hpoa, prior over diseases: "
                      f"{'uniform' if cfg.knowledge.prior == 'uniform' else '1 + publications cited'} (the "
                      "reference row uses the other prior). 'Own publication left out': "
                      "annotations citing the case's publication are removed for that case (strict: any row "
                      "citing it; sole: rows citing nothing else). Published figures are on another set of "
                      "phenopacket-store cases and quoted for orientation only."),
                notes=["Coverage: share of cases whose gold disease is a candidate (annotated in this HPO "
                       "release); 'all' counts uncovered cases as misses.",
                       f"95% intervals here and below resample whole publications ({extra['data']['publications']} "
                       "among all cases, each with all its cases; "
                       "cases sharing a PMID form one group), not single cases: the cases of one publication "
                       "are one cohort of one disease, described one way, and are not independent."]),
        Section(f"Model and ranker on {n_model} cases", header=RANKING_HEADER,
                rows=ranking_rows(systems),
                text=(f"The knowledge ranker's top {cfg.rerank.top_k} of every candidate are reranked by the model "
                      "(log-probability of each disease name); beyond them the ranker's order stands. "
                      "'+ ranker' adds the ranker's log-posterior over the top K and the model's log-probability "
                      f"times a weight chosen on {'real tuning cases' if tuned else 'held-out synthetic patients'}."),
                notes=["With own publication left out, only retrieval changes: the model's weights were trained "
                       "on patients generated from the full annotations, which flatters the model rows."]
                + _tuning_notes(tuned, extra["data"]["tuning_publications"], cfg.rerank.tuning_split)
                + _constrained_notes(extra.get("constrained_decoding"))),
        _by_terms_section({**{f"{n} (all cases)": v for n, v in systems_all.items() if "left out" not in n},
                           **{f"{n} ({n_model} cases)": v for n, v in systems.items() if "left out" not in n}}),
        Section("Held-out synthetic patients" + ("" if tuned else " (where the fusion weight is chosen)"),
                header=["system", "top-1", "MRR"],
                rows=[[n, f"{d['top1']:.3f}", f"{d['mrr']:.3f}"] for n, d in synthetic_scores.items()],
                text=(f"{extra['data']['synthetic_validation_patients']} patients, one each of diseases drawn "
                      "from all candidates " + ("uniformly" if validation_draw(cfg.synthetic) == "uniform"
                                                else "in proportion to 1 + their publications") + ".")),
        Section("Fusion weights tried on " + ("real tuning cases" if tuned else "synthetic patients"),
                header=["model", "weight", "top-1", "MRR", "chosen in resamples"],
                rows=[[m, w, f"{d['top1']:.3f}", f"{d['mrr']:.3f}", f"{d['chosen_share']:.0%}"]
                      for m, t in weights_table.items() for w, d in t.items()],
                notes=[f"chosen: {m} weight {w:g}" for m, w in chosen.items()]
                + ["'chosen in resamples': how often each weight wins when the patients it is chosen on (real "
                   "tuning cases: their publications, each with all its cases) are resampled with replacement "
                   "(1,000 times); a split vote means the choice is noise."]),
        _paired_section(paired),
        _calibration_section(calibration, cfg.rerank.top_k, extra["data"]["synthetic_validation_patients"]),
        Section("Synthetic patients vs real cases: shape", header=["statistic"] + list(shapes),
                rows=_shape_rows(shapes)),
        _richness_section(richness),
        fidelity_section(fidelity, "rendered summaries of synthetic training patients vs the scored real cases"),
    ]
    reductions = []
    if cfg.data.max_model_cases:
        reductions.append(f"model systems scored on {n_model} cases (a fixed hash sample), the ranker on all")
    if cfg.synthetic.n_diseases:
        how = ("a random sample" if cfg.synthetic.diseases == "random"
               else "the best-studied: most publications cited by their annotations")
        reductions.append(f"training patients for {extra['data']['synthetic_training_diseases']} of "
                          f"{extra['data']['candidates']} candidate diseases ({how}), "
                          f"{cfg.synthetic.patients_per_disease} per disease; "
                          f"{extra['data']['scored_cases_with_trained_disease']:.1%} of the scored cases have a "
                          "gold disease the model saw in training")
    if reductions:
        sections.insert(0, Section("Reductions in this configuration", notes=reductions))
    metrics = {"all_cases": systems_all, "model_cases": systems, "synthetic_validation": synthetic_scores,
               "fusion_weights": weights_table, "shape": shapes, "shape_by_richness": richness, "paired": paired,
               "fidelity": fidelity,
               "calibration": calibration}
    write_ranking_report(out, cfg.title, sections, metrics, extra)
    return metrics


def _tuning_notes(tuning_ids: list[str], n_publications: int, split: str) -> list[str]:
    """Where real labels entered: the fusion weight, when chosen on real tuning cases."""
    if not tuning_ids:
        return []
    how = ("whole publications, the last by hash, none with a scored case" if split == "publications" else
           "the last by hash of id; their publications may have scored cases too")
    return [f"The fusion weight is chosen on {len(tuning_ids)} labelled real cases from {n_publications} "
            f"publications ({how}; none is scored "
            "here): the '+ ranker' rows use real labels for that one number. The model itself is trained on "
            "synthetic patients only."]


def _constrained_notes(constrained: dict | None) -> list[str]:
    """What the constrained-decoding row is and what it cost."""
    if not constrained:
        return []
    return [f"'{constrained['system']}': the model writes a disease name under a prefix tree of all "
            f"{constrained['candidates']} candidate names (beam search, every output a candidate; beyond the "
            f"beam the ranking continues in the knowledge ranker's order); no retrieval, no fusion. "
            f"{constrained['seconds_per_case']:.2f} s per case (the run log times the reranking stages)."]


def _shape_rows(shapes: dict[str, dict]) -> list[list[str]]:
    from ..synth.hpo_patients import SHAPE_LABELS

    keys = list(dict.fromkeys(k for s in shapes.values() for k in s))
    rows = []
    for key in keys:
        cells = []
        for s in shapes.values():
            v = s.get(key)
            cells.append("—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)))
        rows.append([SHAPE_LABELS.get(key, key)] + cells)
    return rows


def _richness_section(richness: dict[str, dict[str, dict]]):
    """The shape comparison per bin of the gold disease's annotation richness: synthetic / real in
    each cell."""
    from ..evaluate.ranking_report import Section
    from ..synth.hpo_patients import richness_labels

    (syn_name, syn), (real_name, real) = richness.items()
    columns = [("observed_mean", "observed terms, mean", "{:.1f}"),
               ("excluded_mean", "excluded terms, mean", "{:.1f}"),
               ("excluded_share_of_terms", "excluded share of terms", "{:.2f}"),
               ("observed_other_share", "observed terms not annotated to the disease", "{:.2f}"),
               ("excluded_own_share", "excluded terms annotated to the disease", "{:.2f}")]

    def cell(stats, key, fmt):
        return "—" if stats is None or key not in stats else fmt.format(stats[key])

    rows = []
    for label in (b for b in richness_labels() if b in syn or b in real):
        s, r = syn.get(label), real.get(label)
        rows.append([label] + [f"{d['n']} ({d['share']:.0%})" if d else "0" for d in (s, r)]
                    + [f"{cell(s, k, f)} / {cell(r, k, f)}" for k, _, f in columns])
    return Section("Shape by how richly the gold disease is annotated",
                   header=["HPO terms annotated to the gold disease", f"{syn_name}: cases",
                           f"{real_name}: cases"] + [f"{title} (synthetic / real)" for _, title, _ in columns],
                   rows=rows,
                   text=("Counts of terms follow the disease's annotations, so the overall shape above mixes "
                         "how the generator draws a patient with which diseases the patients have. Here each "
                         "row compares patients of equally richly annotated diseases."),
                   notes=_mix_adjusted(syn, real))


def _mix_adjusted(syn: dict[str, dict], real: dict[str, dict]) -> list[str]:
    """A note: the synthetic means of observed / excluded terms with each richness bin weighted by its
    share of the real (annotated) cases, next to the real means; none when a bin has no synthetic patient."""
    bins = [b for b in real if b != "not annotated"]
    if not bins or any(b not in syn for b in bins):
        return []
    total = sum(real[b]["n"] for b in bins)
    means = {}
    for key in ("observed_mean", "excluded_mean"):
        means[key] = tuple(sum(src[b][key] * real[b]["n"] for b in bins) / total for src in (syn, real))
    (so, ro), (se, re_) = means["observed_mean"], means["excluded_mean"]
    return [f"Synthetic patients reweighted to the real cases' mix of richness (annotated gold diseases "
            f"only): observed terms {so:.1f} vs {ro:.1f} real, excluded terms {se:.1f} vs {re_:.1f} real."]


def _by_terms_section(systems: dict[str, dict]):
    """Top-1 by number of observed terms (over all cases of each bin; uncovered ones are misses)."""
    from ..evaluate.ranking_report import Section

    bins = list(dict.fromkeys(b for s in systems.values() for b in s.get("by_n_observed", {})))
    rows = []
    for name, s in systems.items():
        cells = []
        for b in bins:
            d = s.get("by_n_observed", {}).get(b)
            cells.append("—" if d is None else f"{d['top1']:.3f} (n={d['n']})")
        rows.append([name] + cells)
    return Section("Top-1 by number of observed terms", header=["system"] + [f"{b} terms" for b in bins], rows=rows)
