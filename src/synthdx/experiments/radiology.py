"""The radiology experiment, end to end: real reports -> rule-teacher labels (+ synthetic reports)
-> fine-tuned student -> predictions on the held-out real reports -> scores against curated labels.

Every stage writes its output into the run directory; a stage whose output is already there is
skipped, so an interrupted run picks up where it stopped (training resumes from its checkpoint).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import ExperimentConfig
from ..datasets import load_records
from ..evaluate import evaluate_system, format_table, multi_hot, write_report
from ..io import read_jsonl, write_json, write_jsonl
from ..progress import StageTimer, console, log, make_progress, run_log
from ..records import Record
from ..splits import hash_split
from ..tasks.multilabel import radiology_task
from .common import claim_run_dir, hardware, train_or_reuse


def _records_jsonl(path: Path, records: list[Record]) -> None:
    write_jsonl(path, (r.to_dict() for r in records))


def _read_records(path: Path) -> list[Record]:
    return [Record.from_dict(row) for _, row in read_jsonl(path)]


def write_predictions(path: Path, ids: list[str], preds) -> None:
    write_jsonl(path, ({"id": i, "labels": p.labels, "scores": p.scores} for i, p in zip(ids, preds)))


def run_llm_predictions(model_path: str, task, texts: list[str], batch_size: int, desc: str,
                        free_sample: int = 0) -> tuple[list, dict]:
    """Constrained predictions for all texts, plus free-generation parsing on the first `free_sample`."""
    from ..infer.predict import generate_free, predict_label_sets
    from ..models.loading import default_device, load_causal_lm, load_tokenizer, pick_dtype

    device = default_device()
    dtype = pick_dtype(device)
    tok = load_tokenizer(model_path)
    model = load_causal_lm(model_path, dtype=torch.float32, device=device)
    autocast = dtype if dtype != torch.float32 else None
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


def run_radiology(cfg: ExperimentConfig, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with run_log(out / "run.log"):
        return _run_radiology(cfg, out)


def _run_radiology(cfg: ExperimentConfig, out: Path) -> dict:
    claim_run_dir(out, cfg)
    timer = StageTimer()
    task = radiology_task(cfg.train.max_text_tokens)
    names = task.label_space.names
    data_dir, pred_dir = out / "data", out / "predictions"

    with timer.stage("load and split real reports"):
        records = load_records(cfg.data.path, cfg.data.loader)
        unlabelled = [r.id for r in records if r.labels is None]
        if unlabelled:
            raise ValueError(f"{cfg.data.path}: {len(unlabelled)} records have no curated labels "
                             f"(first: {unlabelled[0]}); the test part needs them")
        pool, test = hash_split(records, cfg.data.test_fraction, cfg.data.split_salt)
        if cfg.data.max_train_pool:
            pool = pool[: cfg.data.max_train_pool]
        write_json(data_dir / "split.json", {"rule": f"sha256('{cfg.data.split_salt}:'+id) < "
                                             f"{cfg.data.test_fraction} -> test", "pool": [r.id for r in pool],
                                             "test": [r.id for r in test]})
        msg = f"{len(records)} scored reports: {len(pool)} in the training pool, {len(test)} in the test part"
        console.print(msg)
        log.info(msg)

    from ..teachers.radiology_rules import RadiologyRuleLabeler

    teacher = RadiologyRuleLabeler(uncertain=cfg.teacher.uncertain).fit()
    train_real: list[Record] = []
    if cfg.teacher.kind == "rules":
        with timer.stage("teacher labels the pool"):
            labelled_path = data_dir / "pool_teacher.jsonl"
            if labelled_path.exists():
                train_real = _read_records(labelled_path)
            else:
                # the pool's curated labels are never used for training: only the teacher's
                unlabelled_pool = [Record(r.id, r.text, None, dict(r.meta)) for r in pool]
                train_real = teacher.label(unlabelled_pool)
                _records_jsonl(labelled_path, train_real)
    elif not cfg.synthetic.n:
        raise ValueError("teacher.kind is 'none' and synthetic.n is 0: there is nothing to train on")

    train_records = list(train_real)
    if cfg.synthetic.n:
        with timer.stage("generate synthetic reports"):
            from ..synth.radiology_reports import RadiologyReportGenerator

            synth_path = data_dir / "synthetic.jsonl"
            if synth_path.exists():
                synthetic = _read_records(synth_path)
            else:
                gen = RadiologyReportGenerator(seed=cfg.synthetic.seed)
                if cfg.synthetic.fit_to_teacher_labels and train_real:
                    gen.fit(train_real)
                synthetic = gen.generate(cfg.synthetic.n)
                _records_jsonl(synth_path, synthetic)
            train_records += synthetic

    y_true = multi_hot([r.labels for r in test], names)
    test_ids, test_texts = [r.id for r in test], [r.text for r in test]
    systems: dict[str, dict] = {}
    ev = dict(names=names, n_resamples=cfg.eval.n_resamples, seed=cfg.eval.seed)

    # the rule teacher is always scored: with teacher.kind 'none' it is still the baseline users would run
    with timer.stage("teacher labels the test part"):
        teacher_pred = teacher.predict(test_texts)
        systems["rule teacher"] = evaluate_system(y_true, multi_hot(teacher_pred, names), **ev)
        write_jsonl(pred_dir / "teacher.jsonl", ({"id": i, "labels": p} for i, p in zip(test_ids, teacher_pred)))

    if cfg.eval.tfidf_baseline:
        with timer.stage("TF-IDF + logistic regression baseline"):
            from ..baselines.tfidf import TfidfLogRegBaseline

            base = TfidfLogRegBaseline(task.label_space).fit(train_records)
            proba = base.predict_proba(test_texts)
            source = "teacher labels" + (" + synthetic" if cfg.synthetic.n else "") if train_real else "synthetic"
            systems[f"TF-IDF + LR ({source})"] = evaluate_system(y_true, (proba >= 0.5).astype(int), **ev)

    model_dir = out / "model"
    with timer.stage("fine-tune the student"):
        train_stats = train_or_reuse(train_records, task, out, cfg.train)

    with timer.stage("student predicts the test part"):
        preds, info = run_llm_predictions(str(model_dir), task, test_texts, cfg.eval.batch_size, "student",
                                          cfg.eval.free_generation_sample)
        write_predictions(pred_dir / "student.jsonl", test_ids, preds)
        s = evaluate_system(y_true, multi_hot([p.labels for p in preds], names), **ev)
        s["invalid_outputs"] = _invalid_note(info)
        systems["student (fine-tuned)"] = s

    if cfg.eval.zero_shot:
        with timer.stage("base model zero-shot"):
            preds0, info0 = run_llm_predictions(cfg.train.model, task, test_texts, cfg.eval.batch_size,
                                                "zero-shot", cfg.eval.free_generation_sample)
            write_predictions(pred_dir / "zero_shot.jsonl", test_ids, preds0)
            s = evaluate_system(y_true, multi_hot([p.labels for p in preds0], names), **ev)
            s["invalid_outputs"] = _invalid_note(info0)
            systems["base model zero-shot"] = s

    extra = {
        "data": {"source": cfg.data.path, "pool": len(pool), "test": len(test),
                 "train_real_teacher_labelled": len(train_real), "train_synthetic": len(train_records) - len(train_real),
                 "split_rule": f"test if sha256('{cfg.data.split_salt}:'+uid) maps below {cfg.data.test_fraction}"},
        "teacher": cfg.teacher.model_dump(),
        "training": train_stats,
        "timings_seconds": timer.timings,
        "hardware": hardware(),
        "invalid_outputs_note": ("LLM predictions use constrained decoding and are always valid; "
                                 "'invalid outputs' counts unparseable answers of unconstrained greedy "
                                 f"generation on the first {cfg.eval.free_generation_sample} test reports."),
    }
    write_report(out, cfg.title, systems, names, extra)
    for name, s in systems.items():
        log.info("%s: micro-F1 %.4f macro-F1 %.4f (n=%d)", name, s["micro"]["f1"], s["macro"]["f1"], len(test))
    console.print(format_table(systems), soft_wrap=True, markup=False)  # wide tables stay one line a row
    console.print(f"report: {out / 'report.html'}")
    return {"systems": systems, "extra": extra}


def _invalid_note(info: dict) -> int | str:
    free = info.get("free_generation")
    return f"{free['invalid']}/{free['n']}" if free else 0
