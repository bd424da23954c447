"""Ranking diseases with a language model: retrieve, then rerank.

The knowledge ranker (baselines.phenotype_ranker) scores every candidate disease in milliseconds;
its top K go to the model, which scores each candidate's name given the patient's summary:
log p(" <name><|im_end|>" | prompt), teacher-forced. The output is always a list of valid candidate
ids; the model cannot name anything else.

Cost per patient: one pass over the prompt (its shared chat-template prefix is encoded once per
run) and one batched pass over the K names, which reuse the prompt's key/value cache: about
prompt + K x name tokens, instead of K x (prompt + name) for scoring full sequences.

Fusion: final score = ranker log-posterior over the top K + weight x model log-probability
(`fuse`); weight 0 is the ranker alone, a large weight the model alone (ties broken by the
ranker). The weight is chosen on held-out synthetic patients, never on the test cases.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..models.compat import cache_kw, returned_cache
from .constrained import autocast, common_prefix_length, encode_prefix, fp32_logits, kv_cache, plain_head

__all__ = ["fuse", "ranking_entries", "score_names"]


Head = tuple[torch.Tensor, torch.Tensor | None] | None
"""The output head's weight and bias in fp32 (`plain_head`), or None: the model's own head."""


def _logits(model, head: Head, last_only: bool, cache, **inputs):
    """(the forward pass's output, its fp32 logits: at the last position only with `last_only`)."""
    if head is None:
        out = model(**inputs, **cache_kw(model, cache), logits_to_keep=1 if last_only else 0)
        return out, out.logits.float()
    out = model.base_model(**inputs, **cache_kw(model.base_model, cache))
    hidden = out.last_hidden_state
    return out, fp32_logits(hidden[:, -1:] if last_only else hidden, *head)


def next_token_logits(model, head: Head, cache, **inputs) -> tuple[object, torch.Tensor]:
    """One pass that keeps its key/value cache: (output, fp32 next-token logits (rows, vocab))."""
    out, logits = _logits(model, head, True, cache, use_cache=True, **inputs)
    return out, logits[:, -1]


def prompt_pass(model, head: Head, prompt: list[int], n_prefix: int, prefix_kv):
    """The prompt after its shared prefix, on the prefix's key/value cache: (output holding the
    prompt's cache, fp32 next-token logits (1, vocab))."""
    device = next(model.parameters()).device
    return next_token_logits(model, head, kv_cache(device, prefix_kv if n_prefix else None),
                             input_ids=torch.tensor([prompt[n_prefix:]], device=device),
                             position_ids=torch.arange(n_prefix, len(prompt), device=device).unsqueeze(0))


def encode_prompts(model, tokenizer, task, texts: Sequence[str], share_prefix: bool,
                   autocast_dtype: torch.dtype | None):
    """The task's prompt for each text, whether each was cut, the length of the prefix every prompt
    shares (0 without `share_prefix`), that prefix's key/value tensors, and the fp32 head."""
    prompts, truncated = [], []
    for t in texts:
        p, cut = task.prompt_ids(tokenizer, t)
        prompts.append(p)
        truncated.append(cut)
    prefix = prompts[0][:common_prefix_length(prompts)] if share_prefix and prompts else []
    with autocast(model, autocast_dtype):
        prefix_kv = encode_prefix(model, prefix)
    h = plain_head(model)  # computed in fp32, once per call: names' log-probabilities sum many tokens
    bias = None if h is None or h.bias is None else h.bias.detach().float()
    head = None if h is None else (h.weight.detach().float(), bias)
    return prompts, truncated, len(prefix), prefix_kv, head


@torch.no_grad()
def _score_one(model, prompt: list[int], n_prefix: int, prefix_kv, answers: list[list[int]],
               head: Head) -> np.ndarray:
    device = next(model.parameters()).device
    out, first = prompt_pass(model, head, prompt, n_prefix, prefix_kv)
    first = torch.log_softmax(first[0], -1)
    scores = np.array([float(first[a[0]]) for a in answers])
    tails = [a[1:] for a in answers]
    if not any(tails):
        return scores
    k, width = len(answers), max(len(t) for t in tails)
    # feed each answer but its last token; the logits at each fed position score the next token
    feed = torch.zeros((k, width), dtype=torch.long)
    target = torch.full((k, width), -1, dtype=torch.long)
    mask = torch.zeros((k, len(prompt) + width), dtype=torch.long)
    mask[:, :len(prompt)] = 1
    for r, a in enumerate(answers):
        n = len(a) - 1
        feed[r, :n] = torch.tensor(a[:-1])
        target[r, :n] = torch.tensor(a[1:])
        mask[r, len(prompt):len(prompt) + n] = 1
    cache = returned_cache(out)
    cache.batch_repeat_interleave(k)
    pos = torch.arange(len(prompt), len(prompt) + width).unsqueeze(0).expand(k, -1)
    _, tail_logits = _logits(model, head, False, cache, input_ids=feed.to(device),
                             attention_mask=mask.to(device), position_ids=pos.to(device), use_cache=False)
    logp = torch.log_softmax(tail_logits, -1).cpu()
    keep = target >= 0
    gathered = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
    return scores + gathered.sum(-1).numpy()


@torch.no_grad()
def score_names(model, tokenizer, task, texts: Sequence[str], candidates: Sequence[Sequence[str]],
                progress: Callable[[int], None] | None = None, share_prefix: bool = True,
                autocast_dtype: torch.dtype | None = None) -> tuple[list[np.ndarray], list[bool]]:
    """For each text, the model's log-probability of each of its candidates' names (in the order
    given), and whether the text was cut to fit `task.max_text_tokens`. `autocast_dtype`
    (e.g. bf16 where the hardware runs it natively) runs the passes under autocast; the
    log-softmax is taken in fp32 either way."""
    if len(texts) != len(candidates):
        raise ValueError("one candidate list per text")
    model.eval()
    prompts, truncated, n_prefix, prefix_kv, head = encode_prompts(
        model, tokenizer, task, texts, share_prefix, autocast_dtype)
    out = []
    for prompt, cands in zip(prompts, candidates):
        answers = [task.answer_ids(tokenizer, c) for c in cands]
        with autocast(model, autocast_dtype):
            scores = _score_one(model, prompt, n_prefix, prefix_kv, answers, head) if answers else np.zeros(0)
        out.append(scores)
        if progress:
            progress(1)
    return out, truncated


def ranking_entries(top_ids: Sequence[str], scores: np.ndarray, names) -> list[dict]:
    """`[{"id", "label", "score"}, ...]` of the candidates, best first (stable on ties)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return [{"id": top_ids[i], "label": names[top_ids[i]], "score": round(float(scores[i]), 5)} for i in order]


def log_posterior(scores: np.ndarray) -> np.ndarray:
    """Scores (log-likelihood ratios or log-probabilities) normalised to a log-softmax."""
    s = np.asarray(scores, dtype=np.float64)
    m = s.max() if s.size else 0.0
    return s - m - np.log(np.exp(s - m).sum()) if s.size else s


def fuse(ranker_scores: np.ndarray, model_scores: np.ndarray, weight: float) -> np.ndarray:
    """Combined scores of the top-K candidates: ranker log-posterior (over these K) + weight x model
    log-probability. `weight=inf` ranks by the model alone, ties broken by the ranker."""
    r = log_posterior(ranker_scores)
    if np.isinf(weight):
        return np.asarray(model_scores, dtype=np.float64) + 1e-9 * r
    return r + weight * np.asarray(model_scores, dtype=np.float64)
