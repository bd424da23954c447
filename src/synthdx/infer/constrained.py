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

import functools
import math
from dataclasses import dataclass, field

import torch

from ..models.compat import cache_kw, returned_cache
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
    before: dict[int, float] = field(default_factory=dict)  # scores from earlier branching points


class LabelSetGrammar:
    def __init__(self, task: MultiLabelTask, tokenizer):
        lay = task._layout(tokenizer)
        self.items: list[list[int]] = lay["items"]
        self.empty: list[int] = lay["empty"]
        self.sep, self.end = lay["sep"], lay["end"]
        self.n = len(self.items)

    def vocabulary(self) -> list[int]:
        """Every token the grammar can ever allow."""
        return sorted({t for item in self.items for t in item} | set(self.empty) | {self.sep, self.end})

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

    def forced(self, st: _RowState) -> int | None:
        """The next token when the grammar allows exactly one (the rest of an item no other item
        shares, the end after the last label or the empty answer), else None. Its probability
        renormalised over the allowed tokens is exactly 1 whatever the model says, so the decoder
        appends it without asking the model (`step(st, None)`)."""
        if st.done:
            return None
        allowed = self.allowed(st)
        return next(iter(allowed)) if len(allowed) == 1 else None

    def step(self, st: _RowState, logprobs: torch.Tensor | None) -> int:
        """Pick the next token for one row given its next-token logits or log-probabilities (only
        their differences over the allowed tokens matter); update the state. `logprobs` may be None
        when only one token is allowed (`forced`)."""
        allowed = self.allowed(st)
        toks = list(allowed)
        if len(toks) == 1:
            probs = [1.0]  # softmax over one allowed token, whatever its logit
        else:
            probs = torch.softmax(logprobs[toks].float(), dim=0).tolist()
        best = max(range(len(toks)), key=lambda j: probs[j])
        tok = toks[best]
        if not st.after_item:
            starting = not st.prefix
            if starting:
                st.branch_mass = 1.0
                st.before = dict(st.scores)
            # credit every candidate item with the mass of its group at this branching point; walking
            # down a shared group replaces the group's mass by the split the model gives inside it
            for t, p in zip(toks, probs):
                for i in allowed[t]:
                    if i >= 0:
                        st.scores[i] = max(st.before.get(i, 0.0), st.branch_mass * p)
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


def plain_head(model) -> torch.nn.Linear | None:
    """The output head when it is a plain linear map of the decoder's output (so logits can be
    computed for chosen rows and positions only, and in fp32), else None (e.g. logit soft-capping)."""
    head = model.get_output_embeddings()
    plain = (isinstance(head, torch.nn.Linear) and model.base_model is not model
             and not getattr(model.config, "final_logit_softcapping", None))
    return head if plain else None


def fp32_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Logits in fp32 whatever autocast is on: in bf16, logits around 20 round to steps of 0.125,
    which moves scores and can flip near-ties; the head over a few rows or positions costs little."""
    with torch.autocast(hidden.device.type, enabled=False):
        return torch.nn.functional.linear(hidden.float(), weight.float(), None if bias is None else bias.float())


class _GrammarLogits:
    """Next-token logits at the last position, computed only for the tokens the grammar can allow
    (~40 of a 49k vocabulary), in fp32, and returned in a full-vocabulary tensor (-inf elsewhere).
    The grammar renormalises over allowed tokens, so the rest of the vocabulary never matters;
    skipping it removes the LM head, a large share of each decoding step of a small model. Models
    whose head is not a plain linear map of the decoder output get the full head."""

    def __init__(self, model, grammar: LabelSetGrammar):
        self.model = model
        self.vocab = torch.tensor(grammar.vocabulary(), device=next(model.parameters()).device)
        head = plain_head(model)
        self.weight = head.weight.detach()[self.vocab].float() if head is not None else None
        self.bias = head.bias.detach()[self.vocab].float() if head is not None and head.bias is not None else None
        self.size = model.get_output_embeddings().weight.shape[0]

    def __call__(self, cache, **inputs) -> tuple[object, torch.Tensor]:
        if self.weight is None:
            out = self.model(**inputs, **cache_kw(self.model, cache), use_cache=True, logits_to_keep=1)
            return returned_cache(out), out.logits[:, -1, :].float().cpu()
        base = self.model.base_model
        out = base(**inputs, **cache_kw(base, cache), use_cache=True)
        sub = fp32_logits(out.last_hidden_state[:, -1, :], self.weight, self.bias)
        full = torch.full((sub.shape[0], self.size), -math.inf)
        full[:, self.vocab.cpu()] = sub.cpu()
        return returned_cache(out), full


def autocast(model, dtype: torch.dtype | None):
    """`torch.autocast` to `dtype` on the model's device; off for None or fp32."""
    device = next(model.parameters()).device.type
    if dtype is None or dtype == torch.float32:
        return torch.autocast(device, enabled=False)
    return torch.autocast(device, dtype=dtype)


