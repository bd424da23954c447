"""A multi-label text task for a causal LM: prompt, answer format, parser, token-level layout.

The answer lists the labels present, in label-space order, separated by commas
(" Cardiomegaly, Pleural Effusion"), or a fixed phrase when none of the labels applies.
Items are tokenised one by one and concatenated, so the token ids seen in training are
exactly those the constrained decoder walks through at prediction time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..records import LabelSpace, Record
from .prompting import chat_messages, chat_prompt_ids, end_token_id, truncate_text


@dataclass
class Example:
    """One tokenised training example; `labels` holds -100 where no loss is taken (the prompt)."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False


@dataclass
class MultiLabelTask:
    name: str
    label_space: LabelSpace
    system_prompt: str
    instruction: str
    """Put before the text in the user turn."""
    empty_answer: str = "Other abnormality"
    """The answer when no label applies (parses to an empty label set)."""
    max_text_tokens: int = 320
    """Longer texts are cut to this many tokens (head kept); the cut is counted, never silent."""
    separator: str = ","
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # ---- text level ---------------------------------------------------------------------------
    def answer_text(self, labels: list[str]) -> str:
        present = [n for n in self.label_space.names if n in set(labels)]
        return " " + (f"{self.separator} ".join(present) if present else self.empty_answer)

    def parse(self, answer: str) -> tuple[list[str], bool]:
        """(labels in label-space order, valid). Items are normalised through the label space's
        synonyms; any item that names no label, or an empty answer, makes the output invalid
        (the labels that did parse are still returned)."""
        answer = answer.strip()
        if not answer:
            return [], False
        items = []
        for piece in re.split(r"[,;\n]", answer):
            # "and" joins items ("Cardiomegaly and Edema") unless it is part of a name ("lines and tubes")
            whole = (piece.strip().lower().rstrip(".") == self.empty_answer.lower()
                     or self.label_space.normalise(piece) is not None)
            items += [piece] if whole else re.split(r"\s+and\s+", piece, flags=re.IGNORECASE)
        items = [s for s in items if s.strip()]
        found, valid = set(), True
        for item in items:
            if item.strip().lower().rstrip(".") == self.empty_answer.lower():
                continue
            name = self.label_space.normalise(item)
            if name is None:
                valid = False
            else:
                found.add(name)
        return [n for n in self.label_space.names if n in found], valid

    def messages(self, text: str) -> list[dict]:
        return chat_messages(self.system_prompt, self.instruction, text)

    # ---- token level --------------------------------------------------------------------------
    def _layout(self, tokenizer) -> dict:
        """Token ids of each answer item (with its leading space), the separator and the end."""
        key = id(tokenizer)
        if key not in self._cache:
            enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
            end = end_token_id(tokenizer)
            sep = enc(self.separator)
            if len(sep) != 1:
                raise ValueError(f"separator {self.separator!r} must be one token")
            self._cache[key] = {
                "items": [enc(" " + n) for n in self.label_space.names],
                "empty": enc(" " + self.empty_answer),
                "sep": sep[0],
                "end": end,
            }
        return self._cache[key]

    def truncate(self, tokenizer, text: str) -> tuple[str, bool]:
        return truncate_text(tokenizer, text, self.max_text_tokens)

    def prompt_ids(self, tokenizer, text: str) -> tuple[list[int], bool]:
        text, truncated = self.truncate(tokenizer, text)
        return chat_prompt_ids(tokenizer, self.system_prompt, self.instruction, text), truncated

    def answer_ids(self, tokenizer, labels: list[str]) -> list[int]:
        lay = self._layout(tokenizer)
        idx = [i for i, n in enumerate(self.label_space.names) if n in set(labels)]
        if not idx:
            return lay["empty"] + [lay["end"]]
        out: list[int] = []
        for k, i in enumerate(idx):
            if k:
                out.append(lay["sep"])
            out += lay["items"][i]
        return out + [lay["end"]]

    def spec(self) -> dict:
        """What a trained model directory records about its task (`train.sft.load_trained_task`)."""
        return {"task": self.name, "kind": "multilabel", "labels": self.label_space.names,
                "synonyms": self.label_space.synonyms, "system_prompt": self.system_prompt,
                "instruction": self.instruction, "empty_answer": self.empty_answer,
                "max_text_tokens": self.max_text_tokens}

    def build_example(self, tokenizer, record: Record) -> Example:
        if record.labels is None:
            raise ValueError(f"record {record.id} has no labels to train on")
        unknown = [lab for lab in record.labels if lab not in self.label_space]
        if unknown:
            raise ValueError(f"record {record.id} has labels outside the label space: {unknown}")
        prompt, truncated = self.prompt_ids(tokenizer, record.text)
        answer = self.answer_ids(tokenizer, record.labels)
        return Example(prompt + answer, [-100] * len(prompt) + answer, truncated)


# Short on purpose: every prompt token is paid for in every training step and every prediction.
RADIOLOGY_SYSTEM = "You are a radiologist."
RADIOLOGY_INSTRUCTION = "List the findings present (not negated) in this chest X-ray report."


def radiology_task(max_text_tokens: int = 320) -> MultiLabelTask:
    from .radiology import RADIOLOGY_LABELS

    return MultiLabelTask(name="radiology", label_space=RADIOLOGY_LABELS, system_prompt=RADIOLOGY_SYSTEM,
                          instruction=RADIOLOGY_INSTRUCTION, max_text_tokens=max_text_tokens)


SPECIALTY_SYSTEM = "You are a clinical documentation specialist."
SPECIALTY_INSTRUCTION = "Name the medical specialties this transcribed clinical document is filed under."


def specialty_task(label_space: LabelSpace, max_text_tokens: int = 320) -> MultiLabelTask:
    """MTSamples: the specialties of a transcription (label space from the data, see datasets.mtsamples)."""
    return MultiLabelTask(name="specialty", label_space=label_space, system_prompt=SPECIALTY_SYSTEM,
                          instruction=SPECIALTY_INSTRUCTION, empty_answer="Other specialty",
                          max_text_tokens=max_text_tokens)


TASKS = {"radiology": radiology_task}


def get_task(name: str, **kwargs) -> MultiLabelTask:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name](**kwargs)
