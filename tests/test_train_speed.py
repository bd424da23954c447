"""The training fast path is exact: encoding the shared prompt prefix once per batch gives the same
loss, gradients and trained model as encoding it in every row; and the training benchmark's FLOP
count matches a hand computation."""

from __future__ import annotations

import types

import pytest
import torch
from safetensors.torch import load_file

from synthdx.bench.train import training_flops
from synthdx.records import Record
from synthdx.tasks.multilabel import get_task
from synthdx.train.sft import TrainConfig, answer_loss, collate, shared_prefix_length, train

REPORTS = [
    ("Heart size is enlarged. Lungs are clear.", ["Cardiomegaly"]),
    ("Small left pleural effusion. No pneumothorax.", ["Pleural Effusion"]),
    ("No acute cardiopulmonary abnormality.", ["No Finding"]),
    ("Right lower lobe opacity concerning for pneumonia. ET tube in place.",
     ["Lung Opacity", "Pneumonia", "Support Devices"]),
    ("Mild pulmonary edema and cardiomegaly.", ["Cardiomegaly", "Edema"]),
    ("Bibasilar atelectasis.", ["Atelectasis"]),
]


def _batch(tokenizer):
    task = get_task("radiology", max_text_tokens=96)
    examples = [task.build_example(tokenizer, Record(id=str(i), text=t, labels=lab))
                for i, (t, lab) in enumerate(REPORTS)]
    return collate(examples, tokenizer.pad_token_id)


def test_shared_prefix_length_by_hand():
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
                        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 99, 0]])
    mask = torch.tensor([[1] * 12, [1] * 11 + [0]])
    labels = torch.full_like(ids, -100)
    labels[0, 11], labels[1, 10] = 12, 99
    assert shared_prefix_length(ids, mask, labels) == 9  # 10 shared, but position 9 predicts row 1's answer
    labels[1, 10], labels[1, 9] = -100, 10
    assert shared_prefix_length(ids, mask, labels) == 8
    labels[1, 9], labels[1, 5] = -100, 6
    assert shared_prefix_length(ids, mask, labels) == 0  # too short to be worth a pass
    assert shared_prefix_length(ids[:1], mask[:1], labels[:1]) == 0  # one row: nothing to share


def test_radiology_batch_shares_its_system_prompt_and_instruction(tokenizer):
    batch = _batch(tokenizer)
    n = shared_prefix_length(batch["input_ids"], batch["attention_mask"], batch["labels"])
    prefix = tokenizer.decode(batch["input_ids"][0, :n])
    assert "You are a radiologist." in prefix and "List the findings" in prefix
    assert (batch["labels"][:, :n + 1] == -100).all()


@pytest.mark.parametrize("method", ["full", "lora"])
def test_shared_prefix_gives_the_same_loss_and_gradients(tokenizer, tiny_model_dir, method):
    from synthdx.train.sft import build_model

    batch = _batch(tokenizer)
    n = shared_prefix_length(batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert n > 0
    torch.manual_seed(0)
    model = build_model(TrainConfig(model=str(tiny_model_dir), method=method, lora_dropout=0.0), "cpu")
    model.train()
    results = []
    for k in (0, n):
        model.zero_grad()
        loss, count = answer_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"], k)
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
        results.append((loss.item(), count, grads))
    (l0, c0, g0), (l1, c1, g1) = results
    assert c0 == c1 > 0
    assert l1 == pytest.approx(l0, rel=1e-5)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-6, msg=name)


def test_training_with_and_without_prefix_sharing_gives_the_same_model(tmp_path, tiny_model_dir):
    records = [Record(id=str(i), text=t, labels=lab) for i, (t, lab) in enumerate(REPORTS)]
    weights = []
    for share in (False, True):
        cfg = TrainConfig(model=str(tiny_model_dir), method="full", max_steps=3, batch_size=3, learning_rate=1e-3,
                          warmup_steps=1, precision="fp32", save_every=0, share_prefix=share)
        train(records, get_task("radiology"), tmp_path / str(share), cfg, device="cpu")
        weights.append(load_file(str(tmp_path / str(share) / "model" / "model.safetensors")))
    for name in weights[0]:
        torch.testing.assert_close(weights[1][name], weights[0][name], rtol=1e-4, atol=1e-5, msg=name)


def test_training_flops_by_hand():
    config = types.SimpleNamespace(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                   head_dim=4, intermediate_size=16, vocab_size=100)
    # per layer: q, o 8x8 each = 128; k, v 8x4 each = 64; mlp 3 x 8 x 16 = 384 -> 576 weights
    linear = 2 * 576 * 2 * 3 + 2 * 100 * 8 * 1  # 3 tokens through 2 layers, 1 answer position through the head
    attention = 2 * 2 * 4 * 3 * 4 * 2  # 2 x heads x head_dim x T(T+1) per layer, 2 layers
    assert training_flops(config, [3], 1, "lora") == 2 * linear + 3 * attention
    assert training_flops(config, [3], 1, "full") == 3 * linear + 3 * attention
    # FLOPs are additive over rows
    assert training_flops(config, [3, 3], 2, "full") == 2 * training_flops(config, [3], 1, "full")
    # a 2-token prefix both rows share is counted once: 4 tokens, 3x4 + 3x4 - 2x3 attention pairs
    linear = 2 * 576 * 2 * 4 + 2 * 100 * 8 * 2
    attention = 2 * 2 * 4 * 18 * 2
    assert training_flops(config, [3, 3], 2, "lora", shared_prefix=2) == 2 * linear + 3 * attention
    assert training_flops(config, [3], 1, "lora", shared_prefix=2) == training_flops(config, [3], 1, "lora")


def test_train_benchmark_runs_both_paths_and_writes_its_json(tmp_path, tiny_model_dir, monkeypatch):
    import json

    from synthdx.bench import train as bench

    monkeypatch.setattr(bench, "peaks", lambda device: {"fp32": 1e10, "bf16": 1e9, "best": 1e10, "best_dtype": "fp32"})
    out = tmp_path / "bench.json"
    result = bench.run_train_bench(out, model=str(tiny_model_dir), methods=["lora"], steps=1, batch_size=2,
                                   lora_dropout=0.1, profile=True)
    saved = json.loads(out.read_text())
    assert saved["settings"]["lora_dropout"] == 0.1
    top = saved["methods"]["lora"]["profile"]
    assert top and all(0 <= o["self_cpu_share"] <= 1 and o["calls"] > 0 for o in top)
    assert any(o["op"] in ("aten::mm", "aten::addmm", "aten::linear") for o in top)  # it saw the training step
    assert saved["speedup"] == pytest.approx(result["speedup"]) and saved["speedup"] > 0
    lora = saved["methods"]["lora"]
    for path in ("plain", "synthdx"):
        assert lora[path]["tokens"] > 0 and lora[path]["seconds"] > 0 and lora[path]["peak_memory_mib"] > 0
        assert 0 < lora[path]["mfu"] < 1 and 0 <= lora[path]["padding"] < 1
    assert saved["speedup"] == pytest.approx(lora["synthdx"]["tokens_per_second"] / lora["plain"]["tokens_per_second"])
    assert "| path |" in saved["table_markdown"]