@functools.cache
def _bf16_layer():
    from transformers.cache_utils import DynamicLayer

    class Bf16Layer(DynamicLayer):
        """A cache layer that stores keys and values in bf16."""

        def update(self, key_states, value_states, *args, **kwargs):
            return super().update(key_states.to(torch.bfloat16), value_states.to(torch.bfloat16), *args, **kwargs)

    return Bf16Layer


def kv_cache(device: torch.device | str, data: list[tuple[torch.Tensor, torch.Tensor]] | None = None):
    """A key/value cache (`transformers.DynamicCache`), filled with `data` (per layer (keys,
    values)) if given. Under bf16 autocast its layers keep keys and values in bf16: attention casts
    them to bf16 on every pass anyway (same values), so storing them cast saves re-casting the whole
    cache each pass and halves what each pass copies."""
    from transformers import DynamicCache

    device = torch.device(device).type
    if not (torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16):
        return DynamicCache(ddp_cache_data=data)
    cache = DynamicCache()
    cache.layer_class_to_replicate = _bf16_layer()
    for i, (k, v) in enumerate(data or ()):
        cache.update(k, v, i)
    return cache


def common_prefix_length(prompts: list[list[int]]) -> int:
    """Tokens every prompt starts with, leaving each prompt at least one token of its own."""
    if not prompts:
        return 0
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for k in range(max(n, 0)):
        if any(p[k] != first[k] for p in prompts):
            return k
    return max(n, 0)


