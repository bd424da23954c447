"""Joint multi-task training (as Wei et al. did): one model fine-tuned on a weighted mixture of
tasks, evaluated on each task's real test data with that task's own metrics, next to the same
tasks trained alone.

Stages (each task's data stages are those of its own experiment, run into OUT/tasks/<task>/):

1. Per task, its training pool: radiology = teacher-labelled real reports + synthetic reports
   (`experiments.radiology.prepare_radiology_data`); rare-ddx = synthetic patients rendered as
   summaries (`experiments.rare_ddx.prepare_rare_ddx_data`). Each task's contamination guard runs
   as in its own experiment; a second guard checks the whole joint training set against every
   task's test records.
2. The mixture (`train.mixture`): weights are shares of the joint training examples; each task's
   examples are a seeded permutation of its pool (repeated in whole fresh permutations only when
   `mixture.n_examples` asks for more than the pool holds). OUT/data/mixture.json lists the draws.
3. The joint model: `train.sft.fit` on all drawn examples, each tokenised by its own task; its
   `synthdx_task.json` holds every task's spec (`load_trained_task(dir, task=...)`).
4. Alone (`mixture.alone`, default on): each task trained by itself on exactly the examples of that
   task the joint run drew, with the same training settings, for as many optimiser steps as the
   joint model (`mixture.alone_steps: joint`, the default: same compute, so a joint-vs-alone
   difference is not merely the joint run's extra steps) or for the same epochs (`epochs`: same
   data exposure, fewer steps). OUT/alone/<task>/model.
5. Evaluation per task, on that task's real test data only: radiology micro/macro-F1 on the
   held-out IU X-ray reports (curated labels), rare-ddx top-1/3/10/MRR of the model reranking the
   knowledge ranker's top K on the sampled published cases, alone and fused with the ranker (the
   fusion weight chosen per model on held-out synthetic patients). Joint vs alone: paired bootstrap
   of the difference (same test records) and McNemar (per label for radiology, top-1 for rare-ddx).
6. Report (report.md / report.html), metrics.json and provenance.json in OUT.

Every stage's output is kept in OUT and reused on a rerun (training resumes from its checkpoint).
A new task kind is added with a config entry (`config.MixtureTask`) and a part class here (prepare:
its training records; evaluate: its systems and paired comparisons).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import MixtureConfig, RadiologyTaskEntry, RareDdxTaskEntry
from ..distributed import on_all_ranks
from ..evaluate.sections import Section, write_sectioned_report
from ..io import read_jsonl, write_json, write_jsonl
from ..progress import StageTimer, console, log, make_progress, run_log
from ..provenance import write_provenance
from ..records import Record
from .common import claim_run_dir, hardware

JOINT, ALONE = "joint", "alone"
LEFT_OUT = ", own publication left out"


def _say(msg: str) -> None:
    console.print(msg, markup=False)
    log.info(msg)


class _Prefixed:
    """A StageTimer whose stage names carry the task's name (the task stages reuse plain names)."""

    def __init__(self, timer: StageTimer, prefix: str):
        self.timer, self.prefix = timer, prefix

    def stage(self, name: str):
        return self.timer.stage(f"{self.prefix}{name}")


def _labels(names: Sequence[str]) -> dict[str, str]:
    return {JOINT: f"joint ({' + '.join(names)})", ALONE: "alone"}


# ---------------------------------------------------------------- task parts

