"""Fine-tuning the tiny random llama: LoRA and full, what is saved, the task spec round trip, loading and
predicting with the trained model, learning (over-fitting), and resume after an interruption."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from synthdx.errors import SynthdxError
from synthdx.infer.batch import predict_file
from synthdx.infer.predict import predict_label_sets
from synthdx.models.loading import load_causal_lm, load_tokenizer
from synthdx.records import Record
from synthdx.tasks.multilabel import get_task
from synthdx.train.sft import TASK_FILE, TrainConfig, load_trained_task, train

DATA = [
    ("Heart size is enlarged. Lungs are clear.", ["Cardiomegaly"]),
    ("Small left pleural effusion.", ["Pleural Effusion"]),
    ("No acute cardiopulmonary abnormality.", ["No Finding"]),
    ("Right lower lobe opacity concerning for pneumonia. ET tube in place.",
     ["Lung Opacity", "Pneumonia", "Support Devices"]),
    ("Mild pulmonary edema and cardiomegaly.", ["Cardiomegaly", "Edema"]),
    ("Calcified granuloma in the left upper lobe.", ["Granuloma"]),
    ("Small right apical pneumothorax.", ["Pneumothorax"]),
    ("Hyperinflated lungs consistent with emphysema.", ["Emphysema or COPD"]),
    ("Old healed left rib fracture.", ["Fracture"]),
    ("Bibasilar atelectasis.", ["Atelectasis"]),
    ("Spiculated nodule in the right upper lobe.", ["Nodule or Mass"]),
    ("Scoliosis of the thoracic spine.", []),
]


def _records(n: int = 12) -> list[Record]:
    return [Record(id=f"r{i}", text=t, labels=labels) for i, (t, labels) in enumerate(DATA[:n])]


def _cfg(tiny_model_dir, **kw) -> TrainConfig:
    base = dict(model=str(tiny_model_dir), method="lora", max_steps=3, batch_size=4, learning_rate=5e-3,
                warmup_steps=1, precision="fp32", save_every=0, max_text_tokens=96, seed=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("lora-run")
    task = get_task("radiology")
    calls = []
    stats = train(_records(), task, out, _cfg(tiny_model_dir, save_every=2), device="cpu",
                  progress=lambda step, total, loss: calls.append((step, total, loss)))
    return out, task, stats, calls


def _weights(model_dir) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


# ---- config ---------------------------------------------------------------------------------------

def test_train_config_validation():
    with pytest.raises(ValueError, match="method"):
        TrainConfig(method="qlora")
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="positive"):
        TrainConfig(batch_size=0)


def test_no_records_is_an_error(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="no training examples"):
        train([], get_task("radiology"), tmp_path, _cfg(tiny_model_dir), device="cpu")
    assert not (tmp_path / "model").exists()


# ---- a LoRA run -----------------------------------------------------------------------------------

def test_lora_run_writes_a_plain_model(lora_run, tiny_model_dir):
    out, task, stats, calls = lora_run
    model_dir = out / "model"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", TASK_FILE):
        assert (model_dir / name).is_file(), name
    assert not (out / "checkpoints").exists()  # removed once the run finished
    assert not (out / ".model-tmp").exists()
    assert [(s, t) for s, t, _ in calls] == [(1, 3), (2, 3), (3, 3)]
    assert stats["steps"] == 3 and stats["examples"] == 12 and len(stats["losses"]) == 3
    assert all(math.isfinite(x) and x > 0 for x in stats["losses"])
    assert stats["losses"] == pytest.approx([loss for _, _, loss in calls], abs=1e-4)
    assert stats["answer_tokens"] > 0 and stats["tokens"] > stats["answer_tokens"]

    # LoRA is merged: the same tensors as the base model, the adapted projections changed, the rest not
    base, trained = _weights(tiny_model_dir), _weights(model_dir)
    assert set(trained) == set(base)
    assert not any("lora" in k for k in trained)
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    assert any(k.endswith("q_proj.weight") for k in changed)
    assert any(k.endswith("down_proj.weight") for k in changed)
    assert not any("embed_tokens" in k or "norm" in k for k in changed)

    spec = json.loads((model_dir / TASK_FILE).read_text())
    assert spec["base_model"] == str(tiny_model_dir)
    assert spec["train_config"]["method"] == "lora"
    assert spec["train_stats"]["steps"] == 3


def test_load_trained_task_round_trips(lora_run, tiny_model_dir):
    out, task, _, _ = lora_run
    loaded = load_trained_task(out / "model")
    assert loaded == task
    assert loaded.max_text_tokens == 96  # the training config's limit travels with the model
    assert loaded.label_space.names == get_task("radiology").label_space.names
    assert loaded.parse("enlarged heart, effusion") == (["Cardiomegaly", "Pleural Effusion"], True)
    assert load_trained_task(tiny_model_dir) is None  # a plain model


def test_trained_model_loads_and_predicts(lora_run, tokenizer):
    out, _, _, _ = lora_run
    model_dir = str(out / "model")
    model = load_causal_lm(model_dir)
    tok = load_tokenizer(model_dir)
    task = load_trained_task(model_dir)
    # same tokens and chat template as the base tokenizer
    assert task.prompt_ids(tok, DATA[0][0]) == task.prompt_ids(tokenizer, DATA[0][0])
    preds = predict_label_sets(model, tok, task, [t for t, _ in DATA[:4]], batch_size=2)
    names = task.label_space.names
    for p in preds:
        assert p.complete
        assert p.labels == [n for n in names if n in set(p.labels)]
        assert set(p.scores) == set(names) and all(0 <= s <= 1 for s in p.scores.values())


def test_predict_file_uses_the_trained_task(lora_run, tmp_path):
    out, task, _, _ = lora_run
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"u{i}", "text": t}) + "\n" for i, (t, _) in enumerate(DATA[4:7])))
    pred = tmp_path / "pred.jsonl"
    assert predict_file(str(out / "model"), src, pred) == 3  # no --task: the model knows its task
    rows = [json.loads(line) for line in pred.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["u0", "u1", "u2"]
    assert all(set(r["scores"]) == set(task.label_space.names) for r in rows)
    assert predict_file(str(out / "model"), src, pred, task="radiology") == 3  # the same task: fine
    # a model trained for another task refuses to predict this one
    other = tmp_path / "other-model"
    shutil.copytree(out / "model", other)
    spec = json.loads((other / TASK_FILE).read_text())
    (other / TASK_FILE).write_text(json.dumps({**spec, "task": "other"}))
    with pytest.raises(SynthdxError, match="trained for task 'other'"):
        predict_file(str(other), src, tmp_path / "x.jsonl", task="radiology")


# ---- full fine-tuning -----------------------------------------------------------------------------

def test_full_fine_tuning(tmp_path, tiny_model_dir):
    stats = train(_records(8), get_task("radiology"), tmp_path,
                  _cfg(tiny_model_dir, method="full", max_steps=2, learning_rate=1e-3), device="cpu")
    assert stats["steps"] == 2
    base, trained = _weights(tiny_model_dir), _weights(tmp_path / "model")
    assert set(trained) == set(base)
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    assert any("embed_tokens" in k for k in changed)  # all weights train, embeddings included
    assert any("layernorm" in k for k in changed)
    spec = json.loads((tmp_path / "model" / TASK_FILE).read_text())
    assert spec["train_config"]["method"] == "full"
    model = load_causal_lm(str(tmp_path / "model"))
    assert isinstance(model, torch.nn.Module)


# ---- it learns ------------------------------------------------------------------------------------

def test_overfitting_four_records(tmp_path, tiny_model_dir):
    """30 steps at a high learning rate on 4 records: the loss falls, and the saved model, loaded
    again, predicts exactly the training labels with constrained decoding."""
    records = _records(4)
    task = get_task("radiology")
    stats = train(records, task, tmp_path,
                  _cfg(tiny_model_dir, method="full", max_steps=30, learning_rate=1e-2, warmup_steps=2),
                  device="cpu")
    losses = stats["losses"]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.05 * sum(losses[:3]) / 3
    model_dir = str(tmp_path / "model")
    preds = predict_label_sets(load_causal_lm(model_dir), load_tokenizer(model_dir), load_trained_task(model_dir),
                               [r.text for r in records], batch_size=4)
    assert [p.labels for p in preds] == [sorted(r.labels, key=task.label_space.index) for r in records]
    for p in preds:
        for name, score in p.scores.items():
            assert (score > 0.5) == (name in p.labels), (name, score)


# ---- resume ---------------------------------------------------------------------------------------

class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("method", ["lora", "full"])
def test_resume_gives_the_same_model(tmp_path, tiny_model_dir, method):
    """6 steps straight == 6 steps checkpointed every 2, interrupted during step 5 (after the step-4
    checkpoint; step 5's work is lost) and resumed. LoRA dropout is on, so the RNG state must be
    restored too; 12 records in batches of 4 make the run cross an epoch boundary."""
    task = get_task("radiology")
    records = _records()
    lr = 5e-3 if method == "lora" else 1e-3
    straight = train(records, task, tmp_path / "straight",
                     _cfg(tiny_model_dir, method=method, max_steps=6, learning_rate=lr, save_every=0), device="cpu")

    cfg = _cfg(tiny_model_dir, method=method, max_steps=6, learning_rate=lr, save_every=2)
    run = tmp_path / "interrupted"

    def interrupt(step, total, loss):
        if step == 5:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(records, task, run, cfg, device="cpu", progress=interrupt)
    assert not (run / "model").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002", "step-000004"]

    seen = []
    resumed = train(records, get_task("radiology"), run, cfg, device="cpu",
                    progress=lambda step, total, loss: seen.append(step))
    assert seen == [5, 6]  # started after the last checkpoint
    assert resumed["steps"] == straight["steps"] == 6
    assert resumed["losses"] == pytest.approx(straight["losses"], abs=1e-5)
    assert resumed["tokens"] == straight["tokens"]
    assert not (run / "checkpoints").exists()

    a, b = _weights(tmp_path / "straight" / "model"), _weights(run / "model")
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    # and training did move the weights (the comparison is not between two copies of the base)
    base = _weights(tiny_model_dir)
    assert any(not torch.equal(base[k], a[k]) for k in a)


def test_bf16_lora_run_keeps_the_base_weights_in_fp32(tmp_path, tiny_model_dir):
    """Under bf16 the frozen base weights are stored in bf16 while training (autocast would cast them
    on every pass anyway); the saved model merges into the fp32 originals: layers LoRA did not adapt
    come out bit for bit as they went in."""
    cfg = _cfg(tiny_model_dir, precision="bf16", lora_targets=["q_proj", "v_proj"])
    train(_records(), get_task("radiology"), tmp_path, cfg, device="cpu")
    base, trained = _weights(tiny_model_dir), _weights(tmp_path / "model")
    assert all(t.dtype == torch.float32 for t in trained.values())
    for k in base:
        if "q_proj" in k or "v_proj" in k:
            continue
        assert torch.equal(base[k], trained[k]), k
    assert any(not torch.equal(base[k], trained[k]) for k in base if k.endswith("q_proj.weight"))


def test_cast_frozen_linear_weights_round_trips(tiny_model_dir):
    from synthdx.train.sft import build_model, cast_frozen_linear_weights, restore_weights

    model = build_model(_cfg(tiny_model_dir), "cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    originals = cast_frozen_linear_weights(model, torch.bfloat16)
    frozen_linear = [n for n, p in model.named_parameters() if "base_layer" in n and not p.requires_grad]
    assert frozen_linear and all(dict(model.named_parameters())[n].dtype == torch.bfloat16 for n in frozen_linear)
    assert model.get_input_embeddings().weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    restore_weights(originals)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert cast_frozen_linear_weights(model, torch.float32) == {}
