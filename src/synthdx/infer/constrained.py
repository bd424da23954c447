"""Constrained decoding of a label set: the model can only write valid answers.

The answer grammar (see tasks/multilabel.py) is: item ("," item)* <end> with items in label-space
order and no repeats, or the empty-answer phrase then <end>. A per-row state machine over the
tokenised items gives the allowed next tokens; we take the most likely allowed token (greedy),
so the output is always a valid label set and never needs a parser.

Scores: at each point where a new item may start, the model's probabilities renormalised over
the allowed tokens give a distribution over "which item comes next"; an item that shares its first
token with another gets the shared mass times the split the model gives on the next token when
the decoder goes down that path. A label's score is the highest such probability it received;
labels the greedy path chose are the predicted labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..tasks.multilabel import MultiLabelTask


@dataclass
class _RowState:
    last: int = -1  # index of the last finished item, -1 at the start
    prefix: list[int] = field(default_factory=list)  # tokens of the item being written
    cands: list[int] = field(default_factory=list)  # items consistent with `prefix` (-2 = empty answer)
    after_item: bool = False
    done: bool = False
    chosen: list[int] = field(default_factory=list)
    scores: dict[int, float] = field(default_factory=dict)
    branch_mass: float = 1.0  # probability mass of the group we are walking down


class LabelSetGrammar:
    def __init__(self, task: MultiLabelTask, tokenizer):
        lay = task._layout(tokenizer)
        self.items: list[list[int]] = lay["items"]
        self.empty: list[int] = lay["empty"]
        self.sep, self.end = lay["sep"], lay["end"]
        self.n = len(self.items)

    def _item(self, i: int) -> list[int]:
        return self.empty if i == -2 else self.items[i]

    def allowed(self, st: _RowState) -> dict[int, list[int]]:
        """Allowed next token -> the items it keeps possible (empty list for sep/end)."""
        if st.after_item:
            out = {self.end: []}
            if st.last != -2 and st.last < self.n - 1:
                out[self.sep] = []
            return out
        if not st.prefix:
            st.cands = list(range(st.last + 1, self.n)) + ([-2] if st.last == -1 else [])
        groups: dict[int, list[int]] = {}
        k = len(st.prefix)
        for i in st.cands:
            toks = self._item(i)
            if toks[:k] == st.prefix and len(toks) > k:
                groups.setdefault(toks[k], []).append(i)
        return groups

    def step(self, st: _RowState, logprobs: torch.Tensor) -> int:
        """Pick the next token for one row given its next-token log-probabilities; update state."""
        allowed = self.allowed(st)
        toks = list(allowed)
        lp = logprobs[toks]
        probs = torch.softmax(lp.float(), dim=0).tolist()
        best = max(range(len(toks)), key=lambda j: probs[j])
        tok = toks[best]
        if not st.after_item:
            starting = not st.prefix
            if starting:
                st.branch_mass = 1.0
            # credit every candidate item with the mass of its group at this branching point
            for t, p in zip(toks, probs):
                for i in allowed[t]:
                    if i >= 0:
                        mass = st.branch_mass * p
                        st.scores[i] = max(st.scores.get(i, 0.0), mass)
            st.branch_mass *= probs[best]
            st.prefix.append(tok)
            st.cands = allowed[tok]
            finished = [i for i in st.cands if self._item(i) == st.prefix]
            if finished:
                i = finished[0]
                st.chosen.append(i) if i >= 0 else None
                st.last, st.prefix, st.after_item = i, [], True
        else:
            if tok == self.end:
                st.done = True
            else:
                st.after_item = False
        return tok


@torch.no_grad()
def decode_label_sets(model, tokenizer, task: MultiLabelTask, prompts: list[list[int]],
                      max_steps: int = 96) -> list[tuple[list[int], dict[int, float]]]:
    """Greedy constrained decoding for a batch of tokenised prompts (left-padded here).
    Returns per row (chosen item indices, {item index: score})."""
    grammar = LabelSetGrammar(task, tokenizer)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else grammar.end
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    cache, logits = out.past_key_values, out.logits[:, -1, :]
    states = [_RowState() for _ in prompts]
    next_pos = pos[:, -1:] + 1
    for _ in range(max_steps):
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        nxt = []
        for r, st in enumerate(states):
            nxt.append(grammar.end if st.done else grammar.step(st, logprobs[r]))
        if all(st.done for st in states):
            break
        step_ids = torch.tensor(nxt, device=device).unsqueeze(1)
        mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=next_pos,
                    past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1, :]
        next_pos = next_pos + 1
    for st in states:
        if not st.done:  # ran out of steps: keep what was finished, flag by a NaN score
            st.scores[-1] = math.nan
    return [(st.chosen, st.scores) for st in states]
