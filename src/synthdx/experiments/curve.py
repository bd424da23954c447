"""Learning curves (`synthdx curve CONFIG --out DIR`): how the score on real test records grows
with the number of training records, one curve per data source (real curated labels, teacher
labels, synthetic records, mixes), for each learner, several seeds a point.

The question it answers: how many real labelled examples is a given amount of synthetic data (or
of teacher-labelled data) worth? `equivalent real examples` reads each point's score off the
real-label curve of the same learner.

Honesty rules kept here:
* The test part is fixed by a hash of the record's duplicate group: texts that are the same or
  nearly the same (`data.near_duplicate`) stay on one side, and the contamination guard refuses
  to score if any training pool still holds a test text (exactly or near-exactly).
* Training sets are nested: for a seed, the N records are the first N of one fixed permutation
  of the source's pool, so a larger N adds records and never swaps them.
* Each finished point is written to DIR/points/ at once; an interrupted run skips them when
  rerun (an LLM point also resumes its training from its checkpoint).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import CurveConfig, CurveSource
from ..evaluate import multi_hot
from ..evaluate.curve import equivalent_n, point_scores
from ..evaluate.sections import slug
from ..io import write_json
from ..provenance import write_provenance
from ..progress import StageTimer, console, log, make_progress, run_log
from ..records import LabelSpace, Record
from ..splits import duplicate_aware_split
from .common import cached_records, claim_run_dir
from .learners import Learner


@dataclass
class CurveData:
    label_space: LabelSpace
    llm_task: object
    test: list[Record]
    pools: dict[str, list[Record]]
    """Training pools by source kind: 'real', 'teacher', 'synthetic'."""
    references: dict[str, np.ndarray] = field(default_factory=dict)
    """Systems that need no training data from the curve (e.g. the rule teacher): test predictions."""
    summary: dict = field(default_factory=dict)


def _split(records: list[Record], cfg: CurveConfig) -> tuple[list[Record], list[Record], dict]:
    pool, test, summary = duplicate_aware_split(records, cfg.data.test_fraction, cfg.data.split_salt,
                                                cfg.data.near_duplicate)
    if cfg.data.max_train_pool:
        pool = pool[: cfg.data.max_train_pool]
        summary["pool"] = len(pool)
    return pool, test, summary


def prepare_radiology(cfg: CurveConfig, data_dir: Path) -> CurveData:
    from ..datasets import load_records
    from ..synth.radiology_reports import RadiologyReportGenerator
    from ..tasks.multilabel import radiology_task
    from ..teachers.radiology_rules import RadiologyRuleLabeler

    records = load_records(cfg.data.path, cfg.data.loader)
    missing = [r.id for r in records if r.labels is None]
    if missing:
        raise ValueError(f"{cfg.data.path}: {len(missing)} records have no curated labels (first: {missing[0]})")
    pool, test, summary = _split(records, cfg)
    task = radiology_task()
    teacher = RadiologyRuleLabeler(uncertain=cfg.teacher.uncertain).fit()
    wanted = {s.kind for s in cfg.sources} | {s.base for s in cfg.sources if s.base}
    pools = {"real": pool}
    if wanted & {"teacher", "synthetic"}:
        # the pool's curated labels are never given to the teacher or the generator
        pools["teacher"] = cached_records(data_dir / "pool_teacher.jsonl", lambda: teacher.label(
            [Record(r.id, r.text, None, dict(r.meta)) for r in pool]))
    if "synthetic" in wanted:
        n_synth = max(max(cfg.sizes), max((s.base_n or 0) for s in cfg.sources))

        def generate() -> list[Record]:
            gen = RadiologyReportGenerator(seed=cfg.synthetic.seed)
            if cfg.synthetic.fit_to_teacher_labels:
                gen.fit(pools["teacher"])
            return gen.generate(n_synth)

        pools["synthetic"] = cached_records(data_dir / "synthetic.jsonl", generate)
    names = task.label_space.names
    references = {"rule teacher": multi_hot(teacher.predict([r.text for r in test]), names)}
    return CurveData(task.label_space, task, test, pools, references, summary)


def prepare_mtsamples(cfg: CurveConfig, data_dir: Path) -> CurveData:
    from ..datasets.mtsamples import load_mtsamples
    from ..tasks.multilabel import specialty_task

    bad = sorted(({s.kind for s in cfg.sources} | {s.base for s in cfg.sources if s.base}) - {"real"})
    if bad:
        raise ValueError(f"mtsamples has no teacher or generator: sources of kind {', '.join(bad)} are not available")
    data = load_mtsamples(cfg.data.path, min_label_count=cfg.data.min_label_count)
    pool, test, summary = _split(data.records, cfg)
    summary["mtsamples"] = data.summary
    task = specialty_task(data.label_space)
    return CurveData(data.label_space, task, test, {"real": pool}, {}, summary)


def training_set(source: CurveSource, pools: dict[str, list[Record]], n: int, seed: int) -> list[Record] | None:
    """The N records of one point (None when the pool has fewer than N): the first N of a fixed
    permutation of the pool for this seed, after `base_n` fixed records of the base for a mix.
    'real' and 'teacher' are the same texts with other labels: they share the permutation, so at a
    given N and seed both curves train on the same reports and differ only in the labels."""
    def first(kind: str, k: int, salt: str) -> list[Record] | None:
        pool = pools[kind]
        if k > len(pool):
            return None
        order = list(range(len(pool)))
        texts = "pool" if kind in ("real", "teacher") else kind
        random.Random(f"{salt}:{texts}:{seed}").shuffle(order)
        return [pool[i] for i in order[:k]]

    added = first(source.kind, n, "curve")
    if added is None or source.base is None:
        return added
    base = first(source.base, source.base_n, "base")
    return None if base is None else base + added


def _point_path(points: Path, learner: str, source: str, n: int, seed: int) -> Path:
    return points / slug(learner) / slug(source) / f"n{n}-s{seed}.json"


def _indices(row: np.ndarray) -> list[int]:
    return [int(j) for j in np.flatnonzero(row)]


def curve_plan(cfg: CurveConfig, sources: list[CurveSource]) -> list[tuple]:
    """Every point to run, in order: (learner, source, n, seed) for each learner's sources, sizes, seeds."""
    return [(lr, src, n, seed) for lr in cfg.learners for src in sources
            if lr.sources is None or src.name in lr.sources
            for n in (lr.sizes or cfg.sizes) for seed in (lr.seeds or cfg.seeds)]


