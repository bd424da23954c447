"""Constrained decoding over candidate names (beam search on a prefix tree): every output is a
candidate, its score is the name's exact log-probability (what retrieve-then-rerank scores), and a
beam as wide as the candidate list finds the exhaustive ranking."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from synthdx.infer.name_search import NameTrie, ranks_with_fill, search_names
from synthdx.infer.rerank import score_names
from synthdx.models.inference import prepare_for_inference
from synthdx.tasks.rare_ddx import DiseaseRankingTask, disease_names

TEXTS = ["A 3-year-old girl has seizures and hypotonia.",
         "A newborn boy has cleft palate; no heart defect was found."]


@pytest.fixture(scope="module")
def task(hpo):
    ids = sorted(hpo.disease_ids)[:40] + ["OMIM:154700"]  # includes names sharing first words
    return DiseaseRankingTask(names=disease_names(hpo, ids), max_text_tokens=64)


def test_trie_refuses_ambiguous_answers():
    trie = NameTrie({"a": [1, 2, 9], "b": [1, 3, 9], "c": [4, 9]})
    assert len(trie) == 3 and set(trie.children[0]) == {1, 4}
    with pytest.raises(ValueError, match="same answer"):
        NameTrie({"a": [1, 9], "b": [1, 9]})
    with pytest.raises(ValueError, match="beginning of another"):
        NameTrie({"a": [1, 2], "b": [1, 2, 9]})
    with pytest.raises(ValueError, match="beginning of another"):
        NameTrie({"b": [1, 2, 9], "a": [1, 2]})


def test_every_hpo_disease_name_has_its_own_answer(hpo, tokenizer):
    """All 8,352 candidate names as the task tokenises them (end token last) form a valid tree."""
    from synthdx.tasks.rare_ddx import rare_ddx_task

    task = rare_ddx_task(hpo)
    assert len(NameTrie.for_task(task, tokenizer)) == len(task.names)


def test_wide_beam_finds_the_exhaustive_ranking(task, tokenizer, tiny_model):
    ids = list(task.names)
    exact, _ = score_names(tiny_model, tokenizer, task, TEXTS, [ids] * len(TEXTS))
    found, truncated = search_names(tiny_model, tokenizer, task, TEXTS, NameTrie.for_task(task, tokenizer),
                                    beam=len(ids))
    assert truncated == [False, False]
    for row, scores in zip(found, exact):
        assert [c for c, _ in row] == [ids[i] for i in np.argsort(-scores, kind="stable")]
        np.testing.assert_allclose([s for _, s in row], np.sort(scores)[::-1], atol=2e-4)


@pytest.mark.parametrize("share_prefix", [True, False])
def test_narrow_beam_gives_valid_candidates_with_exact_scores(task, tokenizer, tiny_model, share_prefix):
    trie = NameTrie.for_task(task, tokenizer)
    found, _ = search_names(tiny_model, tokenizer, task, TEXTS, trie, beam=4, share_prefix=share_prefix)
    for text, row in zip(TEXTS, found):
        assert len(row) == 4 and len({c for c, _ in row}) == 4 and all(c in task.names for c, _ in row)
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True)
        exact, _ = score_names(tiny_model, tokenizer, task, [text], [[c for c, _ in row]])
        np.testing.assert_allclose(scores, exact[0], atol=2e-4)
    with pytest.raises(ValueError, match="beam"):
        search_names(tiny_model, tokenizer, task, TEXTS, trie, beam=0)


def test_ranks_with_fill_by_hand():
    ranker = ["d1", "d2", "d3", "d4", "d5"]
    assert ranks_with_fill(["d4", "d2"], ranker, ["d2"]) == 2
    assert ranks_with_fill(["d4", "d2"], ranker, ["d3"]) == 4  # d4, d2, then d1, d3
    assert ranks_with_fill(["d4", "d2"], ranker, ["d5"]) == 5
    assert ranks_with_fill([], ranker, ["d1", "d5"]) == 1
    assert ranks_with_fill(["d4"], ranker, ["OMIM:none"]) == float("inf")


def test_bf16_search_scores_its_names_as_reranking_does(task, tokenizer, tiny_model):
    """Under bf16 autocast on a prepared model (bf16 key/value cache, beams reordered in it), the
    names found score as `score_names` scores them on the same model, to bf16 precision."""
    model = copy.deepcopy(tiny_model)
    prepare_for_inference(model, torch.bfloat16)
    trie = NameTrie.for_task(task, tokenizer)
    found, _ = search_names(model, tokenizer, task, TEXTS, trie, beam=5, autocast_dtype=torch.bfloat16)
    for text, row in zip(TEXTS, found):
        assert len(row) == 5 and all(c in task.names for c, _ in row)
        exact, _ = score_names(model, tokenizer, task, [text], [[c for c, _ in row]],
                               autocast_dtype=torch.bfloat16)
        # bf16 rounding grows with a name's length: a relative bound (0.1%, about 1/8 of bf16's epsilon 2^-7); a
        # fixed 0.05 failed for a 375-nat name on a CPU without native bf16 (Xeon, AVX-512, no BF16)
        np.testing.assert_allclose([s for _, s in row], exact[0], rtol=1e-3, atol=0.05)
