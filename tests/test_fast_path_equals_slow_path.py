"""The fast prediction path (batched, length-sorted, padding-aware batches, shared-prefix KV cache,
grammar-vocabulary head, forced tokens fed without a forward pass) against a slow reference written
the plain way: one text at a time, the whole sequence recomputed at every step with the full LM
head, one token per step through the same grammar. Same labels; same scores to float precision.
Also: the prediction benchmark runs end to end on the tiny model and writes its JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch

from synthdx.infer.constrained import LabelSetGrammar, _RowState
from synthdx.infer.predict import _padding_aware_batches, predict_label_sets
from synthdx.infer.rerank import score_names
from synthdx.tasks.multilabel import get_task

TEXTS = [
    ("Heart size is enlarged. Small left pleural effusion with adjacent atelectasis. Right PICC line "
    "terminates in the SVC. No pneumothorax. Degenerative changes of the thoracic spine."),
    "Normal chest.",
    "Right lower lobe opacity concerning for pneumonia.",
    "Lungs are clear. No acute cardiopulmonary abnormality.",
    ("Calcified granuloma in the left upper lobe. Emphysema. Old healed rib fractures on the right, "
    "unchanged from prior examination."),
    "Cardiomegaly.",
    ("FINDINGS: The cardiomediastinal silhouette is within normal limits. There is a 1 cm nodule in "
    "the right mid lung. No focal consolidation, pleural effusion or pneumothorax. IMPRESSION: "
    "Right lung nodule; CT recommended."),
    ("Interval placement of a left chest tube. Small residual apical pneumothorax. Bibasilar airspace "
    "disease, edema versus pneumonia."),
]


@torch.no_grad()
def slow_reference(model, tokenizer, task, text: str, max_steps: int = 96):
    """One text, no cache of any kind: every step runs the model over prompt + answer so far and
    lets the grammar pick from the full-vocabulary logits of the last position."""
    grammar = LabelSetGrammar(task, tokenizer)
    seq = list(task.prompt_ids(tokenizer, text)[0])
    st = _RowState()
    for _ in range(max_steps):
        logits = model(input_ids=torch.tensor([seq])).logits[0, -1]
        seq.append(grammar.step(st, logits))
        if st.done:
            break
    names = task.label_space.names
    return [names[i] for i in sorted(st.chosen)], {names[i]: st.scores.get(i, 0.0) for i in range(len(names))}


@pytest.fixture(scope="module")
def task():
    return get_task("radiology")


@pytest.mark.parametrize("batch_size", [3, 16])
def test_fast_prediction_equals_slow_reference(tiny_model, tokenizer, task, batch_size):
    stats: dict = {}
    fast = predict_label_sets(tiny_model, tokenizer, task, TEXTS, batch_size=batch_size, stats=stats)
    for text, pred in zip(TEXTS, fast):
        labels, scores = slow_reference(tiny_model, tokenizer, task, text)
        assert pred.labels == labels
        assert pred.complete
        for name, s in scores.items():
            assert math.isclose(pred.scores[name], s, abs_tol=2e-6), (name, pred.scores[name], s)
    # the fast path really took the short cuts: fewer passes than answer tokens, a shared prefix
    assert stats["passes"] < stats["tokens"] + stats["batches"]
    assert stats["padded_prompt_tokens"] >= stats["prompt_tokens"]


def test_fast_path_without_prefix_cache_gives_the_same_labels(tiny_model, tokenizer, task):
    a = predict_label_sets(tiny_model, tokenizer, task, TEXTS, batch_size=4)
    b = predict_label_sets(tiny_model, tokenizer, task, TEXTS, batch_size=1, share_prefix=False)
    assert [p.labels for p in a] == [p.labels for p in b]
    for p, q in zip(a, b):
        assert all(math.isclose(p.scores[n], q.scores[n], abs_tol=2e-6) for n in p.scores)


def test_step_limit_still_flags_incomplete_rows(tiny_model, tokenizer, task):
    """Forced tokens count against max_steps like chosen ones: a limit of one token leaves every
    row incomplete (no answer is one token long), flagged by a NaN score."""
    from synthdx.infer.constrained import decode_label_sets

    prompts = [task.prompt_ids(tokenizer, t)[0] for t in TEXTS[:3]]
    out = decode_label_sets(tiny_model, tokenizer, task, prompts, max_steps=1)
    assert all(math.isnan(scores[-1]) for _, scores in out)


def test_padding_aware_batches_cover_every_row_once():
    lengths = [40, 41, 300, 42, 39, 45, 44, 43, 38, 310]
    batches = _padding_aware_batches(lengths, batch_size=4)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert len(batches) == 3 and all(len(b) <= 4 for b in batches)  # no more batches than plain sorting
    # the partial batch goes to the two long outliers instead of padding short texts up to 300
    assert set(batches[-1]) == {2, 9}
    assert max(lengths[i] for i in batches[0]) == 41
    # texts of similar lengths: plain sorted batching
    assert len(_padding_aware_batches([50, 51, 52, 53, 54, 55], 4)) == 2


@torch.no_grad()
def test_fast_name_scoring_equals_one_full_pass_per_candidate(tiny_model, tokenizer):
    """score_names (prompt once, names batched on its KV cache) = the plain way: one full forward
    pass over prompt + name per candidate, log-softmax, sum over the name's tokens."""
    from synthdx.tasks.rare_ddx import DiseaseRankingTask

    names = {"OMIM:1": "Marfan syndrome", "OMIM:2": "Ehlers-Danlos syndrome", "OMIM:3": "Marfanoid habitus",
             "OMIM:4": "Loeys-Dietz syndrome 1"}
    rtask = DiseaseRankingTask(names=names)
    texts = ["A 12-year-old boy with tall stature, arachnodactyly and ectopia lentis.",
             "An adult woman with joint hypermobility and skin hyperextensibility."]
    cands = [list(names), ["OMIM:2", "OMIM:4"]]
    fast, _ = score_names(tiny_model, tokenizer, rtask, texts, cands)
    for text, ids, got in zip(texts, cands, fast):
        prompt = rtask.prompt_ids(tokenizer, text)[0]
        for d, g in zip(ids, got):
            ans = rtask.answer_ids(tokenizer, d)
            logp = torch.log_softmax(tiny_model(input_ids=torch.tensor([prompt + ans])).logits[0].float(), -1)
            ref = sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(ans))
            assert math.isclose(float(g), ref, abs_tol=1e-4), (d, float(g), ref)


def test_predict_bench_runs_on_the_tiny_model(tiny_model_dir, tmp_path):
    from synthdx.bench.predict import run_predict_bench

    out = tmp_path / "bench.json"
    res = run_predict_bench(out, model=str(tiny_model_dir), tasks=["radiology"], records=4, batch_size=4, rounds=2)
    saved = json.loads(out.read_text())
    assert saved["speedup"] == res["speedup"] == saved["tasks"]["radiology"]["speedup"] > 0
    rad = saved["tasks"]["radiology"]
    assert rad["records"] == 4 and rad["plain"]["records_per_s"] > 0 and rad["ours"]["records_per_s"] > 0
    assert math.isclose(rad["speedup"], rad["ours"]["records_per_s"] / rad["plain"]["records_per_s"], rel_tol=0.01)
    # a base model's plain budget is our answer's length: both paths write the same number of tokens
    assert rad["plain_new_tokens"] <= rad["ours_answer_tokens"]
    assert 0 <= rad["agreement_count"] <= 4
    assert saved["machine"]["cores"] >= 1 and "| radiology |" in saved["table_markdown"]
