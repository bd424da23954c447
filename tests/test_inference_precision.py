"""Prediction in bf16 (`models.inference.prepare_for_inference`, `infer.constrained.kv_cache`):
weights cast (and, on a CPU with oneDNN, packed) once instead of by autocast on every pass, the
key/value cache stored in bf16. What changes is speed; what must not: the embeddings, the fp32
path, the labels the fast path finds against the slow reference on the same prepared model."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from synthdx.infer.constrained import autocast, kv_cache
from synthdx.infer.predict import predict_label_sets
from synthdx.models.inference import PackedLinear, _can_pack, prepare_for_inference
from synthdx.tasks.multilabel import get_task

from test_fast_path_equals_slow_path import TEXTS, slow_reference


@pytest.fixture(scope="module")
def task():
    return get_task("radiology")


@pytest.fixture(params=[True, False], ids=["packed", "cast"])
def bf16_model(tiny_model, request):
    model = copy.deepcopy(tiny_model)
    assert prepare_for_inference(model, torch.bfloat16, pack=request.param) == torch.bfloat16
    model.packed = request.param and _can_pack()
    return model


def test_fp32_leaves_the_model_as_it_is(tiny_model):
    model = copy.deepcopy(tiny_model)
    assert prepare_for_inference(model, torch.float32) is None
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not any(isinstance(m, PackedLinear) for m in model.modules())


def test_bf16_casts_linear_layers_and_keeps_embeddings(tiny_model, bf16_model):
    embed = bf16_model.get_input_embeddings().weight
    assert embed.dtype == torch.float32  # the tied head got its own bf16 copy; the embeddings did not change
    assert torch.equal(embed, tiny_model.get_input_embeddings().weight)
    head = bf16_model.get_output_embeddings()
    assert type(head) is torch.nn.Linear and head.weight.dtype == torch.bfloat16  # rows are read by the decoder
    layers = [m for m in bf16_model.modules() if type(m) is torch.nn.Linear or isinstance(m, PackedLinear)]
    assert len(layers) == 2 * 7 + 1  # q k v o gate up down per layer, and the head
    if bf16_model.packed:
        assert sum(isinstance(m, PackedLinear) for m in layers) == 2 * 7
    else:
        assert all(m.weight.dtype == torch.bfloat16 for m in layers)


@torch.no_grad()
def test_bf16_logits_stay_close_to_autocast(tiny_model, bf16_model, tokenizer, task):
    ids = torch.tensor([task.prompt_ids(tokenizer, TEXTS[0])[0]])
    with autocast(tiny_model, torch.bfloat16):
        ref = tiny_model(input_ids=ids).logits.float()
        got = bf16_model(input_ids=ids).logits.float()
    # same bf16 weights; a packed kernel may sum in another order: differences at bf16 rounding level
    assert torch.allclose(got, ref, atol=0.05 * float(ref.abs().max()))


@torch.no_grad()
def test_bf16_kv_cache_changes_nothing_but_storage(tiny_model, tokenizer, task):
    """Attention under bf16 autocast reads keys/values cast to bf16: a cache that stores them cast
    gives exactly the same predictions as the fp32 cache."""
    from transformers import DynamicCache

    import synthdx.infer.constrained as constrained

    with autocast(tiny_model, torch.bfloat16):
        assert kv_cache("cpu").layer_class_to_replicate.__name__ == "Bf16Layer"
    assert kv_cache("cpu").layer_class_to_replicate.__name__ == "DynamicLayer"  # outside autocast: plain
    ours = predict_label_sets(tiny_model, tokenizer, task, TEXTS, batch_size=3, autocast_dtype=torch.bfloat16)
    original = constrained.kv_cache
    constrained.kv_cache = lambda device, data=None: DynamicCache(ddp_cache_data=data)
    try:
        plain = predict_label_sets(tiny_model, tokenizer, task, TEXTS, batch_size=3, autocast_dtype=torch.bfloat16)
    finally:
        constrained.kv_cache = original
    assert [p.labels for p in ours] == [p.labels for p in plain]
    assert [p.scores for p in ours] == [p.scores for p in plain]


def test_prepared_bf16_fast_path_finds_the_slow_paths_labels(bf16_model, tokenizer, task):
    """The fast path on the prepared bf16 model against the slow one-token-at-a-time reference on
    the same model under the same autocast: bf16 rounds differently with other batch shapes, so
    scores agree to bf16 precision, not float precision."""
    fast = predict_label_sets(bf16_model, tokenizer, task, TEXTS, batch_size=3, autocast_dtype=torch.bfloat16)
    with autocast(bf16_model, torch.bfloat16):
        slow = [slow_reference(bf16_model, tokenizer, task, t) for t in TEXTS]
    agree = sum(p.labels == labels for p, (labels, _) in zip(fast, slow))
    assert agree >= len(TEXTS) - 1, agree
    for p, (labels, scores) in zip(fast, slow):
        if p.labels == labels:
            assert all(math.isclose(p.scores[n], s, abs_tol=0.02) for n, s in scores.items())
