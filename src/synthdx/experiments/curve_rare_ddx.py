"""Learning curves of rare-disease differential diagnosis (`synthdx curve`, `task: rare-ddx`): top-1
(and MRR, top-3, top-10) on a fixed sample of real published cases (phenopacket-store) against the
number N of training examples, one curve per source:

* `synthetic`: N synthetic patients of the `hpo-patients` generator (one each of a seeded random
  sample of the candidate diseases, as `experiments.rare_ddx` trains), rendered by the one renderer;
* `real`: N real published cases from the publications *not* in the test part;
* a mix: `base_n` synthetic patients + N real cases (or the other way round).

Each point fine-tunes the base model on its N examples (`train.sft`, the rare-ddx task), then the
model reranks the knowledge ranker's top K of every test case (`infer.rerank`, the experiment's
functions): "alone" is the model's order of the K, "+ ranker" adds the ranker's score with a weight
chosen, per point, on held-out *synthetic* patients (never on a real case). The knowledge ranker
(no training) is the reference line.

Honesty rules kept here:
* The split is grouped by publication: a case goes to the test part when a hash of its publication
  group is below `data.test_fraction` (cases linked by a shared PMID form one group), so no paper
  has cases on both sides. Only real cases of the other side are ever trained on.
* Real pool cases whose rendered summary equals or nearly equals (`data.near_duplicate`) a scored
  case's summary are dropped from the pool (counted in the report), then the contamination guard
  refuses to run if any scored summary is still among the training texts of any source.
* Training sets are nested (first N of one fixed permutation per seed: `curve.training_set`);
  every finished point is written to DIR/points/ at once and skipped when the run is resumed.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import CurveConfig
from ..evaluate.bootstrap import group_rows, percentile_interval, resample_indices, resampled_sums
from ..evaluate.curve import equivalent_n
from ..io import write_json
from ..patients import Case
from ..progress import StageTimer, console, log
from ..records import Record
from ..splits import hash_bucket, publication_groups
from .common import claim_run_dir, hardware

METRICS = ("top1", "top3", "top10", "mrr")
METRIC_LABELS = {"top1": "top-1", "mrr": "MRR"}  # the report's plots and tables; all four in metrics.json
SYSTEMS = ("alone", "fused")


# ---------------------------------------------------------------- split and statistics

def publication_split(cases: Sequence[Case], test_fraction: float, salt: str) -> tuple[list[Case], list[Case], dict]:
    """(pool, test part, summary): a case is in the test part when hash_bucket(its publication
    group, salt) < test_fraction; all cases of a publication are on one side."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    groups = publication_groups(cases)
    pool, test = [], []
    for case, g in zip(cases, groups):
        (test if hash_bucket(g, salt) < test_fraction else pool).append(case)
    summary = {"records": len(cases), "publication_groups": len(set(groups)), "pool": len(pool), "test": len(test),
               "split_rule": f"by publication: sha256('{salt}:'+group) < {test_fraction}, where a group joins the "
                             "cases that share a PMID"}
    return pool, test, summary


