"""Constrained label-set decoding: the grammar on its own (forced tokens, scores), and decoding /
prediction / free generation with the tiny random llama (real tokenizer and chat template)."""

from __future__ import annotations

import math

import pytest
import torch

from synthdx.infer.constrained import LabelSetGrammar, _RowState, decode_label_sets
from synthdx.infer.predict import generate_free, predict_label_sets
from synthdx.tasks.multilabel import get_task

TEXTS = [
    "Heart size is enlarged. Small left pleural effusion with adjacent atelectasis. Right PICC line "
    "terminates in the SVC. No pneumothorax. Degenerative changes of the thoracic spine.",
    "Normal chest.",
    "Right lower lobe opacity concerning for pneumonia.",
    "Lungs are clear. No acute cardiopulmonary abnormality.",
    "Calcified granuloma in the left upper lobe. Emphysema. Old healed rib fractures on the right, "
    "unchanged from prior examination.",
    "Cardiomegaly.",
]


@pytest.fixture()
def task():
    return get_task("radiology")


def _walk(grammar: LabelSetGrammar, vocab: int, want: list[int], max_steps: int = 100):
    """Run the grammar with log-probabilities that favour the `want` tokens one after another; a huge
    logit on a token the grammar never allows (id 0) must be ignored."""
    st, out = _RowState(), []
    for k in range(max_steps):
        lp = torch.full((vocab,), -30.0)
        lp[0] = 50.0
        if k < len(want):
            lp[want[k]] = 0.0
        out.append(grammar.step(st, lp))
        if st.done:
            return st, out
    raise AssertionError("the grammar never reached the end token")


# ---- the grammar on its own -----------------------------------------------------------------------

@pytest.mark.parametrize("labels", [
    ["Cardiomegaly"],
    ["Cardiomegaly", "Pneumothorax", "Support Devices"],  # Pneumothorax shares " Pneum" with Pneumonia
    ["Pneumonia"],
    [],  # the empty-answer phrase
    get_task("radiology").label_space.names,  # all of them
])
def test_forced_walk_reproduces_the_answer(task, tokenizer, labels):
    grammar = LabelSetGrammar(task, tokenizer)
    target = task.answer_ids(tokenizer, labels)
    st, out = _walk(grammar, len(tokenizer), target)
    assert out == target
    assert [task.label_space.names[i] for i in st.chosen] == labels
    assert task.parse(tokenizer.decode(out[:-1])) == (labels, True)


def test_grammar_never_repeats_or_reorders(task, tokenizer):
    """Asking for a label again, or an earlier one, is impossible: the walk goes on with later labels
    only and ends after the last one."""
    grammar = LabelSetGrammar(task, tokenizer)
    lay = task._layout(tokenizer)
    cardio = task.label_space.index("Cardiomegaly")
    # favour: Cardiomegaly, then separator, then Cardiomegaly's first token again, forever
    want = lay["items"][cardio] + [lay["sep"]] + [lay["items"][cardio][0], lay["sep"]] * 40
    st, out = _walk(grammar, len(tokenizer), want)
    assert st.chosen == sorted(set(st.chosen))
    assert st.chosen[0] == cardio
    assert cardio not in st.chosen[1:]
    assert out[-1] == lay["end"]
    labels, valid = task.parse(tokenizer.decode(out[:-1]))
    assert valid and labels == [task.label_space.names[i] for i in st.chosen]


def test_allowed_tokens(task, tokenizer):
    grammar = LabelSetGrammar(task, tokenizer)
    lay = task._layout(tokenizer)
    names = task.label_space.names
    st = _RowState()
    first = grammar.allowed(st)
    # every label's first token and the empty answer's; a shared first token keeps both labels possible
    assert set(first) == {it[0] for it in lay["items"]} | {lay["empty"][0]}
    pneum = lay["items"][names.index("Pneumonia")][0]
    assert pneum == lay["items"][names.index("Pneumothorax")][0]
    assert sorted(first[pneum]) == [names.index("Pneumonia"), names.index("Pneumothorax")]
    assert lay["sep"] not in first and lay["end"] not in first
    # after the last label only the end is allowed; after any other, the separator too
    assert set(grammar.allowed(_RowState(last=len(names) - 1, after_item=True))) == {lay["end"]}
    assert set(grammar.allowed(_RowState(last=0, after_item=True))) == {lay["end"], lay["sep"]}
    assert set(grammar.allowed(_RowState(last=-2, after_item=True))) == {lay["end"]}
    # after a separator: later labels only, never the empty answer
    after = grammar.allowed(_RowState(last=names.index("Edema")))
    later = {it[0] for it in lay["items"][names.index("Edema") + 1:]}
    assert set(after) == later


