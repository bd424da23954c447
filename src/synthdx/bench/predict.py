"""`synthdx bench predict`: prediction records per second, synthdx's path against the plain path a
user would write with transformers, on the same records, side by side in one run.

Radiology (multi-label finding detection)
  plain: one report at a time: `task.prompt_ids` -> `model.generate` (greedy, fp32, stops at the
         end-of-turn token) -> `task.parse`.
  ours:  `infer.predict.predict_label_sets`: length-sorted, padding-aware batches, the shared prompt
         prefix encoded once (KV cache), grammar-constrained greedy decoding with one forward pass
         per choice (forced tokens appended without a pass), the LM head restricted to the ~40
         tokens the grammar can allow.
  Fairness. An untrained base model (the default, `smollm2-135m`) does not stop: left to itself,
  `generate` would write until `max_new_tokens`, and the plain path would look slow for a reason
  that has nothing to do with how it runs. So for a base model the plain path gets, per record,
  `max_new_tokens` = the number of answer tokens our path wrote for that record (end token
  included), i.e. the work a model trained to stop after the same answer would do; both paths then
  process the same number of answer tokens. A synthdx-trained model (`--model RUN/model`) stops by
  itself: it gets `max_new_tokens=48` (as `infer.predict.generate_free`) and its own stopping
  point. Agreement (the plain path's parsed labels = ours) is meaningful only for a trained model:
  a base model's free text rarely parses, so for it the JSON's agreement says little; that the
  fast path gives exactly the labels of a plain one-token-at-a-time constrained decoder is what
  tests/test_fast_path_equals_slow_path.py checks.
  Records: a fixed seeded sample of the real IU X-ray dev reports (`../shared/data/iu-xray/
  indiana_reports.dev.csv`, the path the radiology configs use) when present, else synthetic
  reports from `synth.RadiologyReportGenerator`; the JSON says which.

Rare-disease differential diagnosis
  Both paths score the knowledge ranker's top K (10) candidates of each case by the model's
  log-probability of the candidate's name after the patient's summary (`tasks.rare_ddx`).
  plain: per case, per candidate, one full forward pass over prompt + name (what one writes with
         transformers to score options), logits kept only for the name's positions
         (`logits_to_keep`), log-softmax, summed.
  ours:  `infer.rerank.score_names`: the shared prefix once per run, each prompt once, the K names
         in one batched pass on the prompt's KV cache.
  Agreement: the top-1 candidate of the two paths (and the largest score difference).
  Cases: a seeded sample of dev phenopackets (`../shared/data/phenopacket-store/
  phenopacket-store.dev.zip`) when present, else synthetic patients (`synth.HPOPatientGenerator`).

Precision: the plain path runs in fp32 (transformers' default on a CPU). Ours runs under bf16
autocast where the CPU runs bf16 natively (AMX or AVX512-BF16; `--precision auto`, as `synthdx
predict` and the experiments do), else in fp32; `--precision fp32` benchmarks ours in fp32 too. In
bf16 a near-tie between two labels or two candidate names can go the other way, so agreement with
the fp32 plain path may fall below 100% for reasons that have nothing to do with the fast path.

Timing: both paths are warmed up on two records first (not timed). The records are split into
`rounds` groups and the paths alternate group by group (ours first in even rounds, plain first in
odd), so a change in machine load during the run falls on both. Wall time gives records/s and
`speedup` = ours / plain; process CPU time per record is reported too (less sensitive to other
jobs on a shared machine). Model loading, data loading and the ranker are outside the timings.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

from ..errors import SynthdxError
from ..progress import console
from .common import describe, machine, markdown_table, print_table, save

IU_XRAY = Path("../shared/data/iu-xray/indiana_reports.dev.csv")
PHENOPACKETS = Path("../shared/data/phenopacket-store/phenopacket-store.dev.zip")
TASKS = ("radiology", "rare-ddx")
TRAINED_MAX_NEW_TOKENS = 48


def _data_path(rel: Path) -> Path | None:
    """The shared-data file seen from the working directory, else from the repository root."""
    root = Path(__file__).resolve().parents[3]
    for p in (rel, root / rel):
        if p.exists():
            return p
    return None


def _timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def _alternate(n: int, rounds: int, ours: Callable[[slice], object], plain: Callable[[slice], object]
               ) -> dict:
    """Run both paths over the n records in `rounds` groups, alternating which goes first."""
    bounds = np.linspace(0, n, max(1, min(rounds, n)) + 1).astype(int)
    acc = {"ours": [0.0, 0.0, []], "plain": [0.0, 0.0, []]}
    for k, (a, b) in enumerate(pairwise(bounds)):
        order = (("ours", ours), ("plain", plain)) if k % 2 == 0 else (("plain", plain), ("ours", ours))
        for name, fn in order:
            out, wall, cpu = _timed(lambda fn=fn, s=slice(a, b): fn(s))
            acc[name][0] += wall
            acc[name][1] += cpu
            acc[name][2].extend(out)
    return acc


def _figures(n: int, acc: dict) -> dict:
    ours_wall, ours_cpu, _ = acc["ours"]
    plain_wall, plain_cpu, _ = acc["plain"]
    return {"records": n,
            "plain": {"seconds": round(plain_wall, 3), "cpu_seconds": round(plain_cpu, 3),
                      "records_per_s": round(n / plain_wall, 4)},
            "ours": {"seconds": round(ours_wall, 3), "cpu_seconds": round(ours_cpu, 3),
                     "records_per_s": round(n / ours_wall, 4)},
            "speedup": round(plain_wall / ours_wall, 3),
            "speedup_cpu_time": round(plain_cpu / ours_cpu, 3) if ours_cpu > 0 else None}


# ---- radiology ----------------------------------------------------------------------------------

def _radiology_texts(n: int, seed: int) -> tuple[list[str], str]:
    path = _data_path(IU_XRAY)
    if path is not None:
        from ..datasets.iu_xray import load_iu_xray

        recs = load_iu_xray(path)
        recs = random.Random(seed).sample(recs, min(n, len(recs)))
        return [r.text for r in recs], f"IU X-ray dev reports ({path.name}, seeded sample of {len(recs)})"
    from ..synth.radiology_reports import RadiologyReportGenerator

    recs = RadiologyReportGenerator(seed=seed).generate(n)
    return [r.text for r in recs], f"synthetic reports (RadiologyReportGenerator, seed {seed}; {IU_XRAY} not found)"


@torch.no_grad()
def _plain_generate(lm, tok, task, texts: Sequence[str], budgets: Sequence[int]) -> list[tuple[list[str], bool, int]]:
    """The plain path: one record at a time, model.generate, parse. (labels, valid, new tokens)."""
    from ..tasks.prompting import end_token_id

    end = end_token_id(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else end
    out = []
    for text, budget in zip(texts, budgets):
        ids = torch.tensor([task.prompt_ids(tok, text)[0]])
        gen = lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                          max_new_tokens=budget, eos_token_id=end, pad_token_id=pad)
        new = gen[0, ids.shape[1]:]
        labels, valid = task.parse(tok.decode(new, skip_special_tokens=True))
        out.append((labels, valid, int(new.shape[0])))
    return out


def bench_radiology(lm, tok, task, texts: Sequence[str], trained: bool, batch_size: int, rounds: int,
                    ours_lm=None, autocast_dtype: torch.dtype | None = None) -> dict:
    """`lm` runs the plain path; `ours_lm` (default `lm`) ours, under `autocast_dtype`."""
    from functools import partial

    from ..infer.predict import predict_label_sets

    predict_label_sets = partial(predict_label_sets, ours_lm or lm, autocast_dtype=autocast_dtype)

    def budgets(preds: Sequence) -> list[int]:
        # a base model: the length of our answer (labels, separators, end); a trained one stops itself
        return [TRAINED_MAX_NEW_TOKENS if trained else len(task.answer_ids(tok, p.labels)) for p in preds]

    # warm-up (not timed): both paths on two records
    warm = predict_label_sets(tok, task, texts[:2], batch_size=batch_size)
    _plain_generate(lm, tok, task, texts[:2], budgets(warm))
    # the plain path's budgets need our answers when it runs first in a round: computed here, untimed
    budget = budgets(predict_label_sets(tok, task, texts, batch_size=batch_size)) if not trained \
        else budgets(texts)

    stats: dict = {}
    calls = [0]

    def ours(s: slice):
        calls[0] += 1
        return predict_label_sets(tok, task, texts[s], batch_size=batch_size, stats=stats)

    def plain(s: slice):
        return _plain_generate(lm, tok, task, texts[s], budget[s])

    acc = _alternate(len(texts), rounds, ours, plain)
    ours_out, plain_out = acc["ours"][2], acc["plain"][2]
    res = _figures(len(texts), acc)
    agree = sum(p.labels == q[0] for p, q in zip(ours_out, plain_out))
    res.update({
        "plain_max_new_tokens": ("48 (trained model: stops at its end token)" if trained
                                 else "per record, our answer's token count (base model)"),
        "agreement": round(agree / len(texts), 4), "agreement_count": agree,
        "plain_valid": sum(q[1] for q in plain_out),
        "plain_new_tokens": sum(q[2] for q in plain_out),
        "ours_answer_tokens": stats.get("tokens", 0),
        "ours_forward_passes": stats.get("passes", 0) + calls[0],  # + the shared prefix, once per call
        "ours_batches": stats.get("batches", 0),
        "ours_prompt_tokens": stats.get("prompt_tokens", 0),
        "ours_padded_prompt_tokens": stats.get("padded_prompt_tokens", 0),
        "plain_forward_passes": sum(q[2] for q in plain_out),
        "incomplete": sum(not p.complete for p in ours_out),
    })
    return res


# ---- rare-ddx -----------------------------------------------------------------------------------

def _rare_cases(n: int, seed: int, knowledge) -> tuple[list, str]:
    path = _data_path(PHENOPACKETS)
    if path is not None:
        import zipfile

        from ..datasets.phenopackets import _load_json_bytes, parse_phenopacket

        with zipfile.ZipFile(path) as z:
            members = sorted(m for m in z.namelist() if m.lower().endswith(".json") and not m.endswith("/")
                             and not m.startswith("__MACOSX/") and not Path(m).name.startswith("._"))
            rng = random.Random(seed)
            cases = []
            for m in rng.sample(members, len(members)):
                case = parse_phenopacket(_load_json_bytes(z.read(m), m), f"{path} (member {m})")
                if case.patient.observed:
                    cases.append(case)
                if len(cases) == n:
                    break
        return cases, f"dev phenopackets ({path.name}, seeded sample of {len(cases)})"
    from ..synth.hpo_patients import HPOPatientGenerator

    gen = HPOPatientGenerator(knowledge, seed=seed)
    diseases = random.Random(seed).sample(gen.usable_diseases(), n)
    return gen.generate(diseases, 1), f"synthetic patients (HPOPatientGenerator, seed {seed}; {PHENOPACKETS} not found)"


@torch.no_grad()
def _plain_scores(lm, tok, task, texts: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """The plain path: a full forward pass over prompt + name for every candidate, one at a time."""
    out = []
    for text, cands in zip(texts, candidates):
        prompt = task.prompt_ids(tok, text)[0]
        scores = []
        for d in cands:
            ans = task.answer_ids(tok, d)
            ids = torch.tensor([prompt + ans])
            logits = lm(input_ids=ids, logits_to_keep=len(ans) + 1).logits[0, :-1].float()
            logp = torch.log_softmax(logits, -1)
            scores.append(float(logp[torch.arange(len(ans)), torch.tensor(ans)].sum()))
        out.append(np.array(scores))
    return out


def bench_rare_ddx(lm, tok, cases: Sequence, knowledge, top_k: int, rounds: int,
                   ours_lm=None, autocast_dtype: torch.dtype | None = None) -> dict:
    """`lm` runs the plain path; `ours_lm` (default `lm`) ours, under `autocast_dtype`."""
    from functools import partial

    from ..baselines.phenotype_ranker import PhenotypeRanker
    from ..infer.rerank import score_names
    from ..tasks.rare_ddx import rare_ddx_task
    from ..tasks.rare_ddx_render import render_summary

    score_names = partial(score_names, ours_lm or lm, autocast_dtype=autocast_dtype)

    task = rare_ddx_task(knowledge)
    ranker = PhenotypeRanker(knowledge, candidate_ids=list(task.names)).fit()
    texts = [render_summary(c.patient, knowledge, seed=0) for c in cases]
    cands = [[d for d, _, _ in ranker.rank(c.patient, top_k)] for c in cases]
    score_names(tok, task, texts[:2], cands[:2])  # warm-up
    _plain_scores(lm, tok, task, texts[:1], cands[:1])

    acc = _alternate(len(cases), rounds,
                     lambda s: score_names(tok, task, texts[s], cands[s])[0],
                     lambda s: _plain_scores(lm, tok, task, texts[s], cands[s]))
    res = _figures(len(cases), acc)
    ours_out, plain_out = acc["ours"][2], acc["plain"][2]
    top1 = sum(int(np.argmax(a)) == int(np.argmax(b)) for a, b in zip(ours_out, plain_out))
    diff = max((float(np.max(np.abs(a - b))) for a, b in zip(ours_out, plain_out)), default=0.0)
    res.update({"candidates_per_case": top_k, "candidates_per_s": {
        "plain": round(len(cases) * top_k / acc["plain"][0], 3), "ours": round(len(cases) * top_k / acc["ours"][0], 3)},
        "top1_agreement": round(top1 / len(cases), 4), "top1_agreement_count": top1,
        "max_abs_score_difference": round(diff, 6)})
    return res


# ---- the command --------------------------------------------------------------------------------

def run_predict_bench(out: str | Path, model: str = "smollm2-135m", tasks: Sequence[str] = TASKS,
                      records: int = 48, rare_records: int = 8, batch_size: int = 16, rounds: int = 1,
                      top_k: int = 10, seed: int = 0, precision: str = "auto") -> dict:
    """Benchmark prediction on `tasks` (radiology, rare-ddx) and write the JSON to `out`; returns it.
    `records` radiology reports and `rare_records` rare-disease cases go through both paths.
    `precision` is our path's (auto: bf16 autocast where the CPU runs it natively); plain is fp32."""
    from ..models.inference import prepare_for_inference
    from ..models.loading import load_causal_lm, load_tokenizer, pick_dtype, resolve_model_path
    from ..tasks.multilabel import radiology_task
    from ..train.sft import TASK_FILE

    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise SynthdxError(f"unknown task(s) {unknown or tasks}; known: {', '.join(TASKS)}")
    if precision not in ("auto", "fp32", "bf16"):
        raise SynthdxError(f"unknown precision {precision!r}; known: auto, fp32, bf16")
    if records < 2 or rare_records < 2:
        raise SynthdxError("records and rare_records must be at least 2")
    path = resolve_model_path(model)
    spec_file = Path(path) / TASK_FILE
    spec = json.loads(spec_file.read_text()) if spec_file.exists() else {}
    tok = load_tokenizer(path)
    lm = load_causal_lm(path)  # fp32 on the CPU: the plain path's model
    lm.eval()
    dtype = pick_dtype("cpu", precision)
    ours_lm = lm
    if dtype != torch.float32:  # ours: a copy set up as `synthdx predict` sets it up
        import copy

        ours_lm = copy.deepcopy(lm)
    ours_autocast = prepare_for_inference(ours_lm, dtype)
    dtype_name = str(dtype).removeprefix("torch.")
    info = machine()
    result: dict = {"benchmark": "predict", "model": model, "model_path": str(path),
                    "model_trained_for": spec.get("task"), "machine": info,
                    "settings": {"records": records, "rare_records": rare_records, "batch_size": batch_size,
                                 "rounds": rounds, "top_k": top_k, "seed": seed, "precision": precision,
                                 "plain_dtype": "float32", "ours_dtype": dtype_name, "device": "cpu"},
                    "tasks": {}}
    rows = []
    if "radiology" in tasks:
        texts, source = _radiology_texts(records, seed)
        console.print(f"radiology: {len(texts)} records from {source}")
        trained = spec.get("task") == "radiology"
        r = bench_radiology(lm, tok, radiology_task(), texts, trained, batch_size, rounds, ours_lm, ours_autocast)
        r["data"] = source
        result["tasks"]["radiology"] = r
        rows.append(["radiology", r["records"], f"{r['plain']['records_per_s']:.3f}",
                     f"{r['ours']['records_per_s']:.3f}", f"{r['speedup']:.2f}x",
                     f"{r['speedup_cpu_time']:.2f}x", f"{r['agreement_count']}/{r['records']} labels"])
    if "rare-ddx" in tasks:
        from ..knowledge.hpo import load_hpo

        knowledge = load_hpo()
        cases, source = _rare_cases(rare_records, seed, knowledge)
        console.print(f"rare-ddx: {len(cases)} cases from {source}")
        r = bench_rare_ddx(lm, tok, cases, knowledge, top_k, rounds, ours_lm, ours_autocast)
        r["data"] = source
        result["tasks"]["rare-ddx"] = r
        rows.append(["rare-ddx (top 10 names)", r["records"], f"{r['plain']['records_per_s']:.3f}",
                     f"{r['ours']['records_per_s']:.3f}", f"{r['speedup']:.2f}x",
                     f"{r['speedup_cpu_time']:.2f}x", f"{r['top1_agreement_count']}/{r['records']} top-1"])
    first = "radiology" if "radiology" in result["tasks"] else next(iter(result["tasks"]))
    result["speedup"] = result["tasks"][first]["speedup"]
    result["speedup_task"] = first
    columns = ["task", "records", "plain rec/s", "ours rec/s", "speedup", "speedup (CPU time)", "same answer"]
    note = (f"{model} on {describe(info)}; plain = transformers one record at a time in fp32, "
            f"ours in {dtype_name}{' (autocast)' if ours_autocast else ''} (see bench/predict.py)")
    print_table("Prediction: synthdx vs the plain path, same records, one run", columns, rows, note)
    result["table_markdown"] = markdown_table(columns, rows)
    console.print(result["table_markdown"], markup=False, soft_wrap=True)
    save(out, result)
    console.print(f"wrote {out}")
    return result