class RadiologyPart:
    """IU X-ray findings: training records from the radiology experiment's data stages; scored
    against the curated labels of the held-out reports."""

    name = "radiology"

    def __init__(self, entry: RadiologyTaskEntry, cfg: MixtureConfig, out: Path):
        from ..tasks.multilabel import radiology_task

        self.entry = entry
        self.cfg = entry.experiment(cfg.train, f"{cfg.title}: radiology")
        self.dir = out / "tasks" / self.name
        self.task = radiology_task(self.cfg.train.max_text_tokens)

    def prepare(self, timer) -> list[Record]:
        from .radiology import prepare_radiology_data

        self.data = prepare_radiology_data(self.cfg, self.dir, timer)
        return self.data.train_records

    def test_records(self) -> list[Record]:
        return self.data.test

    def evaluate(self, models: dict[str, str], labels: dict[str, str], drawn: list[Record], timer,
                 pred_dir: Path) -> dict:
        from ..evaluate import evaluate_system, multi_hot
        from ..evaluate.paired import compare_systems

        ec = self.cfg.eval
        names = self.task.label_space.names
        test = self.data.test
        ids, texts = [r.id for r in test], [r.text for r in test]
        y_true = multi_hot([r.labels for r in test], names)
        ev = {"names": names, "n_resamples": ec.n_resamples, "seed": ec.seed}
        systems: dict[str, dict] = {}
        decisions: dict[str, np.ndarray] = {}

        def add(name: str, pred: np.ndarray, **fields) -> None:
            systems[name] = {**evaluate_system(y_true, pred, **ev), **fields}
            decisions[name] = pred

        for key, path in models.items():
            with timer.stage(f"{labels[key]} predicts the test part"):
                rows, info = _cached_label_sets(pred_dir / f"{key}.jsonl", ids, path, self.task, texts, ec,
                                                f"{self.name}: {labels[key]}")
                add(labels[key], multi_hot(rows, names), invalid_outputs=info)
        with timer.stage("references: rule teacher" + (", TF-IDF" if ec.tfidf_baseline else "")):
            add("rule teacher (reference)", multi_hot(self.data.teacher.predict(texts), names))
            if ec.tfidf_baseline:
                from ..baselines.tfidf import TfidfLogRegBaseline

                # trained on the very records the models drew (repeats included)
                base = TfidfLogRegBaseline(self.task.label_space).fit(drawn)
                add("TF-IDF + LR on the same records (reference)",
                    (base.predict_proba(texts) >= 0.5).astype(np.int8))
        paired = []
        if JOINT in models and ALONE in models:
            with timer.stage("paired tests, joint vs alone"):
                paired = compare_systems(y_true, decisions, [(labels[JOINT], labels[ALONE])], names,
                                         n_resamples=ec.n_resamples, seed=ec.seed)
        return {"kind": "multilabel", "n_test": len(test), "systems": systems, "paired": paired,
                "data": {"pool": len(self.data.pool), "test": len(test),
                         "train_real_teacher_labelled": len(self.data.train_real),
                         "train_synthetic": len(self.data.synthetic), "split_rule": self.data.split["split_rule"]}}

    def sections(self, result: dict, labels: dict[str, str]) -> list[Section]:
        from ..evaluate.evidence import mcnemar_section, paired_section
        from ..evaluate.report import headline_rows

        header, rows = headline_rows(result["systems"])
        out = [Section(f"Radiology: {result['n_test']} held-out IU X-ray reports (curated labels)",
                       header=header, rows=rows,
                       text=("Constrained decoding (always a valid label set). 'invalid outputs' counts unparseable "
                             "answers of free generation on the first test reports."),
                       notes=[("References: the rule teacher (it labelled the training pool) and, when enabled, "
                               "TF-IDF + LR trained on the records the models drew.")])]
        if result["paired"]:
            out += [paired_section(result["paired"]), mcnemar_section(result["paired"][0])]
        return out

    def summary(self, result: dict, labels: dict[str, str]) -> list[dict]:
        s = result["systems"]
        rows = []
        for key, label in (("micro", "micro-F1"), ("macro", "macro-F1")):
            row = {"task": self.name, "metric": label, "n": result["n_test"],
                   **{k: _point(s.get(labels[k], {}).get(key), "f1") for k in (ALONE, JOINT)}}
            if result["paired"]:
                c = result["paired"][0]
                d = c[f"{key}_f1"]
                row["diff"] = {"diff": d["diff"], "ci": d["ci"], "p_value": d["p_value"]}
                if key == "micro":
                    sig = [x for x in c["per_label"] if x["p_holm"] < 0.05]
                    row["mcnemar"] = (f"labels joint better / worse (Holm p < 0.05): "
                                      f"{sum(x['f1_a'] > x['f1_b'] for x in sig)} / "
                                      f"{sum(x['f1_a'] < x['f1_b'] for x in sig)} of {len(c['per_label'])}")
            rows.append(row)
        return rows


