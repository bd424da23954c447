"""The radiology experiment, end to end: real reports -> rule-teacher labels (+ synthetic reports)
-> fine-tuned student -> predictions on the held-out real reports -> scores against curated labels.

Every stage writes its output into the run directory; a stage whose output is already there is
skipped, so an interrupted run picks up where it stopped (training resumes from its checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import ExperimentConfig
from ..datasets import load_records
from ..evaluate import evaluate_system, format_table, multi_hot, write_report
from ..io import write_json, write_jsonl
from ..progress import StageTimer, console, log, make_progress, run_log
from ..records import Record
from ..evaluate.calibration import apply_thresholds, tune_thresholds
from ..evaluate.contamination import guard_contamination
from ..provenance import write_provenance
from ..splits import duplicate_aware_split, hash_split
from ..tasks.multilabel import radiology_task
from .common import cached_records, claim_run_dir, hardware, train_or_reuse


def write_predictions(path: Path, ids: list[str], preds) -> None:
    write_jsonl(path, ({"id": i, "labels": p.labels, "scores": p.scores} for i, p in zip(ids, preds)))


def run_llm_predictions(model_path: str, task, texts: list[str], batch_size: int, desc: str,
                        free_sample: int = 0) -> tuple[list, dict]:
    """Constrained predictions for all texts, plus free-generation parsing on the first `free_sample`."""
    from ..infer.predict import generate_free, predict_label_sets
    from ..models.inference import prepare_for_inference
    from ..models.loading import default_device, load_causal_lm, load_tokenizer, pick_dtype

    device = default_device()
    tok = load_tokenizer(model_path)
    model = load_causal_lm(model_path, dtype=torch.float32, device=device)
    autocast = prepare_for_inference(model, pick_dtype(device))
    with make_progress() as bar:
        t = bar.add_task(desc, total=len(texts), info="")
        preds = predict_label_sets(model, tok, task, texts, batch_size=batch_size, autocast_dtype=autocast,
                                   progress=lambda n: bar.advance(t, n))
    info = {"truncated": sum(p.truncated for p in preds), "incomplete": sum(not p.complete for p in preds)}
    if free_sample:
        sample = texts[:free_sample]
        with make_progress() as bar:
            t = bar.add_task(f"{desc} (free generation)", total=len(sample), info="")
            free = generate_free(model, tok, task, sample, batch_size=batch_size, autocast_dtype=autocast,
                                 progress=lambda n: bar.advance(t, n))
        info["free_generation"] = {"n": len(free), "invalid": sum(not v for _, _, v in free)}
    return preds, info


@dataclass
class RadiologyData:
    """The data stages' output: the split, the rule teacher, and the training records (teacher-labelled
    pool + synthetic reports), checked against the test part by the contamination guard."""

    pool: list[Record]
    validation: list[Record]
    test: list[Record]
    split: dict
    teacher: object
    train_real: list[Record]
    synthetic: list[Record]
    train_records: list[Record]
    val_labelled: list[Record]


def prepare_radiology_data(cfg: ExperimentConfig, out: Path, timer: StageTimer) -> RadiologyData:
    """Load and split the real reports, teacher-label the pool (and validation split), generate the
    synthetic reports, and run the contamination guard; outputs are cached in `out/data`."""
    data_dir = out / "data"

    with timer.stage("load and split real reports"):
        records = load_records(cfg.data.path, cfg.data.loader)
        unlabelled = [r.id for r in records if r.labels is None]
        if unlabelled:
            raise ValueError(f"{cfg.data.path}: {len(unlabelled)} records have no curated labels "
                             f"(first: {unlabelled[0]}); the test part needs them")
        pool, test, split = duplicate_aware_split(records, cfg.data.test_fraction, cfg.data.split_salt,
                                                  cfg.data.near_duplicate)
        validation: list[Record] = []
        if cfg.data.validation_fraction:
            pool, validation = hash_split(pool, cfg.data.validation_fraction, f"{cfg.data.split_salt}:validation",
                                          group_key="duplicate_group")
        if cfg.data.max_train_pool:
            pool = pool[: cfg.data.max_train_pool]
        write_json(data_dir / "split.json", {"rule": split["split_rule"], "pool": [r.id for r in pool],
                                             "validation": [r.id for r in validation],
                                             "test": [r.id for r in test]})
        msg = (f"{len(records)} scored reports: {len(pool)} in the training pool, {len(validation)} for "
               f"validation, {len(test)} in the test part ({split['records_in_duplicate_groups']} reports "
               "share a duplicate group; a group stays on one side)")
        console.print(msg)
        log.info(msg)

    from ..teachers.radiology_rules import RadiologyRuleLabeler

    teacher = RadiologyRuleLabeler(uncertain=cfg.teacher.uncertain).fit()

    def teacher_labels(recs: list[Record]) -> list[Record]:
        # curated labels are never given to the teacher: only the text
        return teacher.label([Record(r.id, r.text, None, dict(r.meta)) for r in recs])

    train_real: list[Record] = []
    if cfg.teacher.kind == "rules":
        with timer.stage("teacher labels the pool"):
            train_real = cached_records(data_dir / "pool_teacher.jsonl", lambda: teacher_labels(pool))
    elif not cfg.synthetic.n:
        raise ValueError("teacher.kind is 'none' and synthetic.n is 0: there is nothing to train on")

    train_records = list(train_real)
    synthetic: list[Record] = []
    if cfg.synthetic.n:
        with timer.stage("generate synthetic reports"):
            from ..synth.radiology_reports import RadiologyReportGenerator

            def generate() -> list[Record]:
                gen = RadiologyReportGenerator(seed=cfg.synthetic.seed)
                if cfg.synthetic.fit_to_teacher_labels and train_real:
                    gen.fit(train_real)
                return gen.generate(cfg.synthetic.n)

            synthetic = cached_records(data_dir / "synthetic.jsonl", generate)
            train_records += synthetic

    val_labelled: list[Record] = []
    if validation:
        with timer.stage("teacher labels the validation split"):
            # thresholds are tuned on teacher labels: the curated labels stay for the test part only
            val_labelled = cached_records(data_dir / "validation_teacher.jsonl", lambda: teacher_labels(validation))
    with timer.stage("contamination guard"):
        guard_contamination(train_records, test, near_threshold=cfg.data.near_duplicate,
                            what="the test part (against the training records)")

    return RadiologyData(pool, validation, test, split, teacher, train_real, synthetic, train_records, val_labelled)


def run_radiology(cfg: ExperimentConfig, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with run_log(out / "run.log"):
        return _run_radiology(cfg, out)


def _run_radiology(cfg: ExperimentConfig, out: Path) -> dict:
    claim_run_dir(out, cfg)
    timer = StageTimer()
    task = radiology_task(cfg.train.max_text_tokens)
    names = task.label_space.names
    pred_dir = out / "predictions"

    d = prepare_radiology_data(cfg, out, timer)
    pool, validation, test, split, teacher = d.pool, d.validation, d.test, d.split, d.teacher
    train_real, synthetic, train_records, val_labelled = d.train_real, d.synthetic, d.train_records, d.val_labelled
    y_val = multi_hot([r.labels for r in val_labelled], names) if val_labelled else None
    val_texts = [r.text for r in val_labelled]

    y_true = multi_hot([r.labels for r in test], names)
    test_ids, test_texts = [r.id for r in test], [r.text for r in test]
    systems: dict[str, dict] = {}
    decisions: dict[str, np.ndarray] = {}  # test predictions (multi-hot) for the paired tests
    scores: dict[str, np.ndarray] = {}  # test scores, for calibration
    thresholds: dict[str, dict] = {}
    ev = dict(names=names, n_resamples=cfg.eval.n_resamples, seed=cfg.eval.seed)

    def add(name: str, pred: np.ndarray, **fields) -> None:
        systems[name] = {**evaluate_system(y_true, pred, **ev), **fields}
        decisions[name] = pred

    def add_tuned(name: str, val_scores: np.ndarray, test_scores: np.ndarray) -> None:
        t = tune_thresholds(y_val, val_scores, names=names)
        thresholds[name] = {**t.to_dict(names), "n_validation": len(y_val), "source": "rule-teacher labels"}
        add(f"{name}, thresholds tuned on validation", apply_thresholds(test_scores, t.values))

    # the rule teacher is always scored: with teacher.kind 'none' it is still the baseline users would run
    with timer.stage("teacher labels the test part"):
        teacher_pred = teacher.predict(test_texts)
        add("rule teacher", multi_hot(teacher_pred, names))
        write_jsonl(pred_dir / "teacher.jsonl", ({"id": i, "labels": p} for i, p in zip(test_ids, teacher_pred)))

    tfidf_name = None
    if cfg.eval.tfidf_baseline:
        with timer.stage("TF-IDF + logistic regression baseline"):
            from ..baselines.tfidf import TfidfLogRegBaseline

            base = TfidfLogRegBaseline(task.label_space).fit(train_records)
            proba = base.predict_proba(test_texts)
            source = "teacher labels" + (" + synthetic" if cfg.synthetic.n else "") if train_real else "synthetic"
            tfidf_name = f"TF-IDF + LR ({source})"
            add(tfidf_name, (proba >= 0.5).astype(np.int8))
            scores[tfidf_name] = proba
            if y_val is not None:
                add_tuned(tfidf_name, base.predict_proba(val_texts), proba)

    model_dir = out / "model"
    with timer.stage("fine-tune the student"):
        train_stats = train_or_reuse(train_records, task, out, cfg.train)

    student = "student (fine-tuned)"
    with timer.stage("student predicts the test part"):
        preds, info = run_llm_predictions(str(model_dir), task, test_texts, cfg.eval.batch_size, "student",
                                          cfg.eval.free_generation_sample)
        write_predictions(pred_dir / "student.jsonl", test_ids, preds)
        add(student, multi_hot([p.labels for p in preds], names), invalid_outputs=_invalid_note(info))
        scores[student] = _score_matrix(preds, names)
    if y_val is not None:
        with timer.stage("student predicts the validation split"):
            val_preds, _ = run_llm_predictions(str(model_dir), task, val_texts, cfg.eval.batch_size,
                                               "student (validation)")
            add_tuned("student", _score_matrix(val_preds, names), scores[student])

    if cfg.eval.zero_shot:
        with timer.stage("base model zero-shot"):
            preds0, info0 = run_llm_predictions(cfg.train.model, task, test_texts, cfg.eval.batch_size,
                                                "zero-shot", cfg.eval.free_generation_sample)
            write_predictions(pred_dir / "zero_shot.jsonl", test_ids, preds0)
            add("base model zero-shot", multi_hot([p.labels for p in preds0], names),
                invalid_outputs=_invalid_note(info0))

    with timer.stage("paired tests, calibration, fidelity"):
        sections, evidence = _evidence(cfg, y_true, decisions, scores, thresholds, student, tfidf_name,
                                       synthetic, train_real, test_ids, test_texts, names)

    extra = {
        "data": {"source": cfg.data.path, "pool": len(pool), "validation": len(validation), "test": len(test),
                 "train_real_teacher_labelled": len(train_real), "train_synthetic": len(synthetic),
                 "records_in_duplicate_groups": split["records_in_duplicate_groups"],
                 "split_rule": split["split_rule"]},
        "teacher": cfg.teacher.model_dump(),
        "training": train_stats,
        "timings_seconds": timer.timings,
        "hardware": hardware(),
        "invalid_outputs_note": ("LLM predictions use constrained decoding and are always valid; "
                                 "'invalid outputs' counts unparseable answers of unconstrained greedy "
                                 f"generation on the first {cfg.eval.free_generation_sample} test reports."),
    }
    write_report(out, cfg.title, systems, names, extra, sections=sections, evidence=evidence)
    write_provenance(out, config=cfg.model_dump(), data_sources={"real reports": cfg.data.path},
                     seeds={"synthetic": cfg.synthetic.seed, "train": cfg.train.seed, "eval": cfg.eval.seed},
                     models={"base": cfg.train.model, "student": str(model_dir)},
                     settings={"teacher": cfg.teacher.model_dump(), "synthetic": cfg.synthetic.model_dump()},
                     timings=timer.timings)
    for name, s in systems.items():
        log.info("%s: micro-F1 %.4f macro-F1 %.4f (n=%d)", name, s["micro"]["f1"], s["macro"]["f1"], len(test))
    console.print(format_table(systems), soft_wrap=True, markup=False)  # wide tables stay one line a row
    for c in evidence["paired"]:
        d = c["micro_f1"]
        console.print(f"{c['system_a']} - {c['system_b']}: micro-F1 {d['diff']:+.3f} "
                      f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}], p = {d['p_value']:.4f}", markup=False)
    console.print(f"report: {out / 'report.html'}")
    return {"systems": systems, "evidence": evidence, "extra": extra}


def _score_matrix(preds, names: list[str]) -> np.ndarray:
    """The constrained decoder's per-label scores (NaN, for an unfinished decode, read as 0)."""
    m = np.array([[p.scores[n] for n in names] for p in preds], dtype=np.float64)
    return np.nan_to_num(np.clip(m, 0.0, 1.0), nan=0.0)


