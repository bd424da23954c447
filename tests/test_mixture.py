"""Joint multi-task training: the mixture config, how many examples of each task are drawn and
which (by hand), a jointly trained model's task spec (round trip, predicting either task), and the
mixture experiment end to end on a tiny model (per-task metrics for the joint and the alone models)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from synthdx.config import MixtureConfig, load_config
from synthdx.errors import ConfigError, SynthdxError
from synthdx.io import write_jsonl
from synthdx.records import Record
from synthdx.train.mixture import draw, draw_mixture, mixture_counts, multi_task_spec

ROOT = Path(__file__).resolve().parents[1]
CPU_CONFIG = ROOT / "configs" / "mixture-cpu.yaml"


# ---------------------------------------------------------------- config

def _write(tmp_path, raw: dict) -> Path:
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _raw() -> dict:
    return {"experiment": "mixture",
            "tasks": [{"task": "radiology", "weight": 1, "data": {"path": "reports.jsonl", "loader": "jsonl"}},
                      {"task": "rare-ddx", "weight": 3, "data": {"path": "cases.zip"}}],
            "train": {"method": "full", "batch_size": 4}}


def test_shipped_cpu_config_is_valid():
    cfg = load_config(CPU_CONFIG)
    assert isinstance(cfg, MixtureConfig)
    assert [t.task for t in cfg.tasks] == ["radiology", "rare-ddx"] and cfg.mixture.alone
    assert abs(sum(cfg.weights.values()) - 1) < 1e-12
    # each task becomes a config of its own experiment, with the shared train section
    rad, ddx = (t.experiment(cfg.train, "t") for t in cfg.tasks)
    assert rad.train.method == ddx.train.method == cfg.train.method
    assert ddx.train.max_text_tokens == 256


def test_mixture_config_validation(tmp_path):
    cfg = load_config(_write(tmp_path, _raw()))
    assert cfg.weights == {"radiology": 0.25, "rare-ddx": 0.75}
    assert cfg.tasks[0].data.path.endswith("reports.jsonl") and cfg.tasks[1].data.path.endswith("cases.zip")
    # overrides reach into the list of tasks
    cfg = load_config(_write(tmp_path, _raw()), ["tasks.1.weight=1", "mixture.n_examples=10"])
    assert cfg.weights == {"radiology": 0.5, "rare-ddx": 0.5} and cfg.mixture.n_examples == 10
    with pytest.raises(ConfigError, match="the list has 2 items"):
        load_config(_write(tmp_path, _raw()), ["tasks.5.weight=1"])

    def bad(mutate, match):
        raw = _raw()
        mutate(raw)
        with pytest.raises(ConfigError, match=match):
            load_config(_write(tmp_path, raw))

    bad(lambda r: r["tasks"].pop(), "at least two tasks")
    bad(lambda r: r["tasks"].append(dict(r["tasks"][0])), "each task may appear once")
    bad(lambda r: r["tasks"][0].update(weight=0), r"tasks\.0\.radiology\.weight")
    bad(lambda r: r["tasks"][1].update(teacher={"kind": "rules"}), r"tasks\.1\.rare-ddx\.teacher")  # not a rare-ddx section
    bad(lambda r: r["tasks"][0].update(task="mtsamples"), "tasks.0")
    bad(lambda r: r["tasks"][1].update(rerank={"tuning_cases": 50}), "rare-ddx experiment alone")
    bad(lambda r: r["tasks"][0]["data"].update(validation_fraction=0.1), "validation_fraction must be 0")
    bad(lambda r: r.update(mixture={"n_examples": 0}), "mixture.n_examples")


# ---------------------------------------------------------------- sampling

def test_mixture_counts_by_hand():
    # no n_examples: the most the pools give with no repeats; a's pool (10) at weight 1/4 limits it to 40
    assert mixture_counts({"a": 10, "b": 100}, {"a": 1, "b": 3}) == {"a": 10, "b": 30}
    assert mixture_counts({"a": 10, "b": 100}, {"a": 1, "b": 1}) == {"a": 10, "b": 10}
    # largest remainder: 7 x 1/2 = 3.5 each, the tie goes to the task listed first; 10 x (1/3, 2/3) = 3.33, 6.67
    assert mixture_counts({"a": 50, "b": 50}, {"a": 1, "b": 1}, 7) == {"a": 4, "b": 3}
    assert mixture_counts({"a": 50, "b": 50}, {"a": 1, "b": 2}, 10) == {"a": 3, "b": 7}
    # more than a pool holds: allowed when asked for explicitly
    assert mixture_counts({"a": 2, "b": 50}, {"a": 1, "b": 1}, 10) == {"a": 5, "b": 5}
    with pytest.raises(ValueError, match="positive"):
        mixture_counts({"a": 2, "b": 5}, {"a": 0, "b": 1})
    with pytest.raises(ValueError, match="no training examples"):
        mixture_counts({"a": 0, "b": 5}, {"a": 1, "b": 1})


def test_draws_follow_the_weights_and_the_seed():
    pools = {"a": [f"a{i}" for i in range(10)], "b": [f"b{i}" for i in range(100)]}
    d = draw_mixture(pools, {"a": 1, "b": 3}, seed=0)
    assert len(d["a"]) == 10 and len(d["b"]) == 30
    assert sorted(d["a"]) == sorted(pools["a"]) and len(set(d["b"])) == 30  # no example drawn twice
    assert draw_mixture(pools, {"a": 1, "b": 3}, seed=0) == d  # seeded
    other = draw_mixture(pools, {"a": 1, "b": 3}, seed=1)
    assert other["b"] != d["b"] and other["a"] != d["a"]
    # a task's draw does not depend on the other tasks
    assert draw_mixture({"b": pools["b"], "c": list(range(30))}, {"b": 1, "c": 1}, seed=0)["b"] == d["b"]
    # a share beyond the pool: whole permutations, then a cut one
    seven = draw(["x", "y", "z"], 7, seed=3)
    assert sorted(seven[:3]) == sorted(seven[3:6]) == ["x", "y", "z"]
    assert sorted(Counter(seven).values()) == [2, 2, 3]


# ---------------------------------------------------------------- a jointly trained model

@pytest.fixture(scope="module")
def joint_model(tmp_path_factory, tokenizer, tiny_model_dir, tiny_hpo_knowledge):
    from synthdx.synth.radiology_reports import RadiologyReportGenerator
    from synthdx.tasks.multilabel import radiology_task
    from synthdx.tasks.rare_ddx import rare_ddx_task
    from synthdx.train.sft import TrainConfig, fit

    rad = radiology_task(64)
    ddx = rare_ddx_task(tiny_hpo_knowledge, max_text_tokens=64)
    rad_records = RadiologyReportGenerator(seed=5).generate(6)
    ddx_records = [Record(f"p{i}", f"A {i}-year-old girl presents with seizures.", [d])
                   for i, d in enumerate(["OMIM:1", "OMIM:2", "OMIM:1"])]
    drawn = draw_mixture({"radiology": rad_records, "rare-ddx": ddx_records}, {"radiology": 1, "rare-ddx": 1})
    assert {k: len(v) for k, v in drawn.items()} == {"radiology": 3, "rare-ddx": 3}
    examples = ([rad.build_example(tokenizer, r) for r in drawn["radiology"]]
                + [ddx.build_example(tokenizer, r) for r in drawn["rare-ddx"]])
    spec = multi_task_spec({"radiology": rad.spec(), "rare-ddx": ddx.spec()}, {"radiology": 1, "rare-ddx": 1},
                           {"radiology": 3, "rare-ddx": 3})
    out = tmp_path_factory.mktemp("joint")
    stats = fit(examples, tokenizer, spec, out, TrainConfig(model=str(tiny_model_dir), method="full", max_steps=2,
                                                           batch_size=3, save_every=0))
    assert stats["examples"] == 6
    return out / "model"


def test_joint_spec_round_trips(joint_model, tiny_hpo_knowledge):
    from synthdx.tasks.multilabel import MultiLabelTask
    from synthdx.tasks.rare_ddx import DiseaseRankingTask
    from synthdx.train.sft import load_trained_task, read_task_spec

    spec = json.loads((joint_model / "synthdx_task.json").read_text())
    assert spec["kind"] == "multi-task" and set(spec["tasks"]) == {"radiology", "rare-ddx"}
    assert spec["mixture"] == {"weights": {"radiology": 0.5, "rare-ddx": 0.5},
                               "examples": {"radiology": 3, "rare-ddx": 3}}
    rad = load_trained_task(joint_model, task="radiology")
    assert isinstance(rad, MultiLabelTask) and rad.name == "radiology" and len(rad.label_space.names) == 14
    assert rad.max_text_tokens == 64
    ddx = load_trained_task(joint_model, tiny_hpo_knowledge, task="rare-ddx")
    assert isinstance(ddx, DiseaseRankingTask) and set(ddx.names) == {"OMIM:1", "OMIM:2"}
    assert read_task_spec(joint_model, "rare-ddx")["kind"] == "disease-ranking"
    with pytest.raises(SynthdxError, match="name one with --task"):
        load_trained_task(joint_model)
    with pytest.raises(SynthdxError, match="not 'specialty'"):
        load_trained_task(joint_model, task="specialty")


def test_joint_model_predicts_both_tasks(joint_model, tmp_path, hpo):
    from test_rare_ddx_model import _packet_zip
    from typer.testing import CliRunner

    from synthdx.cli import app
    from synthdx.synth.radiology_reports import RadiologyReportGenerator
    from synthdx.tasks.radiology import RADIOLOGY_LABELS

    runner = CliRunner()
    reports = tmp_path / "reports.jsonl"
    write_jsonl(reports, ({"id": f"r{i}", "text": r.text} for i, r in enumerate(RadiologyReportGenerator(seed=9)
                                                                                 .generate(4))))
    out = tmp_path / "labels.jsonl"
    res = runner.invoke(app, ["predict", "--model", str(joint_model), "--task", "radiology", "--input", str(reports),
                              "--output", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["r0", "r1", "r2", "r3"]
    assert all(set(r["labels"]) <= set(RADIOLOGY_LABELS.names) and set(r["scores"]) == set(RADIOLOGY_LABELS.names)
               for r in rows)
    ranked = tmp_path / "ranked.jsonl"
    res = runner.invoke(app, ["predict", "--model", str(joint_model), "--task", "rare-ddx",
                              "--input", str(_packet_zip(tmp_path)), "--output", str(ranked)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in ranked.read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["ranking"]) >= 10 and all(e["id"] in hpo.diseases for e in r["ranking"])
                                  for r in rows)
    # without --task a joint model is ambiguous: refused, naming the tasks
    res = runner.invoke(app, ["predict", "--model", str(joint_model), "--input", str(reports),
                              "--output", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2 and "radiology, rare-ddx" in res.output


# ---------------------------------------------------------------- the experiment end to end

def test_mixture_experiment_end_to_end(tmp_path, tiny_model_dir, hpo):
    from test_rare_ddx_model import _packet_zip

    from synthdx.experiments.mixture import run_mixture
    from synthdx.synth.radiology_reports import RadiologyReportGenerator

    reports = tmp_path / "reports.jsonl"
    write_jsonl(reports, ({"id": f"real-{i}", "text": r.text, "labels": r.labels}
                          for i, r in enumerate(RadiologyReportGenerator(seed=123).generate(40))))
    cfg = load_config(CPU_CONFIG, [
        f"tasks.0.data.path={reports}", "tasks.0.data.loader=jsonl", "tasks.0.data.test_fraction=0.3",
        "tasks.0.data.max_train_pool=null", "tasks.0.synthetic.n=4", "tasks.0.eval.n_resamples=100",
        "tasks.0.eval.free_generation_sample=2", "tasks.0.weight=2",
        f"tasks.1.data.path={_packet_zip(tmp_path)}", "tasks.1.synthetic.n_diseases=6",
        "tasks.1.synthetic.validation_patients=10", "tasks.1.eval.n_resamples=100", "tasks.1.weight=1",
        f"train.model={tiny_model_dir}", "train.max_steps=null", "train.batch_size=8", "train.save_every=0"])
    out = tmp_path / "run"
    result = run_mixture(cfg, out)

    mix = json.loads((out / "data" / "mixture.json").read_text())
    n_rad_pool, n_ddx_pool = mix["tasks"]["radiology"]["pool"], mix["tasks"]["rare-ddx"]["pool"]
    assert n_ddx_pool == 6
    # weights 2:1 and no repeats: the rare-ddx pool (6) at 1/3 allows 18 in all, unless radiology's pool is smaller
    total = min(3 * n_ddx_pool, (3 * n_rad_pool) // 2)
    assert mix["tasks"]["radiology"]["drawn"] + mix["tasks"]["rare-ddx"]["drawn"] == total
    assert mix["tasks"]["radiology"]["drawn"] == round(total * 2 / 3)
    assert all(t["max_repeats"] == 1 for t in mix["tasks"].values())

    joint_spec = json.loads((out / "joint" / "model" / "synthdx_task.json").read_text())
    assert joint_spec["kind"] == "multi-task" and joint_spec["train_stats"]["examples"] == total
    assert joint_spec["tasks"]["rare-ddx"]["rerank"]["top_k"] == 10
    joint_steps = joint_spec["train_stats"]["steps"]
    assert joint_steps == -(-total // 8)  # one epoch of the joint examples
    for task in ("radiology", "rare-ddx"):
        spec = json.loads((out / "alone" / task / "model" / "synthdx_task.json").read_text())
        assert spec["task"] == task and spec["train_stats"]["examples"] == mix["tasks"][task]["drawn"]
        # mixture.alone_steps: joint (the default): alone trains as many steps, over fewer examples
        assert spec["train_stats"]["steps"] == joint_steps

    metrics = json.loads((out / "metrics.json").read_text())["systems"]
    rad, ddx = metrics["tasks"]["radiology"], metrics["tasks"]["rare-ddx"]
    joint, alone = "joint (radiology + rare-ddx)", "alone"
    assert {joint, alone, "rule teacher (reference)"} <= set(rad["systems"])
    assert rad["systems"][joint]["n"] == rad["n_test"] == len(json.loads(
        (out / "tasks" / "radiology" / "data" / "split.json").read_text())["test"])
    assert 0 <= rad["systems"][joint]["micro"]["f1"] <= 1 and len(rad["systems"][alone]["micro"]["f1_ci"]) == 2
    assert rad["paired"][0]["system_a"] == joint and rad["paired"][0]["system_b"] == alone
    assert 0 < rad["paired"][0]["micro_f1"]["p_value"] <= 1 and len(rad["paired"][0]["per_label"]) == 14
    assert ddx["n_test"] == 3 and any(name.startswith(joint) for name in ddx["systems"])
    # every system also with the case's own publication left out of the ranker's knowledge
    left_out = [n for n in ddx["systems"] if n.endswith(", own publication left out")]
    assert len(left_out) == 5 and all(ddx["systems"][n]["all"]["n"] == 3 for n in left_out)
    assert [c["mode"] for c in ddx["paired"]] == ["model alone", "model + ranker"]
    assert all(c["mcnemar"]["n"] == 3 and 0 < c["top1"]["p_value"] <= 1 for c in ddx["paired"])
    summary = {(r["task"], r["metric"]): r for r in metrics["summary"]}
    assert set(summary) == {("radiology", "micro-F1"), ("radiology", "macro-F1"),
                            ("rare-ddx", "top-1, model alone"), ("rare-ddx", "top-1, model + ranker")}
    row = summary[("radiology", "micro-F1")]
    assert row["diff"]["diff"] == pytest.approx(row["joint"]["value"] - row["alone"]["value"])
    assert result["summary"] == metrics["summary"]
    report = (out / "report.md").read_text()
    for heading in ("Joint vs alone, per task", "The mixture", "Training", "Radiology:", "Rare-ddx:",
                    "Paired comparisons"):
        assert heading in report
    assert "% of 1,000 resamples of the validation patients)" in report  # how firm each fusion weight is
    assert (out / "report.html").exists()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["seeds"]["mixture"] == 0 and "radiology alone" in prov["models"]
    assert len((out / "predictions" / "radiology" / "joint.jsonl").read_text().splitlines()) == rad["n_test"]
    # a rerun reuses every stage (models, predictions, scores) and gives the same numbers
    again = run_mixture(cfg, out)
    assert again["summary"] == result["summary"]