class RareDdxPart:
    """Rare-disease ranking: synthetic patients from the rare-ddx experiment's data stages; the model
    reranks the knowledge ranker's top K for the sampled published cases."""

    name = "rare-ddx"

    def __init__(self, entry: RareDdxTaskEntry, cfg: MixtureConfig, out: Path):
        self.entry = entry
        self.cfg = entry.experiment(cfg.train, f"{cfg.title}: rare-ddx")
        self.dir = out / "tasks" / self.name

    def prepare(self, timer) -> list[Record]:
        from .rare_ddx import prepare_rare_ddx_data

        self.data = prepare_rare_ddx_data(self.cfg, self.dir, timer)
        self.task = self.data.task
        return self.data.records

    def test_records(self) -> list[Record]:
        return [Record(i, t, None) for i, t in zip(self.data.s_ids, self.data.s_texts)]

    def evaluate(self, models: dict[str, str], labels: dict[str, str], drawn: list[Record], timer,
                 pred_dir: Path) -> dict:
        from ..evaluate.ranking import evaluate_ranking
        from ..splits import publication_groups
        from .rare_ddx import (_fused_ranks, _model_scores, _ranking_rows, _retrieve, choose_weight,
                               paired_top1, store_rerank_settings, union_candidates)

        d, ec, k = self.data, self.cfg.eval, self.cfg.rerank.top_k
        sample, val = d.sample, d.val_cases
        cand_set = set(d.candidates)
        s_golds = [list(c.gold) for c in sample]
        s_cov = np.array([any(g in cand_set for g in gold) for gold in s_golds])
        s_obs = [len(c.patient.observed) for c in sample]
        s_pubs = publication_groups(sample)  # intervals resample whole publications
        v_golds = [list(c.gold) for c in val]
        v_texts, v_ids = d.validation_texts(), [c.id for c in val]
        ev = {"n_resamples": ec.n_resamples, "seed": ec.seed}
        with timer.stage(f"the knowledge ranker retrieves the top {k}"):
            ret, ret_val = _retrieve(d.ranker, sample, k, False), _retrieve(d.ranker, val, k, False)
            # with the case's own publication's annotations left out of the ranker's knowledge (the
            # harder, unflattered setting); one scoring pass covers both candidate lists
            ret_lo = _retrieve(d.ranker, sample, k, True) if ec.leave_out_own_publication else None
            s_cands, v_cands = union_candidates(ret, ret_lo), [r[0] for r in ret_val]
        systems = {"knowledge ranker (reference)": evaluate_ranking([r[2] for r in ret], s_cov, s_obs,
                                                                    groups=s_pubs, **ev)}
        if ret_lo is not None:
            systems[f"knowledge ranker (reference){LEFT_OUT}"] = evaluate_ranking([r[2] for r in ret_lo], s_cov,
                                                                                  s_obs, groups=s_pubs, **ev)
        hits: dict[str, dict[str, np.ndarray]] = {"model alone": {}, "model + ranker": {}}
        weights, system_names = {}, {}
        for key, path in models.items():
            label = labels[key]
            with timer.stage(f"{label} reranks the top {k}"):
                cache = self.dir / "data"
                v_ms = _model_scores(path, self.task, v_texts, v_cands, cache / f"scores_{key}_validation.json",
                                     v_ids, f"{self.name}: {label}, synthetic validation")
                s_ms = _model_scores(path, self.task, d.s_texts, s_cands, cache / f"scores_{key}_cases.json",
                                     d.s_ids, f"{self.name}: {label}, real cases")
                w, table = choose_weight(ret_val, v_ms, v_golds, self.cfg.rerank.weights)
                weights[label] = {"chosen": w, "tried": table}
                alone = _fused_ranks(ret, s_ms, s_golds, float("inf"))
                fused = _fused_ranks(ret, s_ms, s_golds, w)
                n_alone, n_fused = f"{label}: model reranks top {k}", f"{label}: model + ranker (weight {w:g})"
                systems[n_alone] = evaluate_ranking(alone, s_cov, s_obs, groups=s_pubs, **ev)
                systems[n_fused] = evaluate_ranking(fused, s_cov, s_obs, groups=s_pubs, **ev)
                if ret_lo is not None:
                    systems[n_alone + LEFT_OUT] = evaluate_ranking(
                        _fused_ranks(ret_lo, s_ms, s_golds, float("inf")), s_cov, s_obs, groups=s_pubs, **ev)
                    systems[n_fused + LEFT_OUT] = evaluate_ranking(
                        _fused_ranks(ret_lo, s_ms, s_golds, w), s_cov, s_obs, groups=s_pubs, **ev)
                system_names[key] = {"model alone": n_alone, "model + ranker": n_fused}
                hits["model alone"][key] = np.asarray(alone) == 1
                hits["model + ranker"][key] = np.asarray(fused) == 1
                write_jsonl(pred_dir / f"{key}.jsonl", _ranking_rows(d.s_ids, ret, s_ms, w, self.task.names))
                if key in (JOINT, ALONE):
                    store_rerank_settings(Path(path), k, w, self.cfg.knowledge.prior, task=self.name)
        paired = []
        if JOINT in models and ALONE in models:
            for mode, h in hits.items():
                paired.append({"mode": mode, **paired_top1(system_names[JOINT][mode], h[JOINT],
                                                           system_names[ALONE][mode], h[ALONE], s_pubs, **ev)})
        return {"kind": "ranking", "n_test": len(sample), "systems": systems, "paired": paired,
                "fusion_weights": weights, "system_names": system_names,
                "data": {"labelled_cases": len(d.cases), "model_cases": len(sample), "candidates": len(d.candidates),
                         "hpo_version": d.knowledge.version, "synthetic_training_patients": len(d.train_cases),
                         "synthetic_validation_patients": len(val)}}

    def sections(self, result: dict, labels: dict[str, str]) -> list[Section]:
        from ..evaluate.ranking_report import RANKING_HEADER, ranking_rows
        from .rare_ddx import _paired_section

        k = self.cfg.rerank.top_k
        out = [Section(f"Rare-ddx: {result['n_test']} published cases (phenopacket-store)", header=RANKING_HEADER,
                       rows=ranking_rows(result["systems"]),
                       text=(f"The knowledge ranker's top {k} of {result['data']['candidates']} candidates are "
                             "reranked by each model (log-probability of each disease name); '+ ranker' adds the "
                             "ranker's log-posterior with a weight chosen per model on held-out synthetic "
                             "patients. Rows ending 'own publication left out' retrieve with the ranker whose "
                             "knowledge lacks the annotations citing the case's own publication; the model "
                             "scores and fusion weight are the same, and the model was trained on patients "
                             "generated from the full annotations, which flatters its rows there."),
                       notes=[f"fusion weight chosen for {m}: {v['chosen']:g}{_share(v)}" for m, v in
                              result["fusion_weights"].items()])]
        if result["paired"]:
            out.append(_paired_section(result["paired"]))
        return out

    def summary(self, result: dict, labels: dict[str, str]) -> list[dict]:
        rows = []
        for mode in ("model alone", "model + ranker"):
            names = result["system_names"]
            row = {"task": self.name, "metric": f"top-1, {mode}", "n": result["n_test"],
                   **{key: _point(result["systems"][names[key][mode]]["all"], "top1") if key in names else None
                      for key in (ALONE, JOINT)}}
            for c in result["paired"]:
                if c["mode"] == mode:  # published cases: the interval that resamples whole publications
                    d = c["top1_by_publication"]
                    row["diff"] = {"diff": d["diff"], "ci": d["ci"], "p_value": d["p_value"]}
                    m = c["mcnemar"]
                    row["mcnemar"] = f"only joint / only alone first: {m['b']} / {m['c']}, exact p {_p(m['p_value'])}"
            rows.append(row)
        return rows


