"""The multi-label task format: answer text and token ids, the parser, the prompt, the training example
layout and truncation, with the real SmolLM2 tokenizer (no model)."""

from __future__ import annotations

import pytest

from synthdx.records import Record
from synthdx.tasks.multilabel import Example, get_task


@pytest.fixture()
def task():
    return get_task("radiology")


# ---- answer text and token ids --------------------------------------------------------------------

def test_answer_text_is_in_label_space_order(task):
    assert task.answer_text(["Pleural Effusion", "Cardiomegaly"]) == " Cardiomegaly, Pleural Effusion"
    assert task.answer_text(["Support Devices", "No Finding", "Edema"]) == " No Finding, Edema, Support Devices"
    # duplicates collapse
    assert task.answer_text(["Edema", "Edema"]) == " Edema"


def test_empty_answer(task, tokenizer):
    assert task.answer_text([]) == " " + task.empty_answer
    ids = task.answer_ids(tokenizer, [])
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert ids[-1] == end
    assert tokenizer.decode(ids[:-1]) == " " + task.empty_answer
    assert task.parse(tokenizer.decode(ids[:-1])) == ([], True)


def test_answer_ids_follow_label_order_and_end_with_im_end(task, tokenizer):
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    a = task.answer_ids(tokenizer, ["Pleural Effusion", "Cardiomegaly"])
    b = task.answer_ids(tokenizer, ["Cardiomegaly", "Pleural Effusion"])
    assert a == b
    assert a[-1] == end and end not in a[:-1]
    assert tokenizer.decode(a[:-1]) == " Cardiomegaly, Pleural Effusion"
    # the separator is one token, between items only
    sep = tokenizer.encode(",", add_special_tokens=False)
    assert len(sep) == 1 and a.count(sep[0]) == 1
    # every label round-trips through its token ids
    for name in task.label_space.names:
        ids = task.answer_ids(tokenizer, [name])
        assert tokenizer.decode(ids[:-1]) == " " + name
        assert task.parse(tokenizer.decode(ids[:-1])) == ([name], True)
    everything = task.answer_ids(tokenizer, list(reversed(task.label_space.names)))
    assert task.parse(tokenizer.decode(everything[:-1])) == (task.label_space.names, True)


# ---- parser ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("answer, expected", [
    (" Cardiomegaly, Pleural Effusion", ["Cardiomegaly", "Pleural Effusion"]),
    ("pleural effusion, CARDIOMEGALY", ["Cardiomegaly", "Pleural Effusion"]),  # case, and reordered
    ("Cardiomegaly.", ["Cardiomegaly"]),  # trailing period
    ("Edema; cardiomegaly.\n", ["Cardiomegaly", "Edema"]),
    ("enlarged heart, effusion", ["Cardiomegaly", "Pleural Effusion"]),  # synonyms
    ("copd and pulmonary congestion", ["Edema", "Emphysema or COPD"]),
    ("Cardiomegaly AND edema", ["Cardiomegaly", "Edema"]),
    ("lines and tubes", ["Support Devices"]),  # a synonym containing "and" is one item
    ("normal", ["No Finding"]),
    ("Nodule or Mass", ["Nodule or Mass"]),
    ("Cardiomegaly, Cardiomegaly", ["Cardiomegaly"]),
    ("Other abnormality", []),
    ("other abnormality.", []),
])
def test_parse_valid(task, answer, expected):
    assert task.parse(answer) == (expected, True)


@pytest.mark.parametrize("answer, expected", [
    ("Cardiomegaly, banana", ["Cardiomegaly"]),  # what parsed is kept, the answer is invalid
    ("banana", []),
    ("The heart is enlarged", []),
    ("Cardiomegaly, Edema, Pleural", ["Cardiomegaly", "Edema"]),
    ("", []),
    ("   \n", []),
])
def test_parse_invalid(task, answer, expected):
    assert task.parse(answer) == (expected, False)