def rank_point_scores(ranks_by_seed: Sequence[Sequence[float]], n_resamples: int = 1000, seed: int = 0,
                      alpha: float = 0.05, groups: Sequence[str] | None = None) -> dict:
    """{metric: {"mean", "lo", "hi", "sd", "per_seed"}} for top-1/3/10 and MRR of one curve point:
    the mean over training seeds, with a percentile bootstrap over test cases of that mean (every
    resample scores all seeds on the same resampled cases). Ranks: 1-based, inf when not ranked.
    `groups` (each test case's publication): resample whole publications, each with all its cases."""
    if not ranks_by_seed:
        raise ValueError("a curve point needs the ranks of at least one seed")
    vals = []
    for ranks in ranks_by_seed:
        r = np.asarray(ranks, dtype=np.float64)
        v = {f"top{k}": (r <= k).astype(np.float64) for k in (1, 3, 10)}
        v["mrr"] = np.where(np.isfinite(r), 1.0 / r, 0.0)
        vals.append(v)
    n = len(vals[0]["mrr"])
    if any(len(v["mrr"]) != n for v in vals):
        raise ValueError("every seed must rank the same test cases")
    out = {}
    for m in METRICS:
        per_seed = np.array([v[m].mean() for v in vals])
        stacked = np.stack([v[m] for v in vals])  # (seeds, n)
        if groups is None:
            boot = np.concatenate([stacked[:, idx].mean(axis=2).mean(axis=0)
                                   for idx in resample_indices(n, n_resamples, seed)])
        else:  # per publication: each seed's sum and the number of cases, then over the drawn ones
            sums = resampled_sums(group_rows(np.vstack([stacked, np.ones(n)]).T, groups), n_resamples, seed)
            boot = (sums[:, :-1] / sums[:, -1:]).mean(axis=1)
        lo, hi = percentile_interval(boot, alpha)
        out[m] = {"mean": float(per_seed.mean()), "lo": lo, "hi": hi,
                  "sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0,
                  "per_seed": [round(float(x), 6) for x in per_seed]}
    return out


def _encode(ranks: Sequence[float]) -> list[float | None]:
    return [None if not math.isfinite(r) else float(r) for r in ranks]


def _decode(ranks: Sequence[float | None]) -> list[float]:
    return [math.inf if r is None else float(r) for r in ranks]


# ---------------------------------------------------------------- data

@dataclass
class CurveRareDdxData:
    knowledge: object
    candidates: list[str]
    ranker: object
    task: object
    test: list[Case]
    test_texts: list[str]
    val_cases: list[Case]
    val_texts: list[str]
    pools: dict[str, list[Record]]
    retrieved: list                      # per test case: (top ids, their ranker scores, the gold's ranker rank)
    val_retrieved: list
    covered: np.ndarray
    summary: dict = field(default_factory=dict)


def _covered_gold(case: Case, cand_set: set[str]) -> str | None:
    return next((g for g in case.gold or () if g in cand_set), None)