PARTS = {"radiology": RadiologyPart, "rare-ddx": RareDdxPart}


# ---------------------------------------------------------------- helpers

def _point(d: dict | None, key: str) -> dict | None:
    if not d or d.get(key) is None:
        return None
    return {"value": d[key], "ci": d.get(f"{key}_ci")}


def _share(weights: dict) -> str:
    """How often the chosen fusion weight wins when the validation patients are resampled."""
    share = weights["tried"][str(weights["chosen"])].get("chosen_share")
    return "" if share is None else f" (chosen in {share:.0%} of 1,000 resamples of the validation patients)"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _cached_label_sets(path: Path, ids: list[str], model_path: str, task, texts: list[str], ec, desc: str
                       ) -> tuple[list[list[str]], int | str]:
    """The model's constrained label sets for `texts` (kept in `path`; reused when all ids are
    there), and the invalid share of free generation on the first `free_generation_sample` texts."""
    from .radiology import _invalid_note, run_llm_predictions, write_predictions

    info_path = path.with_suffix(".info.json")
    if path.exists() and info_path.exists():
        rows = {str(row["id"]): row["labels"] for _, row in read_jsonl(path)}
        if all(i in rows for i in ids):
            return [rows[i] for i in ids], json.loads(info_path.read_text())["invalid_outputs"]
    preds, info = run_llm_predictions(model_path, task, texts, ec.batch_size, desc, ec.free_generation_sample)
    write_predictions(path, ids, preds)
    invalid = _invalid_note(info)
    write_json(info_path, {"invalid_outputs": invalid, **info})
    return [p.labels for p in preds], invalid