def test_scores_split_a_shared_first_token(task, tokenizer):
    """Pneumonia and Pneumothorax share " Pneum": each gets the shared mass times the model's split on
    the next token, so the label not chosen does not get the chosen one's score."""
    grammar = LabelSetGrammar(task, tokenizer)
    lay = task._layout(tokenizer)
    names = task.label_space.names
    i_pna, i_ptx = names.index("Pneumonia"), names.index("Pneumothorax")
    pna, ptx = lay["items"][i_pna], lay["items"][i_ptx]
    vocab = len(tokenizer)
    st = _RowState()
    first = list(grammar.allowed(st))
    others = [t for t in first if t != pna[0]]
    lp = torch.full((vocab,), -1e4)
    lp[0] = 50.0  # never allowed: ignored
    lp[others] = math.log(0.4 / len(others))
    lp[pna[0]] = math.log(0.6)
    assert grammar.step(st, lp) == pna[0]
    lp = torch.full((vocab,), -1e4)
    lp[ptx[1]], lp[pna[1]] = math.log(0.75), math.log(0.25)
    assert grammar.step(st, lp) == ptx[1]
    flat = torch.zeros(vocab)
    for tok in ptx[2:]:
        assert grammar.step(st, flat) == tok  # forced: the only allowed token
    end = torch.full((vocab,), -1e4)
    end[lay["end"]] = 0.0
    assert grammar.step(st, end) == lay["end"] and st.done
    assert st.chosen == [i_ptx]
    assert st.scores[i_ptx] == pytest.approx(0.45)
    assert st.scores[i_pna] == pytest.approx(0.15)
    for i, name in enumerate(names):
        if i not in (i_pna, i_ptx):
            assert st.scores[i] == pytest.approx(0.4 / len(others)), name


# ---- decoding with the tiny model -----------------------------------------------------------------

def _check_prediction(p, task):
    names = task.label_space.names
    assert p.labels == [n for n in names if n in set(p.labels)]  # label-space order, no repeats
    assert len(set(p.labels)) == len(p.labels)
    assert set(p.scores) == set(names)
    for n, s in p.scores.items():
        assert 0.0 <= s <= 1.0, (n, s)
    for n in p.labels:
        assert p.scores[n] > 0.0, n
    assert p.complete


def test_decode_label_sets_is_valid(tiny_model, tokenizer, task):
    prompts = [task.prompt_ids(tokenizer, t)[0] for t in TEXTS]
    decoded = decode_label_sets(tiny_model, tokenizer, task, prompts)
    assert len(decoded) == len(TEXTS)
    for chosen, scores in decoded:
        assert chosen == sorted(set(chosen))
        assert all(0 <= i < len(task.label_space) for i in chosen)
        assert all(0 <= i < len(task.label_space) for i in scores)
        assert all(0.0 <= s <= 1.0 for s in scores.values())
        assert all(scores[i] > 0 for i in chosen)
    # scores depend on the text (the decoder reads the prompt, not just the template)
    assert len({tuple(sorted(s.items())) for _, s in decoded}) == len(TEXTS)


def test_decoding_step_limit_is_flagged(tiny_model, tokenizer, task):
    prompts = [task.prompt_ids(tokenizer, t)[0] for t in TEXTS[:2]]
    for chosen, scores in decode_label_sets(tiny_model, tokenizer, task, prompts, max_steps=1):
        assert math.isnan(scores[-1])


