"""Constrained decoding over every candidate name: beam search on a prefix tree of tokenised names.

The alternative to retrieve-then-rerank (`infer.rerank`) that the rare-ddx experiment measures
(`eval.constrained_beam`). The model writes a disease name token by token and may only write a
token that continues some candidate's answer (" <name><|im_end|>", as the task tokenises it), so
every output is a valid candidate. Beam search keeps the `beam` most likely partial answers; an
answer that reaches its end token is finished with its whole log-probability, the very number
`score_names` gives that name, so the two methods' scores compare directly.

It needs no retriever and can name any of the candidates, but it is approximate: a name whose first
tokens the model finds unlikely is pruned, however likely its ending. The search stops early only
when it is exact to do so: log-probabilities only fall as an answer grows, so once `beam` answers
are finished no partial answer scoring below the `beam`-th of them can overtake it.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from ..models.compat import returned_cache
from .constrained import autocast
from .rerank import encode_prompts, next_token_logits, prompt_pass

__all__ = ["NameTrie", "ranks_with_fill", "search_names"]


class NameTrie:
    """A prefix tree over candidates' answer token sequences. Node 0 is the empty answer;
    `children[node]` maps a token to the next node, `ends[node]` is the candidate whose answer ends
    at that node."""

    def __init__(self, answers: Mapping[str, Sequence[int]]):
        self.children: list[dict[int, int]] = [{}]
        self.ends: dict[int, str] = {}
        for cid, seq in answers.items():
            if not seq:
                raise ValueError(f"{cid}: an empty answer")
            node = 0
            for tok in seq:
                nxt = self.children[node].get(tok)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][tok] = nxt
                    self.children.append({})
                node = nxt
            if node in self.ends:
                raise ValueError(f"{cid} and {self.ends[node]} tokenise to the same answer")
            self.ends[node] = cid
        for node in self.ends:  # a finished answer must not go on (either order of insertion)
            if self.children[node]:
                raise ValueError(f"the answer of {self.ends[node]} is the beginning of another")

    @classmethod
    def for_task(cls, task, tokenizer, ids: Sequence[str] | None = None) -> "NameTrie":
        """The tree of `task`'s answers (default: every candidate of the task)."""
        return cls({d: task.answer_ids(tokenizer, d) for d in (task.names if ids is None else ids)})

    def __len__(self) -> int:
        return len(self.ends)


@torch.no_grad()
def _search_one(model, prompt: list[int], n_prefix: int, prefix_kv, trie: NameTrie, beam: int,
                head) -> list[tuple[str, float]]:
    device = next(model.parameters()).device
    out, logits = prompt_pass(model, head, prompt, n_prefix, prefix_kv)
    cache, pos = returned_cache(out), len(prompt)
    logp = torch.log_softmax(logits, -1).cpu()
    nodes, scores = [0], [0.0]
    finished: list[tuple[float, str]] = []
    while nodes:
        expansions = []  # (score, beam row, token)
        for row, (node, base) in enumerate(zip(nodes, scores)):
            toks = list(trie.children[node])
            for tok, s in zip(toks, (base + logp[row, toks]).tolist()):
                expansions.append((s, row, tok))
        expansions.sort(key=lambda e: -e[0])
        alive = []
        for s, row, tok in expansions[:beam]:
            child = trie.children[nodes[row]][tok]
            if child in trie.ends:
                finished.append((s, trie.ends[child]))
            else:
                alive.append((s, row, tok, child))
        if len(finished) >= beam:  # exact stop: nothing alive can beat the beam-th finished answer
            finished.sort(key=lambda f: -f[0])
            del finished[beam:]
            alive = [a for a in alive if a[0] > finished[-1][0]]
        if not alive:
            break
        cache.reorder_cache(torch.tensor([a[1] for a in alive], device=device))
        tokens = torch.tensor([[a[2]] for a in alive], device=device)
        out, logits = next_token_logits(model, head, input_ids=tokens, cache=cache,
                                        position_ids=torch.full((len(alive), 1), pos, device=device))
        cache, pos = returned_cache(out), pos + 1
        logp = torch.log_softmax(logits, -1).cpu()
        nodes, scores = [a[3] for a in alive], [a[0] for a in alive]
    finished.sort(key=lambda f: -f[0])
    return [(cid, s) for s, cid in finished[:beam]]


@torch.no_grad()
def search_names(model, tokenizer, task, texts: Sequence[str], trie: NameTrie, beam: int = 10,
                 progress: Callable[[int], None] | None = None, share_prefix: bool = True,
                 autocast_dtype: torch.dtype | None = None,
                 ) -> tuple[list[list[tuple[str, float]]], list[bool]]:
    """For each text, up to `beam` candidates (id, log-probability of its answer), best first, found
    by beam search over `trie`; and whether the text was cut to `task.max_text_tokens`."""
    if beam < 1:
        raise ValueError("beam must be at least 1")
    model.eval()
    prompts, truncated, n_prefix, prefix_kv, head = encode_prompts(
        model, tokenizer, task, texts, share_prefix, autocast_dtype)
    out = []
    for prompt in prompts:
        with autocast(model, autocast_dtype):
            out.append(_search_one(model, prompt, n_prefix, prefix_kv, trie, beam, head))
        if progress:
            progress(1)
    return out, truncated


def ranks_with_fill(found: Sequence[str], ranker_order: Sequence[str], gold: Sequence[str]) -> float:
    """The gold's rank in the ranking `found`, then the ranker's order without them (inf when the
    gold is no candidate)."""
    gold = set(gold)
    for pos, cid in enumerate(found, 1):
        if cid in gold:
            return float(pos)
    seen = set(found)
    pos = len(found)
    for cid in ranker_order:
        if cid in seen:
            continue
        pos += 1
        if cid in gold:
            return float(pos)
    return float("inf")