def _fit_or_reuse(examples, tokenizer, spec: dict, out_dir: Path, train_section, desc: str) -> dict:
    """`train.sft.fit` into out_dir/model, or the finished model already there (an interrupted
    training resumes from its checkpoint)."""
    from ..train.sft import TASK_FILE, TrainConfig, fit

    model_dir = out_dir / "model"
    if (model_dir / TASK_FILE).exists():
        _say(f"{model_dir} exists: reusing the trained model")
        stats = dict(json.loads((model_dir / TASK_FILE).read_text())["train_stats"])
    else:
        with make_progress() as bar:
            t = bar.add_task(desc, total=1, info="")

            def report(step: int, total: int, loss: float) -> None:
                bar.update(t, completed=step, total=total, info=f"loss {loss:.3f}")
                if step % 10 == 0 or step == total:
                    log.info("%s: training step %d/%d loss %.4f", desc, step, total, loss)

            # data-parallel over the processes under torchrun (see distributed.on_all_ranks)
            stats = on_all_ranks(fit, examples, tokenizer, spec, out_dir, TrainConfig(**train_section.model_dump()),
                                 main_kwargs={"progress": report})
    for key in ("losses", "step_tokens"):
        stats.pop(key, None)
    _say(f"{desc}: {stats['examples']} examples, {stats['steps']} steps, {stats['tokens']} tokens, "
         f"{stats['tokens_per_second']} tokens/s ({stats['dtype']})")
    return stats


def _alone_means(cfg: MixtureConfig) -> str:
    how = ("as many optimiser steps as the joint model (more passes over its examples)"
           if cfg.mixture.alone_steps == "joint" else f"the same {cfg.train.epochs:g} epoch(s) (fewer optimiser steps)")
    return (f"each task trained by itself on exactly the examples of that task the joint run drew, with the same "
            f"settings, for {how}")


def _draw_summary(pools: dict[str, list[Record]], drawn: dict[str, list[Record]], weights: dict[str, float]) -> dict:
    total = sum(len(v) for v in drawn.values())
    out = {}
    for name, recs in drawn.items():
        counts: dict[str, int] = {}
        for r in recs:
            counts[r.id] = counts.get(r.id, 0) + 1
        out[name] = {"weight": weights[name], "pool": len(pools[name]), "drawn": len(recs),
                     "share": len(recs) / total if total else 0.0, "distinct": len(counts),
                     "max_repeats": max(counts.values(), default=0)}
    return out