@torch.no_grad()
def encode_prefix(model, prefix: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Key/value tensors (batch 1) of a prompt prefix shared by every row, e.g. the chat template,
    system prompt and instruction: computed once per prediction run instead of once per row."""
    if not prefix:
        return []
    device = next(model.parameters()).device
    ids = torch.tensor([prefix], device=device)
    if model.base_model is not model:  # the decoder alone: no logits are needed
        out = model.base_model(input_ids=ids, **cache_kw(model.base_model, kv_cache(device)), use_cache=True)
    else:
        out = model(input_ids=ids, **cache_kw(model, kv_cache(device)), use_cache=True, logits_to_keep=1)
    return [(layer.keys, layer.values) for layer in returned_cache(out).layers]


@torch.no_grad()
def decode_label_sets(model, tokenizer, task: MultiLabelTask, prompts: list[list[int]],
                      max_steps: int = 96, prefix: list[int] | None = None,
                      prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                      stats: dict | None = None,
                      ) -> list[tuple[list[int], dict[int, float]]]:
    """Greedy constrained decoding for a batch of tokenised prompts.
    Returns per row (chosen item indices, {item index: score}).

    With `prefix` (tokens every prompt starts with) and its `prefix_kv` from `encode_prefix`, rows
    are laid out as [prefix][left padding][rest of prompt]: padding in the middle is masked out and
    positions count real tokens only, so the result equals decoding the full prompts.

    Forward passes: one over the prompts, then one per *choice* rather than one per token: tokens
    the grammar forces (the rest of an item once its first token is chosen, the end after the last
    label) are appended without asking the model and fed together with the chosen token in the next
    pass, right-aligned with masked padding before them, so each row's next-token logits are at the
    last position. A row that chose the end token is finished: it leaves the batch (its cache rows
    are dropped), so later passes do not compute it. `max_steps`
    counts answer tokens, as before. `stats`, if given, gets "passes" and "tokens" added."""
    grammar = LabelSetGrammar(task, tokenizer)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else grammar.end
    n_prefix = len(prefix) if prefix and prefix_kv else 0
    if n_prefix and any(p[:n_prefix] != prefix for p in prompts):
        raise ValueError("every prompt must start with the cached prefix")
    rests = [p[n_prefix:] for p in prompts]
    rows = len(prompts)
    width = max(len(p) for p in rests)
    ids = torch.full((rows, width), pad, dtype=torch.long)
    mask = torch.zeros((rows, n_prefix + width), dtype=torch.long)
    mask[:, :n_prefix] = 1
    for r, p in enumerate(rests):
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, n_prefix + width - len(p):] = 1
    pos = ((mask.cumsum(-1) - 1).clamp(min=0))[:, n_prefix:]
    ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
    cache = kv_cache(device, [(k.expand(rows, -1, -1, -1).contiguous(), v.expand(rows, -1, -1, -1).contiguous())
                      for k, v in prefix_kv] if n_prefix else None)
    next_logits = _GrammarLogits(model, grammar)
    cache, logits = next_logits(cache, input_ids=ids, attention_mask=mask, position_ids=pos)
    passes = 1
    states = [_RowState() for _ in prompts]
    next_pos = [int(x) for x in (pos[:, -1] + 1).tolist()]
    written = [0] * rows  # answer tokens per row
    active = list(range(rows))  # the rows still decoding, in the order of the cache's batch
    while True:
        feeds: list[list[int]] = []
        for j, r in enumerate(active):  # every active row is unfinished, with steps left
            st = states[r]
            feed = [grammar.step(st, logits[j])]
            written[r] += 1
            while written[r] < max_steps and grammar.forced(st) is not None:
                feed.append(grammar.step(st, None))
                written[r] += 1
            # a finished row's last token (the end) is never fed: nothing is read after it
            feeds.append([] if st.done or written[r] >= max_steps else feed)
        keep = [j for j, f in enumerate(feeds) if f]
        if not keep:
            break
        if len(keep) < len(active):  # finished rows leave the batch: later passes skip them
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask = mask.index_select(0, index)
            active = [active[j] for j in keep]
            feeds = [feeds[j] for j in keep]
        w = max(len(f) for f in feeds)
        step_ids = torch.full((len(active), w), pad, dtype=torch.long)
        step_mask = torch.zeros((len(active), w), dtype=torch.long)
        step_pos = torch.zeros((len(active), w), dtype=torch.long)
        for j, (r, f) in enumerate(zip(active, feeds)):
            k = len(f)
            step_ids[j, w - k:] = torch.tensor(f)
            step_mask[j, w - k:] = 1
            step_pos[j, w - k:] = torch.arange(next_pos[r], next_pos[r] + k)
            next_pos[r] += k
        mask = torch.cat([mask, step_mask.to(device)], dim=1)
        cache, logits = next_logits(cache, input_ids=step_ids.to(device), attention_mask=mask,
                                    position_ids=step_pos.to(device))
        passes += 1
    for st in states:
        if not st.done:  # ran out of steps: keep what was finished, flag by a NaN score
            st.scores[-1] = math.nan
    if stats is not None:
        stats["passes"] = stats.get("passes", 0) + passes
        stats["tokens"] = stats.get("tokens", 0) + sum(written)
    return [(st.chosen, st.scores) for st in states]