def prepare(cfg: CurveConfig, data_dir: Path, timer: StageTimer) -> CurveRareDdxData:
    from ..baselines.phenotype_ranker import PhenotypeRanker
    from ..datasets.phenopackets import load_phenopackets
    from ..evaluate.contamination import find_overlap, guard_contamination
    from ..knowledge.hpo import load_hpo
    from ..synth.hpo_patients import HPOPatientGenerator
    from ..tasks.rare_ddx import rare_ddx_task
    from ..tasks.rare_ddx_render import render_summary
    from .rare_ddx import _read_cases, _retrieve, _write_cases, hash_sample

    rd = cfg.rare_ddx
    max_tokens = max((lr.train.max_text_tokens for lr in cfg.learners if lr.train), default=256)
    with timer.stage("HPO knowledge and the knowledge ranker"):
        knowledge = load_hpo()
        candidates = knowledge.candidates(rd.knowledge.candidates, rd.knowledge.branch)
        ranker = PhenotypeRanker(knowledge, candidate_ids=candidates).fit()
        task = rare_ddx_task(knowledge, candidates, max_tokens)
        cand_set = set(candidates)

    def text_of(case: Case, seed: int) -> str:
        return render_summary(case.patient, knowledge, seed=seed)

    with timer.stage("load and split the real cases"):
        cases = [c for c in load_phenopackets(cfg.data.path) if c.gold]
        if not cases:
            raise ValueError(f"{cfg.data.path}: no case has a diagnosis to score against")
        pool_cases, test_part, summary = publication_split(cases, cfg.data.test_fraction, cfg.data.split_salt)
        test = hash_sample(test_part, rd.test_cases, rd.sample_salt)
        test_texts = [text_of(c, 0) for c in test]
        covered = np.array([_covered_gold(c, cand_set) is not None for c in test])
        # a real case trains on its first gold disease that is a candidate (the model can only name those)
        trainable = [c for c in pool_cases if _covered_gold(c, cand_set)]
        real = [Record(c.id, text_of(c, rd.patients.seed), [_covered_gold(c, cand_set)]) for c in trainable]
        dropped = 0
        while True:  # drop pool cases whose summary (nearly) repeats a scored one
            hits = find_overlap([r.text for r in real], test_texts, near_threshold=cfg.data.near_duplicate)
            if not hits:
                break
            bad = {h["train_index"] for h in hits}
            dropped += len(bad)
            real = [r for i, r in enumerate(real) if i not in bad]
        summary.update({"test_part": len(test_part), "test": len(test), "test_covered": int(covered.sum()),
                        "pool_uncovered_dropped": len(pool_cases) - len(trainable),
                        "pool_duplicates_dropped": dropped, "pool": len(real),
                        "test_rule": f"first {rd.test_cases} of the test part by sha256('{rd.sample_salt}:'+id)",
                        "candidates": len(candidates), "hpo_version": knowledge.version})
        write_json(data_dir / "split.json", {"rule": summary["split_rule"], "test_sample_rule": summary["test_rule"],
                                             "test_part": [c.id for c in test_part], "test": [c.id for c in test]})
        msg = (f"{len(cases)} labelled cases in {summary['publication_groups']} publication groups: "
               f"{len(pool_cases)} in the pool ({len(real)} trainable), {len(test_part)} in the test part, "
               f"{len(test)} scored ({int(covered.sum())} covered)")
        console.print(msg)
        log.info(msg)

    with timer.stage("generate synthetic patients"):
        # the pool: as many patients as the largest synthetic point needs (nested sets draw from it)
        sizes = [n for lr in cfg.learners for n in (lr.sizes or cfg.sizes)]
        need = max([max(sizes) for s in cfg.sources if s.kind == "synthetic"]
                   + [s.base_n for s in cfg.sources if s.base == "synthetic"], default=0)
        p = rd.patients
        train_path, val_path = data_dir / "synthetic_train.jsonl", data_dir / "synthetic_validation.jsonl"
        if train_path.exists() and val_path.exists():
            s_train, val_cases = _read_cases(train_path), _read_cases(val_path)
        else:
            rng = random.Random(p.seed)
            gen = HPOPatientGenerator(knowledge, seed=p.seed, **p.generator)
            usable = gen.usable_diseases(candidates)
            n_dis = min(len(usable), math.ceil(need / p.patients_per_disease)) if need else 0
            s_train = gen.generate(sorted(rng.sample(usable, n_dis)), p.patients_per_disease) if n_dis else []
            val_gen = HPOPatientGenerator(knowledge, seed=p.seed + 1, **p.generator)
            val_cases = val_gen.generate(sorted(rng.sample(usable, min(p.validation_patients, len(usable)))), 1)
            _write_cases(train_path, s_train)
            _write_cases(val_path, val_cases)
        synthetic = [Record(c.id, text_of(c, p.seed), [c.gold[0]]) for c in s_train]
        val_texts = [text_of(c, p.seed + 1) for c in val_cases]

    pools = {"real": real, "synthetic": synthetic}
    with timer.stage("contamination guard"):
        test_records = [Record(c.id, t, None) for c, t in zip(test, test_texts)]
        for kind, pool in pools.items():
            if pool:
                guard_contamination(pool, test_records, near_threshold=cfg.data.near_duplicate,
                                    what=f"the scored real cases (against the {kind} training pool)")

    with timer.stage("retrieve the top candidates"):
        k = rd.rerank.top_k
        retrieved = _retrieve(ranker, test, k, False)
        val_retrieved = _retrieve(ranker, val_cases, k, False)
    summary["synthetic_pool"] = len(synthetic)
    summary["synthetic_validation"] = len(val_cases)
    return CurveRareDdxData(knowledge, candidates, ranker, task, test, test_texts, val_cases, val_texts, pools,
                            retrieved, val_retrieved, covered, summary)