# ---------------------------------------------------------------- the run

def run_mixture(cfg: MixtureConfig, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with run_log(out / "run.log"):
        return _run(cfg, out)


def _run(cfg: MixtureConfig, out: Path) -> dict:
    from ..evaluate.contamination import guard_contamination
    from ..models.loading import load_tokenizer
    from ..train.mixture import draw_mixture, multi_task_spec

    claim_run_dir(out, cfg)
    timer = StageTimer()
    parts = [PARTS[e.task](e, cfg, out) for e in cfg.tasks]
    names = [p.name for p in parts]
    labels = _labels(names)
    weights = cfg.weights

    pools: dict[str, list[Record]] = {}
    for p in parts:
        pools[p.name] = p.prepare(_Prefixed(timer, f"{p.name}: "))
        _say(f"{p.name}: {len(pools[p.name])} training records in the pool")

    with timer.stage("draw the mixture"):
        drawn = draw_mixture(pools, weights, cfg.mixture.n_examples, cfg.mixture.seed)
        summary = _draw_summary(pools, drawn, weights)
        write_json(out / "data" / "mixture.json", {
            "rule": "per task a seeded permutation of its pool, taken from the start (whole fresh permutations "
                    "again only when the share exceeds the pool); counts by largest remainder",
            "seed": cfg.mixture.seed, "n_examples": cfg.mixture.n_examples, "tasks": summary,
            "ids": {k: [r.id for r in v] for k, v in drawn.items()}})
        for name, s in summary.items():
            _say(f"{name}: weight {s['weight']:.3f}, {s['drawn']} of the joint examples ({s['distinct']} distinct "
                 f"of a pool of {s['pool']})")

    with timer.stage("contamination guard (joint training set vs every task's test records)"):
        joint_records = [r for p in parts for r in drawn[p.name]]
        for p in parts:
            guard_contamination(joint_records, p.test_records(),
                                what=f"the {p.name} test records (against the joint training records)")

    tokenizer = load_tokenizer(cfg.train.model)
    examples = {p.name: [p.task.build_example(tokenizer, r) for r in drawn[p.name]] for p in parts}
    training: dict[str, dict] = {}
    with timer.stage("train the joint model"):
        spec = multi_task_spec({p.name: p.task.spec() for p in parts}, weights,
                               {k: len(v) for k, v in examples.items()})
        training[labels[JOINT]] = _fit_or_reuse([e for p in parts for e in examples[p.name]], tokenizer, spec,
                                                out / JOINT, cfg.train, "joint model")
    if cfg.mixture.alone:
        alone_train = cfg.train
        if cfg.mixture.alone_steps == "joint":
            alone_train = cfg.train.model_copy(update={"max_steps": training[labels[JOINT]]["steps"]})
        for p in parts:
            with timer.stage(f"train {p.name} alone"):
                training[f"{p.name} alone"] = _fit_or_reuse(examples[p.name], tokenizer, p.task.spec(),
                                                            out / ALONE / p.name, alone_train, f"{p.name} alone")

    results: dict[str, dict] = {}
    for p in parts:
        models = {JOINT: str(out / JOINT / "model")}
        if cfg.mixture.alone:
            models[ALONE] = str(out / ALONE / p.name / "model")
        if getattr(p.cfg.eval, "zero_shot", False):
            models["zero_shot"] = cfg.train.model
        lab = {**labels, "zero_shot": "base model zero-shot"}
        results[p.name] = p.evaluate(models, lab, drawn[p.name], _Prefixed(timer, f"{p.name}: "),
                                     out / "predictions" / p.name)

    with timer.stage("report"):
        summary_rows = [row for p in parts for row in p.summary(results[p.name], labels)]
        sections = _sections(cfg, parts, results, summary, training, summary_rows, labels)
        metrics = {"summary": summary_rows, "tasks": results, "mixture": summary, "training": training}
        extra = {"timings_seconds": timer.timings, "hardware": hardware(),
                 "alone_means": _alone_means(cfg) if cfg.mixture.alone else "not run"}
        write_sectioned_report(out, cfg.title, sections, metrics, extra)
        write_provenance(out, config=cfg.model_dump(),
                         data_sources={f"{p.name}: real data": p.cfg.data.path for p in parts},
                         seeds={"mixture": cfg.mixture.seed, "train": cfg.train.seed,
                                **{f"{p.name}: synthetic": p.cfg.synthetic.seed for p in parts},
                                **{f"{p.name}: eval": p.cfg.eval.seed for p in parts}},
                         models={"base": cfg.train.model, "joint": str(out / JOINT / "model"),
                                 **({f"{p.name} alone": str(out / ALONE / p.name / "model") for p in parts}
                                    if cfg.mixture.alone else {})},
                         settings={"weights": weights, "mixture": summary,
                                   **{f"{p.name}: task": p.task.spec() for p in parts}},
                         timings=timer.timings)
    for row in summary_rows:
        _say(_summary_line(row))
    console.print(f"report: {out / 'report.html'}")
    return metrics


def _cell(d: dict | None) -> str:
    if not d:
        return "—"
    ci = d.get("ci")
    return f"{d['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _diff_cell(d: dict | None) -> str:
    if not d:
        return "—"
    return f"{d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"


def _summary_line(row: dict) -> str:
    line = f"{row['task']} {row['metric']}: alone {_cell(row.get(ALONE))}, joint {_cell(row.get(JOINT))}"
    if row.get("diff"):
        line += f", joint - alone {_diff_cell(row['diff'])}, p = {_p(row['diff']['p_value'])}"
    return line


def _sections(cfg, parts, results, summary, training, summary_rows, labels) -> list[Section]:
    w_text = ", ".join(f"{n} {s['weight']:.2f}" for n, s in summary.items())
    head = Section(
        "Joint vs alone, per task", header=["task", "metric", "test records", "alone [95% CI]", "joint [95% CI]",
                                            "joint − alone [95% CI]", "p (paired bootstrap)", "McNemar"],
        rows=[[r["task"], r["metric"], str(r["n"]), _cell(r.get(ALONE)), _cell(r.get(JOINT)),
               _diff_cell(r.get("diff")), _p(r["diff"]["p_value"]) if r.get("diff") else "—", r.get("mcnemar", "—")]
              for r in summary_rows], num_from=2,
        text=(f"One model trained on the mixture ({w_text}) against {_alone_means(cfg)}. Each task is scored on its "
              "own real test data with its own metrics; the difference is a paired bootstrap over the same test "
              "records (rare-ddx: over whole publications, whose cases are alike)."))
    mix = Section(
        "The mixture", header=["task", "weight", "pool", "examples in the joint run", "share", "distinct", "max repeats"],
        rows=[[n, f"{s['weight']:.3f}", str(s["pool"]), str(s["drawn"]), f"{s['share']:.3f}", str(s["distinct"]),
               str(s["max_repeats"])] for n, s in summary.items()], num_from=1,
        text=("Weights are shares of the joint training examples. Each task's examples are a seeded permutation of "
              "its pool, taken from the start; only when mixture.n_examples asks for more than a pool holds is it "
              "repeated, in whole fresh permutations. The training loop shuffles the joint examples into "
              "length-grouped batches, so the tasks alternate through training."))
    train = Section(
        "Training", header=["model", "examples", "steps", "tokens", "seconds", "tokens/s", "precision"],
        rows=[[name, str(s["examples"]), str(s["steps"]), str(s["tokens"]), f"{s['seconds']:.0f}",
               str(s["tokens_per_second"]), str(s["dtype"])] for name, s in training.items()], num_from=1,
        text=f"Shared settings: {cfg.train.method} fine-tuning of {cfg.train.model}, {cfg.train.epochs:g} epoch(s), "
             f"batch {cfg.train.batch_size}, learning rate {cfg.train.learning_rate}, seed {cfg.train.seed}.")
    out = [head, mix, train]
    for p in parts:
        out += p.sections(results[p.name], labels)
    return out