def run_points(plan: list[tuple], points_dir: Path, pools: dict[str, list[Record]],
               score: Callable[..., dict], report_only: bool = False) -> list[str]:
    """Train and score each point of `plan` not yet in `points_dir`, writing its JSON at once (a rerun
    skips it). `score(spec, train, workdir, seed)` fits the learner on `train` and returns the
    point's results (merged into its JSON). Returns what was skipped, and why."""
    skipped: list[str] = []
    with make_progress() as bar:
        t = bar.add_task("curve points", total=len(plan), info="")
        for spec, source, n, seed in plan:
            name = f"{spec.label} / {source.name} / n={n} / seed {seed}"
            path = _point_path(points_dir, spec.label, source.name, n, seed)
            bar.update(t, info=name)
            if not path.exists() and report_only:
                skipped.append(f"{name}: not run (report only)")
            elif not path.exists():
                train = training_set(source, pools, n, seed)
                if train is None:
                    skipped.append(f"{spec.label} / {source.name} / n={n}: the pool is smaller")
                    bar.advance(t)
                    continue
                start = time.perf_counter()
                result = score(spec, train, path.with_suffix(""), seed)
                seconds = time.perf_counter() - start
                write_json(path, {"learner": spec.label, "source": source.name, "n": n, "seed": seed,
                                  "train_records": len(train), "train_ids": [r.id for r in train],
                                  "seconds": round(seconds, 2), **result})
                log.info("point %s: %.1f s", name, seconds)
            bar.advance(t)
    return skipped


def run_curve(cfg: CurveConfig, out: Path, report_only: bool = False) -> dict:
    """Train and score every point not yet in OUT/points, then report. `report_only`: train nothing,
    report the points there are (the missing ones are listed in the report)."""
    out.mkdir(parents=True, exist_ok=True)
    with run_log(out / "run.log"):
        return _run(cfg, out, report_only)