# ---------------------------------------------------------------- one point

def fit_and_rank(spec, train: Sequence[Record], d: CurveRareDdxData, workdir: Path, seed: int,
                 weights: Sequence[float]) -> dict:
    """Fine-tune on `train`, score the top K of the validation patients and the test cases, choose
    the fusion weight on the validation patients; the gold ranks of the model alone and fused. The
    model is deleted afterwards (a curve would otherwise keep 0.5 GB a point)."""
    from ..config import TrainSection
    from ..distributed import on_all_ranks
    from ..train.sft import TASK_FILE, TrainConfig, train as sft_train

    section = spec.train or TrainSection(max_text_tokens=256)
    cfg = TrainConfig(**{**section.model_dump(), "seed": seed})
    model_dir = workdir / "model"
    stats: dict = {}

    def report(step: int, total: int, loss: float) -> None:
        if step % 5 == 0 or step == total:
            log.info("%s: training step %d/%d loss %.4f", spec.label, step, total, loss)

    stats_path = workdir / "train_stats.json"
    if not (model_dir / TASK_FILE).exists():  # a model trained before an interruption is reused
        # under `synthdx curve` with several processes every rank trains (data-parallel)
        stats = on_all_ranks(sft_train, train, d.task, workdir, cfg, main_kwargs={"progress": report})
        stats.pop("losses", None)
        write_json(stats_path, {k: v for k, v in stats.items() if not isinstance(v, list)})
    elif stats_path.exists():
        stats = json.loads(stats_path.read_text())
    d.task.max_text_tokens = cfg.max_text_tokens
    out = rank_with_model(str(model_dir), d, workdir, weights, spec.label)
    out["train_stats"] = {k: v for k, v in stats.items() if not isinstance(v, list)}
    shutil.rmtree(workdir, ignore_errors=True)
    return out


def rank_with_model(model_path: str, d: CurveRareDdxData, cache_dir: Path, weights: Sequence[float],
                    label: str) -> dict:
    """The model at `model_path` scores the top K of the validation patients and of the test cases
    (cached in `cache_dir`); the fusion weight is chosen on the validation patients; the gold ranks
    of the model alone and fused (null: not ranked)."""
    from .rare_ddx import _fused_ranks, _model_scores, choose_weight

    v_golds = [list(c.gold) for c in d.val_cases]
    t_golds = [list(c.gold) for c in d.test]
    v_ms = _model_scores(model_path, d.task, d.val_texts, [r[0] for r in d.val_retrieved],
                         cache_dir / "scores_validation.json", [c.id for c in d.val_cases],
                         f"{label}: synthetic validation")
    t_ms = _model_scores(model_path, d.task, d.test_texts, [r[0] for r in d.retrieved], cache_dir / "scores_test.json",
                         [c.id for c in d.test], f"{label}: real test cases")
    w, table = choose_weight(d.val_retrieved, v_ms, v_golds, weights)
    return {"weight": None if math.isinf(w) else w, "weights_on_validation": table,
            "ranks": {"alone": _encode(_fused_ranks(d.retrieved, t_ms, t_golds, math.inf)),
                      "fused": _encode(_fused_ranks(d.retrieved, t_ms, t_golds, w))},
            "model_scores": t_ms}


# ---------------------------------------------------------------- the curve

def system_label(spec, system: str, k: int) -> str:
    return f"{spec.label} reranks top {k}" if system == "alone" else f"{spec.label} + ranker"