def test_predict_label_sets_valid_and_in_input_order(tiny_model, tokenizer, task):
    one = predict_label_sets(tiny_model, tokenizer, task, TEXTS, batch_size=1)
    four = predict_label_sets(tiny_model, tokenizer, task, TEXTS, batch_size=4)
    assert len(one) == len(four) == len(TEXTS)
    for a, b in zip(one, four):
        _check_prediction(a, task)
        _check_prediction(b, task)
        assert a.labels == b.labels
        assert a.scores == pytest.approx(b.scores, abs=1e-4)
        assert not a.truncated
    # a permuted input gives the permuted output (length-sorting is undone)
    order = [3, 0, 5, 2, 4, 1]
    perm = predict_label_sets(tiny_model, tokenizer, task, [TEXTS[i] for i in order], batch_size=3)
    for k, i in enumerate(order):
        assert perm[k].labels == one[i].labels
        assert perm[k].scores == pytest.approx(one[i].scores, abs=1e-4)
    # and each equals the text predicted on its own
    alone = predict_label_sets(tiny_model, tokenizer, task, [TEXTS[0]])[0]
    assert alone.labels == one[0].labels and alone.scores == pytest.approx(one[0].scores, abs=1e-4)


def test_predict_label_sets_progress_and_empty_input(tiny_model, tokenizer, task):
    seen = []
    preds = predict_label_sets(tiny_model, tokenizer, task, TEXTS[:5], batch_size=2, progress=seen.append)
    assert len(preds) == 5 and sorted(seen) == [1, 2, 2]
    assert predict_label_sets(tiny_model, tokenizer, task, []) == []


def test_predict_flags_truncated_texts(tiny_model, tokenizer):
    task = get_task("radiology", max_text_tokens=16)
    preds = predict_label_sets(tiny_model, tokenizer, task, [TEXTS[0], TEXTS[1]])
    assert [p.truncated for p in preds] == [True, False]
    _check_prediction(preds[0], task)


# ---- free generation ------------------------------------------------------------------------------

def test_generate_free_with_the_random_model(tiny_model, tokenizer, task):
    out = generate_free(tiny_model, tokenizer, task, TEXTS[:3], batch_size=2, max_new_tokens=4)
    assert len(out) == 3
    for answer, labels, valid in out:
        assert isinstance(answer, str) and isinstance(labels, list) and isinstance(valid, bool)
        assert (labels, valid) == task.parse(answer)
    assert not all(valid for _, _, valid in out)  # a random model writes no valid label list


class _ScriptedGenerator(torch.nn.Module):
    """Stands in for a causal LM in `generate_free`: answers by a keyword of the prompt."""

    def __init__(self, tokenizer, script: dict[str, str]):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer, self.script, self.calls = tokenizer, script, []

    def generate(self, input_ids, attention_mask, **kwargs):
        self.calls.append(kwargs)
        rows = []
        for ids, mask in zip(input_ids, attention_mask):
            prompt = self.tokenizer.decode(ids[mask.bool()])
            answer = next(a for k, a in self.script.items() if k in prompt)
            rows.append(self.tokenizer.encode(answer, add_special_tokens=False) + [kwargs["eos_token_id"]])
        width = max(len(r) for r in rows)
        cont = torch.full((len(rows), width), kwargs["pad_token_id"], dtype=torch.long)
        for r, row in enumerate(rows):
            cont[r, :len(row)] = torch.tensor(row)
        return torch.cat([input_ids, cont], dim=1)


def test_generate_free_parses_and_flags_invalid(tokenizer, task):
    model = _ScriptedGenerator(tokenizer, {
        "Cardiomegaly.": " Cardiomegaly",
        "pneumonia": " Pneumonia, lung opacity.",
        "Normal chest": " The heart is normal",
        "Lungs are clear": " Other abnormality",
        "granuloma": " Granuloma, emphysema and fractures",
        "PICC": " Cardiomegaly, Pleural Effusion, banana",
    })
    out = generate_free(model, tokenizer, task, TEXTS, batch_size=4, max_new_tokens=12)
    assert [(labels, valid) for _, labels, valid in out] == [
        (["Cardiomegaly", "Pleural Effusion"], False),
        ([], False),
        (["Lung Opacity", "Pneumonia"], True),
        ([], True),
        (["Granuloma", "Emphysema or COPD", "Fracture"], True),
        (["Cardiomegaly"], True),
    ]
    assert out[5][0] == " Cardiomegaly"  # the raw answer, special tokens dropped
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert all(c["eos_token_id"] == end and c["do_sample"] is False and c["max_new_tokens"] == 12
               for c in model.calls)