# ---- prompt and training example ------------------------------------------------------------------

def test_prompt_uses_the_chat_template(task, tokenizer):
    ids, truncated = task.prompt_ids(tokenizer, "Heart is enlarged.")
    assert not truncated
    text = tokenizer.decode(ids)
    assert "<|im_start|>system\n" + task.system_prompt in text
    assert task.instruction + "\n\nHeart is enlarged." in text
    assert text.endswith("<|im_start|>assistant\n")
    expected = tokenizer.apply_chat_template(task.messages("Heart is enlarged."), add_generation_prompt=True,
                                             tokenize=False)
    assert text == expected


def test_build_example_masks_the_prompt(task, tokenizer):
    rec = Record(id="r1", text="Mild cardiomegaly. Small right effusion.", labels=["Pleural Effusion", "Cardiomegaly"])
    ex = task.build_example(tokenizer, rec)
    assert isinstance(ex, Example) and not ex.truncated
    prompt, _ = task.prompt_ids(tokenizer, rec.text)
    answer = task.answer_ids(tokenizer, rec.labels)
    assert len(ex.input_ids) == len(ex.labels) == len(prompt) + len(answer)
    assert ex.input_ids[:len(prompt)] == prompt
    assert ex.labels[:len(prompt)] == [-100] * len(prompt)
    assert ex.input_ids[len(prompt):] == answer
    assert ex.labels[len(prompt):] == answer
    assert -100 not in ex.labels[len(prompt):]


def test_build_example_with_no_label(task, tokenizer):
    ex = task.build_example(tokenizer, Record(id="r", text="Something else entirely.", labels=[]))
    n = sum(1 for x in ex.labels if x != -100)
    assert ex.labels[-n:] == task.answer_ids(tokenizer, [])


def test_records_with_unknown_or_missing_labels_raise(task, tokenizer):
    with pytest.raises(ValueError, match="outside the label space.*Bananas"):
        task.build_example(tokenizer, Record(id="r9", text="x", labels=["Cardiomegaly", "Bananas"]))
    with pytest.raises(ValueError, match="r9"):
        task.build_example(tokenizer, Record(id="r9", text="x", labels=["cardiomegaly"]))  # names, not synonyms
    with pytest.raises(ValueError, match="no labels"):
        task.build_example(tokenizer, Record(id="r10", text="x", labels=None))


def test_unknown_task():
    with pytest.raises(KeyError, match="unknown task"):
        get_task("dermatology")


# ---- truncation -----------------------------------------------------------------------------------

def test_long_report_is_truncated_to_max_text_tokens(tokenizer):
    task = get_task("radiology", max_text_tokens=64)
    words = ["heart", "lungs", "clear", "effusion", "mild", "opacity", "stable", "no"]
    report = " ".join(words[i % len(words)] for i in range(50_000))
    text, truncated = task.truncate(tokenizer, report)
    assert truncated
    assert text.endswith(" [...]")
    assert report.startswith(text[: -len(" [...]")])  # the head is kept
    assert len(tokenizer.encode(text[: -len(" [...]")], add_special_tokens=False)) <= 64

    base, _ = task.prompt_ids(tokenizer, "")
    ids, truncated = task.prompt_ids(tokenizer, report)
    assert truncated
    assert len(base) + 64 <= len(ids) <= len(base) + 64 + 8  # cut text + " [...]"
    assert " [...]<|im_end|>" in tokenizer.decode(ids)

    ex = task.build_example(tokenizer, Record(id="long", text=report, labels=["Edema"]))
    assert ex.truncated
    assert len(ex.input_ids) == len(ids) + len(task.answer_ids(tokenizer, ["Edema"]))


def test_short_report_is_not_truncated(tokenizer):
    task = get_task("radiology", max_text_tokens=64)
    text = "No acute cardiopulmonary abnormality."
    assert task.truncate(tokenizer, text) == (text, False)