def run_rare_ddx_curve(cfg: CurveConfig, out: Path, report_only: bool = False) -> dict:
    from ..provenance import write_provenance
    from .curve import _learner_model, curve_plan, run_points

    claim_run_dir(out, cfg)
    timer = StageTimer()
    data_dir, points_dir = out / "data", out / "points"
    d = prepare(cfg, data_dir, timer)
    test_ids = [c.id for c in d.test]
    pubs = publication_groups(d.test)  # every interval resamples whole publications
    k = cfg.rare_ddx.rerank.top_k
    zero_shot = None
    zs_path = data_dir / "zero_shot.json"

    def run_zero_shot() -> dict | None:
        if zs_path.exists():
            return json.loads(zs_path.read_text())
        if report_only:
            skipped.append("base model zero-shot (N = 0): not run (report only)")
            return None
        with timer.stage("base model zero-shot (N = 0)"):
            section = cfg.learners[0].train
            base = section.model if section else "smollm2-135m"
            d.task.max_text_tokens = section.max_text_tokens if section else 256
            res = {"model": base, "test_ids": test_ids, **rank_with_model(
                base, d, data_dir / "zero_shot", cfg.rare_ddx.rerank.weights, "base model zero-shot")}
            write_json(zs_path, res)
            console.print(f"base model zero-shot: top-1 alone {np.mean(np.array(_decode(res['ranks']['alone'])) == 1):.3f}"
                          f", + ranker {np.mean(np.array(_decode(res['ranks']['fused'])) == 1):.3f} "
                          f"(weight {res['weight']})")
            return res

    def score(spec, train, workdir: Path, seed: int) -> dict:
        res = fit_and_rank(spec, train, d, workdir, seed, cfg.rare_ddx.rerank.weights)
        console.print(f"point {spec.label} / n={len(train)} / seed {seed}: top-1 alone "
                      f"{np.mean(np.array(_decode(res['ranks']['alone'])) == 1):.3f}, + ranker "
                      f"{np.mean(np.array(_decode(res['ranks']['fused'])) == 1):.3f} (weight {res['weight']})")
        return {"test_ids": test_ids, **res}

    # the plain sources' points first, then the base model at N = 0, then the mixes (the most costly)
    plain = [s for s in cfg.sources if s.base is None]
    mixes = [s for s in cfg.sources if s.base is not None]
    with timer.stage("train and score the curve points"):
        skipped = run_points(curve_plan(cfg, plain), points_dir, d.pools, score, report_only)
        if cfg.rare_ddx.zero_shot:
            zero_shot = run_zero_shot()
        skipped += run_points(curve_plan(cfg, mixes), points_dir, d.pools, score, report_only)

    with timer.stage("aggregate"):
        curves, weights = aggregate(cfg, points_dir, test_ids, pubs)
        ref_ranks = [r[2] for r in d.retrieved]
        refs = {"knowledge ranker": rank_point_scores([ref_ranks], cfg.eval.n_resamples, cfg.eval.seed,
                                                      groups=pubs)}
        if zero_shot is not None:
            if zero_shot["test_ids"] != test_ids:
                raise ValueError(f"{data_dir / 'zero_shot.json'}: scored on other test cases than this run's")
            w = zero_shot["weight"]
            for system in SYSTEMS:
                name = (f"base model zero-shot reranks top {k}" if system == "alone" else
                        f"base model zero-shot + ranker (weight {'inf' if w is None else f'{w:g}'})")
                refs[name] = rank_point_scores([_decode(zero_shot["ranks"][system])], cfg.eval.n_resamples,
                                               cfg.eval.seed, groups=pubs)
        cov = d.covered
        refs_covered = {"knowledge ranker (covered cases)": rank_point_scores(
            [[r for r, c in zip(ref_ranks, cov) if c]], cfg.eval.n_resamples, cfg.eval.seed,
            groups=[g for g, c in zip(pubs, cov) if c])} if cov.any() else {}
    s = d.summary
    intro = (f"Task: rare-disease differential diagnosis. {s['records']} labelled real cases in "
             f"{s['publication_groups']} publication groups, split {s['split_rule']}: "
             f"{s['test_part']} cases in the test part, of which {s['test']} are scored ({s['test_rule']}; "
             f"{s['test_covered']} have a gold disease among the {s['candidates']} candidates, the others count as "
             f"misses). Real training pool: {s['pool']} cases of the other publications (uncovered gold dropped: "
             f"{s['pool_uncovered_dropped']}; summary repeating a scored case dropped: {s['pool_duplicates_dropped']}). "
             f"Synthetic pool: {s['synthetic_pool']} patients; {s['synthetic_validation']} held-out synthetic "
             f"patients choose each point's fusion weight. Each point fine-tunes the base model on N examples and "
             f"reranks the knowledge ranker's top {k}: 'reranks top {k}' is the model's order alone, '+ ranker' adds "
             f"the ranker's score with the point's weight. Top-1/3/10 and MRR over all scored cases (per point in "
             f"metrics.json); every band resamples whole publications of the scored cases (the test 'records' of "
             f"the note below), since the cases of one publication are alike. Sizes: "
             f"{', '.join(map(str, cfg.sizes))}; seeds: {', '.join(map(str, cfg.seeds))}.")
    result = {"title": cfg.title, "task": cfg.task, "data": s, "sizes": cfg.sizes, "seeds": cfg.seeds,
              "curves": curves, "references": refs, "references_covered": refs_covered,
              "fusion_weights": weights, "metric_labels": METRIC_LABELS, "intro": intro,
              "skipped_points": sorted(set(skipped)), "timings_seconds": timer.timings, "hardware": hardware()}
    from ..evaluate.curve_report import write_curve_report

    result["paired"] = paired_with_ranker(cfg, points_dir, ref_ranks, zero_shot, pubs)
    write_curve_report(out, result, [_paired_section(result["paired"])])
    write_provenance(out, config=cfg.model_dump(), data_sources={"real cases": cfg.data.path},
                     seeds={"curve": cfg.seeds, "synthetic": cfg.rare_ddx.patients.seed, "eval": cfg.eval.seed},
                     models={lr.label: _learner_model(lr) for lr in cfg.learners},
                     settings={"hpo_version": s["hpo_version"], "rare_ddx": cfg.rare_ddx.model_dump(),
                               "learners": [lr.model_dump() for lr in cfg.learners]},
                     timings=timer.timings)
    console.print(format_curve_table(result), markup=False, soft_wrap=True)
    console.print(f"report: {out / 'report.html'}")
    return result


