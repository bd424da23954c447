"""`synthdx export RUN --out DIR`: a fake run directory around the tiny model (trained for real, 2 steps),
exported through the CLI: the files, the model card's front matter, sections and numbers, the weights
(loadable, equal to the run's), refusal to overwrite, a clear error for a missing run, and a LoRA
adapter merged on export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from synthdx.cli import app
from synthdx.export import model_card
from synthdx.records import Record
from synthdx.tasks.multilabel import radiology_task
from synthdx.train.sft import TASK_FILE, TrainConfig, train

runner = CliRunner()
SECRET = "Secret record text: patient Zebediah has a left apical pneumothorax."
DATA_SHA = "ab" * 32
TRAIN = [("Heart size is enlarged.", ["Cardiomegaly"]), ("Small left pleural effusion.", ["Pleural Effusion"]),
         ("No acute abnormality.", ["No Finding"]), ("Bibasilar atelectasis.", ["Atelectasis"])]


def _flat(text: str) -> str:
    return "".join(text.split())


def _metrics() -> dict:
    def system(micro, micro_ci, macro, macro_ci):
        return {"n": 423, "n_labels": 14,
                "micro": {"precision": 0.763, "recall": 0.672, "f1": micro, "f1_ci": micro_ci},
                "macro": {"precision": 0.5, "recall": 0.4, "f1": macro, "f1_ci": macro_ci},
                "per_label": {"Cardiomegaly": {"f1": 0.77, "support": 28}}}

    return {"title": "Test run: chest X-ray findings",
            "labels": radiology_task().label_space.names,
            "systems": {"rule teacher": system(0.9619, [0.9470, 0.9754], 0.9353, [0.8577, 0.9711]),
                        "student (fine-tuned)": system(0.7141, [0.6771, 0.7512], 0.4113, [0.3551, 0.4552]),
                        "base model zero-shot": system(0.2381, [0.2041, 0.2743], 0.0931, [0.0661, 0.1192])},
            "evidence": {"errors": [{"id": "r1", "text": SECRET}]},
            "extra": {"data": {"source": "/data/iu-xray/indiana_reports.dev.csv", "pool": 280, "test": 423,
                               "train_synthetic": 60},
                      "training": {"examples": 4, "steps": 2}}}


def _provenance(base: str) -> dict:
    return {"schema": 1, "started_utc": "2026-01-02T03:04:05+00:00", "finished_utc": "2026-01-02T04:00:00+00:00",
            "config": {"experiment": "radiology"},
            "data_sources": {"real reports": {"path": "/data/iu-xray/indiana_reports.dev.csv", "kind": "file",
                                              "bytes": 1066587, "sha256": DATA_SHA}},
            "seeds": {"synthetic": 0, "train": 0, "eval": 0},
            "models": {"base": {"id": base, "local": True}},
            "settings": {"teacher": {"kind": "rules", "uncertain": "negative"},
                         "synthetic": {"n": 60, "seed": 3, "fit_to_teacher_labels": True}},
            "libraries": {"python": "3.11", "synthdx": "0.1.0", "torch": "2.x", "transformers": "5.x"},
            "git": {"commit": "c0ffee" * 6 + "abcd", "dirty": False}}


def _write_run_files(run: Path, base: str, metrics: bool = True) -> None:
    if metrics:
        (run / "metrics.json").write_text(json.dumps(_metrics()))
    (run / "provenance.json").write_text(json.dumps(_provenance(base)))
    (run / "config.yaml").write_text(yaml.safe_dump({
        "experiment": "radiology", "title": "Test run",
        "teacher": {"kind": "rules", "uncertain": "negative"}, "synthetic": {"n": 60, "seed": 3}}))
    (run / "data").mkdir(exist_ok=True)
    (run / "data" / "pool.jsonl").write_text(json.dumps({"id": "r1", "text": SECRET}) + "\n")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A finished radiology run: the tiny model trained 2 LoRA steps (RUN/model, merged, with its
    task spec), plus metrics.json, provenance.json and config.yaml written by hand."""
    run = tmp_path_factory.mktemp("run")
    records = [Record(id=f"r{i}", text=t, labels=labels) for i, (t, labels) in enumerate(TRAIN)]
    train(records, radiology_task(), run, TrainConfig(
        model=str(tiny_model_dir), method="lora", max_steps=2, batch_size=2, learning_rate=5e-3,
        warmup_steps=1, precision="fp32", save_every=0, max_text_tokens=64), device="cpu")
    _write_run_files(run, str(tiny_model_dir))
    return run


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_export_writes_model_card_and_weights(run_dir, tmp_path, tiny_model_dir):
    out = tmp_path / "exported"
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported" in result.output
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", TASK_FILE,
                 "README.md", "provenance.json"):
        assert (out / name).is_file(), name
    assert not (tmp_path / "exported.partial").exists()
    assert json.loads((out / "provenance.json").read_text()) == json.loads((run_dir / "provenance.json").read_text())
    assert json.loads((out / TASK_FILE).read_text()) == json.loads((run_dir / "model" / TASK_FILE).read_text())

    card = (out / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["license"] == "apache-2.0"
    assert meta["library_name"] == "transformers"
    assert "synthdx" in meta["tags"] and "radiology" in meta["tags"]
    assert "base_model" not in meta  # a local directory is not a hub id: named in the text instead
    assert "base model's own licence applies" in card
    for section in ("## What the model does", "## Training data and procedure", "## Evaluation results",
                    "## How to use it", "## Limitations", "## Provenance"):
        assert f"\n{section}\n" in card, section
    # what it does: the task, its labels, the prompt
    assert "`radiology`" in card and "`Pleural Effusion`" in card and "`Support Devices`" in card
    assert "You are a radiologist." in card and "cut to its first 64 tokens" in card
    # training data: the file's sha256, teacher and generator settings, the number of examples
    assert f"`{DATA_SHA}`" in card and "`indiana_reports.dev.csv`" in card
    assert "- kind: rules" in card and "- uncertain: negative" in card and "- fit_to_teacher_labels: True" in card
    assert "**4 training examples**" in card and "2 optimiser steps" in card
    # evaluation: the numbers with their CIs, the model's rows marked
    assert "| **student (fine-tuned)** (this model) | 423 | 0.714 [0.677, 0.751] | 0.411 [0.355, 0.455] |" in card
    assert "| rule teacher | 423 | 0.962 [0.947, 0.975] | 0.935 [0.858, 0.971] |" in card
    assert "**Headline:** student (fine-tuned): micro-F1 0.714 [0.677, 0.751], macro-F1 0.411" in card
    # usage and limitations
    assert "synthdx predict --model exported --input" in card
    assert "not for clinical use" in card
    # never a record's text
    assert "Zebediah" not in card and SECRET not in card

    # the weights: the same tensors as the run's model, and transformers loads them
    src, exp = load_file(str(run_dir / "model" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert set(src) == set(exp) and all(torch.equal(src[k], exp[k]) for k in src)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    state = model.state_dict()
    for k, v in src.items():
        assert torch.equal(state[k], v), k
    assert AutoTokenizer.from_pretrained(out).chat_template


def test_second_export_refuses_without_force(run_dir, tmp_path):
    out = tmp_path / "exported"
    assert runner.invoke(app, ["export", str(run_dir), "--out", str(out)]).exit_code == 0
    (out / "README.md").write_text("edited")
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(out)])
    assert result.exit_code == 2
    assert "error:" in result.output and "already exists" in result.output and "--force" in result.output
    assert (out / "README.md").read_text() == "edited"  # untouched
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert (out / "README.md").read_text().startswith("---\nlicense: apache-2.0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]  # no .partial or .old left


def test_missing_run_dir_is_a_one_line_error(tmp_path):
    missing = tmp_path / "no-such-run"
    result = runner.invoke(app, ["export", str(missing), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert _flat(f"error: {missing}: no such run directory") in _flat(result.output)
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()
    # a run directory without a model
    (tmp_path / "empty-run").mkdir()
    result = runner.invoke(app, ["export", str(tmp_path / "empty-run"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "no trained model" in result.output and "Traceback" not in result.output


def test_lora_adapter_is_merged_on_export(tmp_path, tiny_model_dir, tokenizer):
    """A run whose model folder holds a LoRA adapter (not merged): the export merges it with peft's
    merge_and_unload and writes plain safetensors equal to the in-memory merge; no metrics: the card
    says the model has not been evaluated."""
    from peft import LoraConfig, get_peft_model

    from synthdx.models.loading import load_causal_lm

    run = tmp_path / "run"
    model_dir = run / "model"
    torch.manual_seed(0)
    peft_model = get_peft_model(load_causal_lm(str(tiny_model_dir)), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # B starts at zero: make the adapter change something
    peft_model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    task = radiology_task(max_text_tokens=64)
    (model_dir / TASK_FILE).write_text(json.dumps({**task.spec(), "base_model": str(tiny_model_dir),
                                                   "train_config": {"method": "lora", "lora_r": 4},
                                                   "train_stats": {"examples": 7, "steps": 1}}))
    _write_run_files(run, str(tiny_model_dir), metrics=False)
    expected = {k: v.detach().clone() for k, v in peft_model.merge_and_unload().state_dict().items()}

    out = tmp_path / "exported"
    result = runner.invoke(app, ["export", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    weights = load_file(str(out / "model.safetensors"))
    assert not any("lora" in k for k in weights)
    assert not (out / "adapter_config.json").exists()
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    assert set(weights) == set(base)
    for k, v in weights.items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=1e-6, msg=k)
    assert not torch.equal(weights["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])
    assert (out / TASK_FILE).is_file() and (out / "tokenizer.json").is_file()
    card = (out / "README.md").read_text()
    assert "has not been evaluated" in card and "**7 training examples**" in card


def test_ranking_card_from_real_shaped_metrics():
    """A rare-ddx run's card (metrics shaped as runs/rare-ddx-*/metrics.json): top-1/top-10/MRR with CIs,
    the headline the fusion weight the run chose, and the SmolLM2 alias as the hub base model."""
    def system(top1, top10, mrr, n=200):
        return {"n": n, "all": {"n": n, "top1": top1, "top1_ci": [top1 - 0.05, top1 + 0.05], "top10": top10,
                                "top10_ci": [top10 - 0.06, top10 + 0.07], "mrr": mrr, "mrr_ci": [mrr - 0.06, mrr + 0.06]}}

    metrics = {"title": "Rare-disease differential diagnosis", "systems": {
        "all_cases": {"knowledge ranker": system(0.378, 0.561, 0.444, n=6878)},
        "model_cases": {"knowledge ranker": system(0.395, 0.555, 0.449),
                        "fine-tuned model reranks top 10": system(0.12, 0.555, 0.231),
                        "fine-tuned model + ranker (weight 0.25)": system(0.405, 0.555, 0.456)}},
        "extra": {"data": {"cases": "/data/phenopacket-store.dev.zip", "labelled_cases": 6878, "model_cases": 200}}}
    spec = {"task": "rare-ddx", "kind": "disease-ranking", "system_prompt": "You are a clinical geneticist.",
            "instruction": "Name the most likely diagnosis for this patient.", "max_text_tokens": 256,
            "knowledge_version": "2025-01-16", "n_candidates": 8352, "base_model": "smollm2-135m",
            "train_config": {"method": "full", "seed": 0}, "train_stats": {"examples": 250, "steps": 32},
            "rerank": {"top_k": 10, "weight": 0.25, "weight_chosen_on": "held-out synthetic patients"}}
    prov = {"data_sources": {"real cases": {"path": "/data/phenopacket-store.dev.zip", "bytes": 5, "sha256": DATA_SHA}},
            "settings": {"synthetic": {"n_diseases": 250, "patients_per_disease": 1, "seed": 0}}}
    card = model_card(spec, metrics, prov, {}, "rare-ddx-export")
    meta = _front_matter(card)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["license"] == "apache-2.0"
    assert "rare-disease" in meta["tags"]
    assert "HuggingFaceTB/SmolLM2-135M-Instruct, is licensed Apache-2.0" in card
    assert ("| **fine-tuned model + ranker (weight 0.25)** (this model) | 200 | 0.405 [0.355, 0.455] | "
            "0.555 [0.495, 0.625] | 0.456 [0.396, 0.516] |") in card
    assert "| knowledge ranker | 6878 | 0.378 [0.328, 0.428] |" in card
    assert "**Headline:** fine-tuned model + ranker (weight 0.25): top-1 0.405 [0.355, 0.455]" in card
    assert "8352 diseases" in card and "HPO release 2025-01-16" in card and "top 10" in card
    assert "- n_diseases: 250" in card and "**250 training examples**" in card and f"`{DATA_SHA}`" in card
    assert "synthdx predict --model rare-ddx-export --input cases.zip" in card
    assert "not for clinical use" in card


RARE_SPEC = {"task": "rare-ddx", "kind": "disease-ranking", "system_prompt": "You are a clinical geneticist.",
             "instruction": "Name the most likely diagnosis for this patient.", "max_text_tokens": 256,
             "knowledge_version": "2025-01-16", "n_candidates": 8352}


def _mixture_run(run_dir: Path, tmp_path: Path) -> Path:
    """A mixture run around the tiny model: RUN/joint/model (a two-task spec) and RUN/alone/radiology/model,
    with a metrics.json shaped as `synthdx run configs/mixture-cpu.yaml` writes it."""
    mix = tmp_path / "mix"
    radiology = json.loads((run_dir / "model" / TASK_FILE).read_text())
    for folder, spec in (("joint", {"task": "radiology+rare-ddx", "kind": "multi-task",
                                    "tasks": {"radiology": radiology, "rare-ddx": RARE_SPEC},
                                    "mixture": {"weights": {"radiology": 0.5, "rare-ddx": 0.5},
                                                "examples": {"radiology": 40, "rare-ddx": 40}},
                                    "train_stats": {"examples": 80, "steps": 10}}),
                         ("alone/radiology", radiology)):
        shutil.copytree(run_dir / "model", mix / folder / "model")
        (mix / folder / "model" / TASK_FILE).write_text(json.dumps(spec))

    def point(v):
        return {"value": v, "ci": [v - 0.07, v + 0.07]}

    summary = [{"task": "radiology", "metric": "micro-F1", "n": 208, "alone": point(0.563), "joint": point(0.532),
                "diff": {"diff": -0.031, "ci": [-0.055, -0.007], "p_value": 0.012}},
               {"task": "rare-ddx", "metric": "top-1, model + ranker", "n": 60, "alone": point(0.433),
                "joint": point(0.417), "diff": {"diff": -0.017, "ci": [-0.05, 0.0], "p_value": 0.606}}]
    (mix / "metrics.json").write_text(json.dumps({"title": "Mixture", "systems": {"summary": summary}, "extra": {}}))
    (mix / "provenance.json").write_text(json.dumps(_provenance("smollm2-135m")))
    return mix


def test_mixture_run_exports_the_joint_model_with_every_task(run_dir, tmp_path):
    mix = _mixture_run(run_dir, tmp_path)
    out = tmp_path / "joint-export"
    result = runner.invoke(app, ["export", str(mix), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / TASK_FILE).read_text())["kind"] == "multi-task"
    card = (out / "README.md").read_text()
    meta = _front_matter(card)
    assert {"multi-task", "rare-disease", "radiology"} <= set(meta["tags"])
    assert "### Task `radiology`" in card and "### Task `rare-ddx`" in card and "`Pleural Effusion`" in card
    assert "synthdx predict --model joint-export --task radiology --input reports.jsonl" in card
    assert "synthdx predict --model joint-export --task rare-ddx --input cases.zip" in card
    assert ("| `radiology` | micro-F1 | 208 | 0.532 [0.462, 0.602] | 0.563 [0.493, 0.633] | "
            "-0.031 [-0.055, -0.007] | 0.012 |") in card
    assert "| `rare-ddx` | top-1, model + ranker | 60 | 0.417 [0.347, 0.487] |" in card
    assert "**Headline:** radiology micro-F1 0.532 [0.462, 0.602] on 208 real test records; rare-ddx" in card


def test_mixture_run_exports_a_task_trained_alone(run_dir, tmp_path):
    mix = _mixture_run(run_dir, tmp_path)
    out = tmp_path / "alone-export"
    result = runner.invoke(app, ["export", str(mix), "--out", str(out), "--model", "alone/radiology"])
    assert result.exit_code == 0, result.output
    card = (out / "README.md").read_text()
    assert "this model (alone)" in card and "rare-ddx" not in card.split("## Evaluation results")[1]
    assert "| `radiology` | micro-F1 | 208 | 0.563 [0.493, 0.633] | 0.532 [0.462, 0.602] |" in card
    # a model the run does not have: a clear error that says what a mixture run holds
    result = runner.invoke(app, ["export", str(mix), "--out", str(tmp_path / "x"), "--model", "alone/mtsamples"])
    assert result.exit_code == 2 and "alone/mtsamples" in _flat(result.output) and "mixture run" in result.output