def _run(cfg: CurveConfig, out: Path, report_only: bool = False) -> dict:
    from ..evaluate.contamination import guard_contamination

    if cfg.task == "rare-ddx":
        from .curve_rare_ddx import run_rare_ddx_curve

        return run_rare_ddx_curve(cfg, out, report_only)
    claim_run_dir(out, cfg)
    timer = StageTimer()
    data_dir, points_dir = out / "data", out / "points"
    with timer.stage("load, split and label the data"):
        prepare = prepare_radiology if cfg.task == "radiology" else prepare_mtsamples
        data = prepare(cfg, data_dir)
        write_json(data_dir / "split.json", {"rule": data.summary["split_rule"],
                                             "test": [r.id for r in data.test]})
        console.print(f"{data.summary['records']} records: {data.summary['pool']} in the training pool, "
                      f"{data.summary['test']} in the test part")
    with timer.stage("contamination guard"):
        for kind, pool in data.pools.items():
            guard_contamination(pool, data.test, near_threshold=cfg.data.near_duplicate,
                                what=f"the test part (against the {kind} training pool)")

    names = data.label_space.names
    y_true = multi_hot([r.labels for r in data.test], names)
    test_texts = [r.text for r in data.test]
    test_ids = [r.id for r in data.test]

    def score(spec, train, workdir: Path, seed: int) -> dict:
        learner = Learner(spec, data.label_space, data.llm_task, cfg.eval.batch_size)
        pred, _ = learner.fit_predict(train, test_texts, workdir, seed)
        return {"test_ids": test_ids, "predicted": [_indices(row) for row in pred]}

    with timer.stage("train and score the curve points"):
        skipped = run_points(curve_plan(cfg, cfg.sources), points_dir, data.pools, score, report_only)

    with timer.stage("aggregate"):
        curves = aggregate(cfg, points_dir, y_true, names)
        refs = {name: point_scores(y_true, [pred], cfg.eval.n_resamples, cfg.eval.seed)
                for name, pred in data.references.items()}
    result = {"title": cfg.title, "task": cfg.task, "data": data.summary, "labels": names,
              "sizes": cfg.sizes, "seeds": cfg.seeds, "curves": curves, "references": refs,
              "skipped_points": sorted(set(skipped)), "timings_seconds": timer.timings}
    from ..evaluate.curve_report import write_curve_report

    write_curve_report(out, result)
    write_provenance(out, config=cfg.model_dump(), data_sources={"real records": cfg.data.path},
                     seeds={"curve": cfg.seeds, "synthetic": cfg.synthetic.seed, "eval": cfg.eval.seed},
                     models={lr.label: _learner_model(lr) for lr in cfg.learners},
                     settings={"teacher": cfg.teacher.model_dump(), "synthetic": cfg.synthetic.model_dump(),
                               "learners": [lr.model_dump() for lr in cfg.learners]},
                     timings=timer.timings)
    console.print(f"report: {out / 'report.html'}")
    return result


def _learner_model(spec) -> str | dict:
    """What provenance fingerprints for a learner: the base model's directory or id."""
    if spec.kind == "llm":
        return (spec.train.model if spec.train else "smollm2-135m")
    if spec.kind == "encoder":
        from ..models.loading import resolve_encoder_path

        return str(resolve_encoder_path(spec.options.get("model", "minilm")))
    return {"kind": spec.kind, "library": "scikit-learn"}


def aggregate(cfg: CurveConfig, points_dir: Path, y_true: np.ndarray, names: list[str]) -> dict:
    """{learner: {source: [point, ...]}} with each point's scores and, for sources other than the
    plain real one, the equivalent number of real examples."""
    import json

    curves: dict[str, dict[str, list[dict]]] = {}
    for spec in cfg.learners:
        by_source: dict[str, list[dict]] = {}
        for source in cfg.sources:
            pts = []
            for n in cfg.sizes:
                preds, seconds = [], []
                for seed in spec.seeds or cfg.seeds:
                    path = _point_path(points_dir, spec.label, source.name, n, seed)
                    if path.exists():
                        row = json.loads(path.read_text())
                        pred = np.zeros((len(y_true), len(names)), dtype=np.int8)
                        for i, idx in enumerate(row["predicted"]):
                            pred[i, idx] = 1
                        preds.append(pred)
                        seconds.append(row["seconds"])
                if preds:
                    pts.append({"n": n, "seeds": len(preds), "seconds_per_seed": round(float(np.mean(seconds)), 1),
                                **point_scores(y_true, preds, cfg.eval.n_resamples, cfg.eval.seed)})
            if pts:
                by_source[source.name] = pts
        real = next((s.name for s in cfg.sources if s.kind == "real" and s.base is None), None)
        if real in by_source:
            for metric in ("micro_f1", "macro_f1"):
                real_curve = [(p["n"], p[metric]["mean"]) for p in by_source[real]]
                for name, pts in by_source.items():
                    if name != real:
                        for p in pts:
                            p[metric]["equivalent_real_n"] = equivalent_n(real_curve, p[metric]["mean"])
        curves[spec.label] = by_source
    return curves