def aggregate(cfg: CurveConfig, points_dir: Path, test_ids: list[str],
              groups: Sequence[str] | None = None) -> tuple[dict, dict]:
    """{system: {source: [point, ...]}} (two systems per learner: alone and + ranker), each point
    with its scores (`groups`: each test case's publication, resampled whole) and, off the plain real
    source's curve of the same system, the equivalent number of real examples; and the fusion weight
    each point chose."""
    from .curve import _point_path

    k = cfg.rare_ddx.rerank.top_k
    curves: dict[str, dict[str, list[dict]]] = {}
    weights: dict[str, dict] = {}
    real = next((s.name for s in cfg.sources if s.kind == "real" and s.base is None), None)
    for spec in cfg.learners:
        for system in SYSTEMS:
            by_source: dict[str, list[dict]] = {}
            for source in cfg.sources:
                pts = []
                for n in cfg.sizes:
                    ranks, seconds, ws = [], [], []
                    for seed in spec.seeds or cfg.seeds:
                        path = _point_path(points_dir, spec.label, source.name, n, seed)
                        if path.exists():
                            row = json.loads(path.read_text())
                            if row["test_ids"] != test_ids:
                                raise ValueError(f"{path}: scored on other test cases than this run's")
                            ranks.append(_decode(row["ranks"][system]))
                            seconds.append(row["seconds"])
                            ws.append(row["weight"])
                    if ranks:
                        pts.append({"n": n, "seeds": len(ranks), "seconds_per_seed": round(float(np.mean(seconds)), 1),
                                    **rank_point_scores(ranks, cfg.eval.n_resamples, cfg.eval.seed,
                                                        groups=groups)})
                        if system == "fused":
                            weights.setdefault(spec.label, {}).setdefault(source.name, {})[n] = ws
                if pts:
                    by_source[source.name] = pts
            if real in by_source:
                for metric in METRICS:
                    real_curve = [(p["n"], p[metric]["mean"]) for p in by_source[real]]
                    for name, pts in by_source.items():
                        if name != real:
                            for p in pts:
                                p[metric]["equivalent_real_n"] = equivalent_n(real_curve, p[metric]["mean"])
            curves[system_label(spec, system, k)] = by_source
    return curves, weights


