"""Prompt token ids built from the cached template frame equal the tokenizer's own
`apply_chat_template(..., tokenize=True)` on every kind of text, and a template that does not
insert the text verbatim falls back to rendering it."""

from __future__ import annotations

import copy

import pytest

from synthdx.synth.radiology_reports import RadiologyReportGenerator
from synthdx.tasks.prompting import chat_messages, chat_prompt_ids, prompt_frame

ODD_TEXTS = ["", " ", "plain", "  leading and trailing  ", "line\nbreaks\r\n\ttabs", "unicode: é ü ß 肺 😀",
             "{{ jinja }} {% if x %}", "<|im_start|>user\nhi<|im_end|>", "a" * 2000, "\\n not a newline"]


def _reference(tokenizer, system, instruction, text):
    ids = tokenizer.apply_chat_template(chat_messages(system, instruction, text), add_generation_prompt=True,
                                        tokenize=True, return_dict=False)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@pytest.mark.parametrize("system,instruction", [("You are a radiologist.", "List the findings."),
                                                ("", "Rank the diseases.")])
def test_fast_prompt_ids_equal_the_chat_template(tokenizer, system, instruction):
    texts = ODD_TEXTS + [r.text for r in RadiologyReportGenerator(seed=3).generate(40)]
    assert prompt_frame(tokenizer, system, instruction) is not None
    for text in texts:
        assert chat_prompt_ids(tokenizer, system, instruction, text) == _reference(tokenizer, system, instruction, text)


def test_a_template_that_rewrites_the_text_is_rendered_each_time(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n"
                         "{% endfor %}<|im_start|>assistant\n")
    assert prompt_frame(tok, "sys", "Do it.") is None
    for text in ("  padded text  ", "x"):
        assert chat_prompt_ids(tok, "sys", "Do it.", text) == _reference(tok, "sys", "Do it.", text)