def _evidence(cfg, y_true, decisions, scores, thresholds, student, tfidf_name, synthetic, train_real,
              test_ids, test_texts, names) -> tuple[list, dict]:
    """Paired tests (student vs teacher, student vs TF-IDF), calibration, fidelity of the synthetic
    reports and error examples: the report's sections and their numbers."""
    from ..evaluate.calibration import brier_score, reliability
    from ..evaluate.evidence import (calibration_section, error_examples, fidelity_section, mcnemar_section,
                                     paired_section)
    from ..evaluate.paired import compare_systems

    pairs = [(student, "rule teacher")] + ([(student, tfidf_name)] if tfidf_name else [])
    paired = compare_systems(y_true, decisions, pairs, names, n_resamples=cfg.eval.n_resamples, seed=cfg.eval.seed)
    rel = {name: {**reliability(y_true, s), "brier": brier_score(y_true, s)} for name, s in scores.items()}
    sections = [paired_section(paired), mcnemar_section(paired[0]), calibration_section(rel, thresholds)]
    evidence = {"paired": paired, "calibration": rel, "thresholds": thresholds}
    if synthetic and train_real:
        from ..evaluate.fidelity import fidelity_report

        fid = fidelity_report(synthetic, train_real, names=names, seed=cfg.eval.seed)
        evidence["fidelity"] = fid
        sections.append(fidelity_section(fid, "synthetic reports vs the teacher-labelled real pool"))
    if cfg.eval.error_examples:
        sections.append(error_examples(test_ids, test_texts, y_true, decisions[student], names,
                                       cfg.eval.error_examples, cfg.eval.include_text, student))
    return sections, evidence


def _invalid_note(info: dict) -> int | str:
    free = info.get("free_generation")
    return f"{free['invalid']}/{free['n']}" if free else 0
