"""Experiment configs (strict keys, `--set` overrides with type coercion) and the `synthdx` CLI verbs
(help, label, predict, run's config errors) through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from synthdx.cli import QUICKSTART_CONFIG, app
from synthdx.config import ExperimentConfig, load_config, parse_overrides
from synthdx.errors import ConfigError
from synthdx.tasks.multilabel import get_task

BASE_YAML = """\
experiment: radiology
title: "A test run"
data:
  path: data/reports.csv
  test_fraction: 0.3
train:
  method: lora
  batch_size: 8
  lora_layers: 4
"""


@pytest.fixture()
def config_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(BASE_YAML, encoding="utf-8")
    return path


def _flat(text: str) -> str:
    """Rich wraps long lines (and long paths) to the terminal width: compare without whitespace."""
    return "".join(text.split())


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---- ExperimentConfig -----------------------------------------------------------------------------

def test_unknown_keys_are_rejected_by_name():
    with pytest.raises(ValidationError, match="bogus"):
        ExperimentConfig.model_validate({"data": {"path": "x.csv"}, "bogus": 1})
    with pytest.raises(ValidationError, match="lerning_rate"):
        ExperimentConfig.model_validate({"data": {"path": "x.csv"}, "train": {"lerning_rate": 0.1}})


def test_load_config_names_the_bad_key_and_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(BASE_YAML + "  lerning_rate: 0.001\nevals:\n  zero_shot: false\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "train.lerning_rate" in message and "evals" in message
    assert "Extra inputs are not permitted" in message


def test_load_config_other_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    no_data = tmp_path / "no_data.yaml"
    no_data.write_text("experiment: radiology\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="data"):
        load_config(no_data)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("data: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad_yaml)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(not_mapping)


def test_quickstart_config_is_valid():
    cfg = load_config(QUICKSTART_CONFIG)
    assert cfg.experiment == "radiology" and cfg.train.model == "smollm2-135m"
    assert cfg.data.loader == "iu-xray" and cfg.teacher.kind == "rules"
    # every system the issue asks for is on
    assert cfg.eval.tfidf_baseline and cfg.eval.zero_shot and cfg.synthetic.n > 0


@pytest.mark.parametrize("name", ["radiology.yaml", "radiology-synthetic-only.yaml", "curve-radiology.yaml"])
def test_shipped_radiology_configs_share_the_test_part(name):
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / name)
    quick = load_config(QUICKSTART_CONFIG)
    assert (cfg.data.test_fraction, cfg.data.near_duplicate) == (quick.data.test_fraction, quick.data.near_duplicate)


def test_every_shipped_config_is_valid():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "configs"
    kinds = {load_config(path).__class__.__name__ for path in sorted(folder.glob("*.yaml"))}
    assert kinds == {"ExperimentConfig", "RareDdxConfig", "CurveConfig", "MixtureConfig"}


# ---- --set overrides ------------------------------------------------------------------------------

def test_parse_overrides_builds_nested_values():
    assert parse_overrides(["train.epochs=2", "train.precision=fp32", "eval.zero_shot=false", "title=x=y"]) == {
        "train": {"epochs": 2, "precision": "fp32"}, "eval": {"zero_shot": False}, "title": "x=y"}
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_overrides(["train.epochs"])


def test_overrides_are_coerced_and_merged(config_file):
    cfg = load_config(config_file, ["train.epochs=2", "train.max_steps=50", "eval.zero_shot=false",
                                    "data.test_fraction=0.25", "train.lora_layers=null", "title=Another run",
                                    "train.learning_rate=1e-3", "synthetic.n=10"])
    assert cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float)
    assert cfg.train.max_steps == 50 and isinstance(cfg.train.max_steps, int)
    assert cfg.eval.zero_shot is False
    assert cfg.data.test_fraction == 0.25
    assert cfg.train.lora_layers is None
    assert cfg.title == "Another run"
    assert cfg.train.learning_rate == pytest.approx(1e-3)
    assert cfg.synthetic.n == 10
    # keys the overrides do not name keep their file (or default) values
    assert cfg.train.batch_size == 8 and cfg.train.method == "lora"
    assert cfg.data.path.endswith("reports.csv")
    assert cfg.eval.tfidf_baseline is True


@pytest.mark.parametrize("override, key", [
    ("train.method=qlora", "train.method"),
    ("train.epochs=abc", "train.epochs"),
    ("data.test_fraction=1.5", "data.test_fraction"),
    ("train.lerning_rate=0.1", "train.lerning_rate"),
    ("eval.zero_shot=maybe", "eval.zero_shot"),
])
def test_bad_overrides_name_the_key(config_file, override, key):
    with pytest.raises(ConfigError) as err:
        load_config(config_file, [override])
    assert key in str(err.value)


# ---- the CLI --------------------------------------------------------------------------------------

runner = CliRunner()


def test_help_lists_the_verbs():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for verb in ("run", "quickstart", "label", "synth", "predict", "eval"):
        assert verb in result.output
    result = runner.invoke(app, ["predict", "--help"])
    assert result.exit_code == 0
    for option in ("--model", "--input", "--output", "--task", "--batch-size", "--text-column"):
        assert option in result.output


def test_run_with_a_bad_override_fails_cleanly(tmp_path, config_file):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(config_file), "--out", str(out), "--set", "train.lerning_rate=0.1"])
    assert result.exit_code == 2
    assert "error:" in result.output and "train.lerning_rate" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_label_csv_with_column_options(tmp_path):
    src = tmp_path / "reports.csv"
    src.write_text('uid,findings\nc1,Mild cardiomegaly. No pleural effusion.\n'
                   'c2,"Heart size normal. Lungs clear."\n'
                   'c3,"Small right pleural effusion. Right IJ catheter in place."\n', encoding="utf-8")
    out = tmp_path / "labels.jsonl"
    result = runner.invoke(app, ["label", "-i", str(src), "-o", str(out), "--text-column", "findings",
                                 "--id-column", "uid"])
    assert result.exit_code == 0, result.output
    assert _read(out) == [
        {"id": "c1", "labels": ["Cardiomegaly"]},
        {"id": "c2", "labels": ["No Finding"]},
        {"id": "c3", "labels": ["Pleural Effusion", "Support Devices"]},
    ]
    assert "labelled 3 records" in result.output


def test_label_jsonl_uncertain_ignore(tmp_path):
    src = tmp_path / "reports.jsonl"
    src.write_text(json.dumps({"id": "j1", "text": "Cannot exclude pneumonia."}) + "\n"
                   + json.dumps({"id": "j2", "text": "Mild cardiomegaly."}) + "\n", encoding="utf-8")
    out = tmp_path / "labels.jsonl"
    result = runner.invoke(app, ["label", "-i", str(src), "-o", str(out), "--uncertain", "ignore"])
    assert result.exit_code == 0, result.output
    assert _read(out) == [
        {"id": "j1", "labels": [], "masked_labels": ["No Finding", "Pneumonia"]},
        {"id": "j2", "labels": ["Cardiomegaly"], "masked_labels": []},
    ]


def test_label_errors(tmp_path):
    src = tmp_path / "reports.jsonl"
    src.write_text(json.dumps({"id": "j1", "report": "x"}) + "\n", encoding="utf-8")
    out = tmp_path / "labels.jsonl"
    result = runner.invoke(app, ["label", "-i", str(src), "-o", str(out), "--uncertain", "maybe"])
    assert result.exit_code == 2 and "--uncertain" in result.output
    result = runner.invoke(app, ["label", "-i", str(src), "-o", str(out)])
    assert result.exit_code == 2
    assert _flat(f"{src}, line 1, field 'text'") in _flat(result.output)
    assert not out.exists()


def test_predict_end_to_end(tmp_path, tiny_model_dir):
    src = tmp_path / "unseen.csv"
    src.write_text("report_id,body\n"
                   "u1,Mild cardiomegaly.\n"
                   'u2,"Left lower lobe opacity, possibly pneumonia."\n'
                   "u3,Normal chest.\n", encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    result = runner.invoke(app, ["predict", "--model", str(tiny_model_dir), "--task", "radiology",
                                 "-i", str(src), "-o", str(out), "--batch-size", "2",
                                 "--id-column", "report_id", "--text-column", "body"])
    assert result.exit_code == 0, result.output
    rows = _read(out)
    names = get_task("radiology").label_space.names
    assert [r["id"] for r in rows] == ["u1", "u2", "u3"]
    for r in rows:
        assert set(r) == {"id", "labels", "scores"}
        assert set(r["labels"]) <= set(names) and set(r["scores"]) == set(names)
        assert r["labels"] == [n for n in names if n in set(r["labels"])]
    assert "wrote 3 predictions" in result.output


def test_predict_errors_are_one_clear_line(tmp_path, tiny_model_dir):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"id": "a", "text": "ok"}) + "\n" + json.dumps({"id": "b", "text": ""}) + "\n",
                   encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    result = runner.invoke(app, ["predict", "--model", str(tiny_model_dir), "--task", "radiology",
                                 "-i", str(src), "-o", str(out)])
    assert result.exit_code == 2
    assert _flat(f"error: {src}, line 2, field 'text': empty text") in _flat(result.output)
    assert "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "pred.jsonl.partial").exists()
    # a plain model needs --task
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"id": "a", "text": "ok"}) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["predict", "--model", str(tiny_model_dir), "-i", str(good), "-o", str(out)])
    assert result.exit_code == 2 and "--task" in result.output


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_eval_pairs_systems_and_guards_against_contamination(tmp_path):
    from synthdx.synth.radiology_reports import RadiologyReportGenerator

    records = RadiologyReportGenerator(seed=5).generate(60)
    gold = tmp_path / "gold.jsonl"
    _write_jsonl(gold, [{"id": f"g{i}", "text": r.text, "labels": r.labels} for i, r in enumerate(records)])
    _write_jsonl(tmp_path / "perfect.jsonl", [{"id": f"g{i}", "labels": r.labels} for i, r in enumerate(records)])
    _write_jsonl(tmp_path / "normal.jsonl", [{"id": f"g{i}", "labels": ["No Finding"]} for i in range(60)])
    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", str(tmp_path / "perfect.jsonl"), str(tmp_path / "normal.jsonl"),
                                 "--gold", str(gold), "--out", str(out), "--n-resamples", "200"])
    assert result.exit_code == 0, result.output
    paired = json.loads((out / "metrics.json").read_text())["evidence"]["paired"]
    assert paired[0]["system_a"] == "perfect" and paired[0]["micro_f1"]["diff"] > 0
    assert paired[0]["micro_f1"]["p_value"] < 0.01 and "Paired comparisons" in (out / "report.html").read_text()
    # training records that copy five of the test records: refused, naming ids, never text
    train = tmp_path / "train.jsonl"
    _write_jsonl(train, [{"id": f"t{i}", "text": records[i].text.upper(), "labels": []} for i in range(5)]
                 + [{"id": "t-other", "text": "Completely different words about a knee.", "labels": []}])
    result = runner.invoke(app, ["eval", str(tmp_path / "perfect.jsonl"), "--gold", str(gold), "--out",
                                 str(tmp_path / "eval2"), "--train", str(train)])
    assert result.exit_code == 2
    flat = _flat(result.output)
    assert "appearinthetrainingdata" in flat and "'t0'" in flat and not (tmp_path / "eval2").exists()