def paired_with_ranker(cfg: CurveConfig, points_dir: Path, ranker_ranks: Sequence[float],
                       zero_shot: dict | None, publications: Sequence[str]) -> list[dict]:
    """Top-1 of each finished point's '+ ranker' system against the knowledge ranker on the same
    cases: paired bootstrap difference (cases, and whole publications, resampled) and exact McNemar."""
    from .curve import _point_path
    from .rare_ddx import paired_top1

    ev = {"n_resamples": cfg.eval.n_resamples, "seed": cfg.eval.seed}
    base = np.asarray(ranker_ranks) == 1
    rows = []
    runs = [("base model zero-shot + ranker (N = 0)", zero_shot)] if zero_shot else []
    for spec in cfg.learners:
        for source in cfg.sources:
            for n in spec.sizes or cfg.sizes:
                for seed in spec.seeds or cfg.seeds:
                    path = _point_path(points_dir, spec.label, source.name, n, seed)
                    if path.exists():
                        runs.append((f"{spec.label} + ranker, {source.name}, n={n}, seed {seed}",
                                     json.loads(path.read_text())))
    for name, row in runs:
        hit = np.asarray(_decode(row["ranks"]["fused"])) == 1
        rows.append({"weight": row["weight"],
                     **paired_top1(name, hit, "knowledge ranker", base, publications, **ev)})
    return rows


def _paired_section(paired: list[dict]):
    from ..evaluate.sections import Section
    from .rare_ddx import paired_top1_cells

    rows = [[c["system_a"], "model alone" if c["weight"] is None else f"{c['weight']:g}", *paired_top1_cells(c)]
            for c in paired]
    return Section("Paired: each point's model + ranker vs the knowledge ranker (top-1, same cases)",
                   header=["system", "weight", "top-1", "ranker top-1", "difference [95% CI], cases resampled",
                           "p", "95% CI, publications resampled", "p", "only system / only ranker first",
                           "p (McNemar exact)"], rows=rows, num_from=2,
                   text="Both systems are scored on the same resampled cases, or on the same resampled whole "
                        "publications: the cases of one publication are alike, so that interval and p are the ones "
                        "to trust (every band of the curves resamples publications too). McNemar counts the cases "
                        "where exactly one of the two puts the gold first, each as if independent.")


def format_curve_table(result: dict) -> str:
    """Plain-text table: top-1 [95% band] (MRR) of every system, source and size."""
    lines = []
    sizes = result["sizes"]
    for system, by_source in result["curves"].items():
        for src, pts in by_source.items():
            at = {p["n"]: p for p in pts}
            cells = [f"n={n}: {at[n]['top1']['mean']:.3f} [{at[n]['top1']['lo']:.3f}, {at[n]['top1']['hi']:.3f}] "
                     f"MRR {at[n]['mrr']['mean']:.3f}" for n in sizes if n in at]
            lines.append(f"{system} / {src}: " + "; ".join(cells))
    for name, r in {**result["references"], **result.get("references_covered", {})}.items():
        lines.append(f"{name}: top-1 {r['top1']['mean']:.3f} [{r['top1']['lo']:.3f}, {r['top1']['hi']:.3f}] "
                     f"MRR {r['mrr']['mean']:.3f}")
    return "\n".join(lines)

