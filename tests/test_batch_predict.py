"""`predict_file`: a file of reports in, one JSONL row {id, labels, scores} per input row out; input
validated before any model work; resumable from OUTPUT.partial; long reports cut, not crashed."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import synthdx.infer.batch as batch_mod
from synthdx.errors import DataError, SynthdxError
from synthdx.infer.batch import predict_file
from synthdx.infer.predict import predict_label_sets
from synthdx.models.inference import prepare_for_inference
from synthdx.models.loading import pick_dtype
from synthdx.tasks.multilabel import get_task

REPORTS = [
    ("a1", "The heart is mildly enlarged. No focal consolidation. No pleural effusion."),
    ("a2", "Left basilar opacity, may represent atelectasis or pneumonia."),
    ("a3", "Normal chest radiograph."),
    ("a4", "Stable calcified granuloma. Lungs otherwise clear."),
    ("a5", "Right-sided chest tube. Small residual apical pneumothorax."),
    ("a6", "Hyperexpanded lungs. Chronic obstructive pulmonary disease."),
    ("a7", "Healing fracture of the left seventh rib."),
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _leftovers(out):
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name))


@pytest.fixture()
def reports(tmp_path):
    return _jsonl(tmp_path / "reports.jsonl", [{"id": i, "text": t} for i, t in REPORTS])


def test_one_valid_row_per_input_row(tmp_path, reports, tiny_model_dir, tiny_model, tokenizer, monkeypatch):
    monkeypatch.setattr("synthdx.models.loading.default_device", lambda: "cpu")  # compared with CPU below
    out = tmp_path / "out" / "pred.jsonl"
    # batch_size=1: chunks of 4 rows, so the 7 rows are written in two chunks
    assert predict_file(str(tiny_model_dir), reports, out, task="radiology", batch_size=1) == len(REPORTS)
    rows = _read(out)
    task = get_task("radiology")
    names = task.label_space.names
    assert [r["id"] for r in rows] == [i for i, _ in REPORTS]
    for r in rows:
        assert set(r) == {"id", "labels", "scores"}
        assert r["labels"] == [n for n in names if n in set(r["labels"])]
        assert set(r["scores"]) == set(names)
        assert all(0.0 <= s <= 1.0 for s in r["scores"].values())
        assert all(r["scores"][n] > 0 for n in r["labels"])
    assert _leftovers(out) == ["pred.jsonl"]  # no .partial or .tmp left behind
    # the same as predicting in memory, at the compute dtype predict_file picks for this machine
    # (bf16 autocast on a CPU with native bf16, fp32 elsewhere)
    dtype = pick_dtype("cpu")
    model = copy.deepcopy(tiny_model)
    direct = predict_label_sets(model, tokenizer, task, [t for _, t in REPORTS],
                                autocast_dtype=prepare_for_inference(model, dtype))
    for r, p in zip(rows, direct):
        assert r["labels"] == p.labels
        # bf16 keeps ~3 significant digits: batches of other sizes round differently
        assert r["scores"] == pytest.approx(p.scores, abs=1e-4 if dtype == torch.float32 else 3e-3)


# ---- bad input: a clear error naming the file (and line), before any model work, nothing written ----

def _bad_inputs(tmp_path):
    yield "empty-text", _jsonl(tmp_path / "empty.jsonl", [{"id": "x1", "text": "ok"}, {"id": "x2", "text": "  "}]), \
        ["line 2", "empty text"]
    csv = tmp_path / "no_text.csv"
    csv.write_text("id,report\nx1,Heart is normal.\n", encoding="utf-8")
    yield "csv-missing-text-column", csv, ["line 2", "'text'", "missing column"]
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes(json.dumps({"id": "x1", "text": "ok"}).encode() + b"\n"
                      + '{"id": "x2", "text": "\u00e9panchement pleural"}\n'.encode("latin-1"))
    yield "not-utf8", latin, ["UTF-8"]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "x1", "text": "ok"}\n\n{"id": "x2", "text": \n', encoding="utf-8")
    yield "bad-json", broken, ["line 3", "not valid JSON"]
    dup = _jsonl(tmp_path / "dup.jsonl", [{"id": "x1", "text": "a"}, {"id": "x1", "text": "b"}])
    yield "duplicate-id", dup, ["line 2", "duplicate id"]


BAD = ["empty-text", "csv-missing-text-column", "not-utf8", "bad-json", "duplicate-id"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_fails_fast_naming_the_file(tmp_path, tiny_model_dir, monkeypatch, case):
    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the input was validated")

    monkeypatch.setattr("synthdx.models.loading.load_causal_lm", no_model)
    name, path, expected = next((n, p, e) for n, p, e in _bad_inputs(tmp_path) if n == case)
    out = tmp_path / "pred.jsonl"
    with pytest.raises(DataError) as err:
        predict_file(str(tiny_model_dir), path, out, task="radiology")
    message = str(err.value)
    assert str(path) in message
    for piece in expected:
        assert piece in message, (piece, message)
    assert _leftovers(out) == []


def test_model_without_task_needs_task(tmp_path, reports, tiny_model_dir):
    out = tmp_path / "pred.jsonl"
    with pytest.raises(SynthdxError, match="--task"):
        predict_file(str(tiny_model_dir), reports, out)
    with pytest.raises(KeyError, match="unknown task"):
        predict_file(str(tiny_model_dir), reports, out, task="dermatology")
    assert _leftovers(out) == []


def test_missing_model_directory(tmp_path, reports):
    with pytest.raises(SynthdxError, match="not found"):
        predict_file(str(tmp_path / "nowhere"), reports, tmp_path / "pred.jsonl", task="radiology")


# ---- resume ---------------------------------------------------------------------------------------

class _Interrupt(Exception):
    pass


def test_resume_keeps_written_rows_and_predicts_only_the_rest(tmp_path, reports, tiny_model_dir, monkeypatch):
    full = tmp_path / "full.jsonl"
    predict_file(str(tiny_model_dir), reports, full, task="radiology", batch_size=1)

    real = batch_mod.predict_label_sets
    seen: list[str] = []

    def interrupted_after_first_chunk(model, tok, task, texts, **kw):
        if seen:
            raise _Interrupt
        seen.extend(texts)
        return real(model, tok, task, texts, **kw)

    out = tmp_path / "pred.jsonl"
    monkeypatch.setattr(batch_mod, "predict_label_sets", interrupted_after_first_chunk)
    with pytest.raises(_Interrupt):
        predict_file(str(tiny_model_dir), reports, out, task="radiology", batch_size=1)
    partial = tmp_path / "pred.jsonl.partial"
    assert not out.exists()
    assert [r["id"] for r in _read(partial)] == ["a1", "a2", "a3", "a4"]  # the first chunk of 4

    # mark a written row: a resumed run must keep it as it is, not predict it again
    rows = _read(partial)
    rows[1]["labels"], rows[1]["scores"]["Edema"] = ["Edema"], 0.99
    _jsonl(partial, rows)

    def counting(model, tok, task, texts, **kw):
        seen.extend(texts)
        return real(model, tok, task, texts, **kw)

    seen.clear()
    monkeypatch.setattr(batch_mod, "predict_label_sets", counting)
    assert predict_file(str(tiny_model_dir), reports, out, task="radiology", batch_size=1) == len(REPORTS)
    assert seen == [t for _, t in REPORTS[4:]]
    got, want = _read(out), _read(full)
    assert [r["id"] for r in got] == [i for i, _ in REPORTS]
    assert got[1] == rows[1]
    for g, w in zip(got[:1] + got[2:], want[:1] + want[2:]):
        assert g["id"] == w["id"] and g["labels"] == w["labels"]
        assert g["scores"] == pytest.approx(w["scores"], abs=1e-4)
    assert _leftovers(out) == ["pred.jsonl"]


def test_resume_after_a_half_written_last_line(tmp_path, reports, tiny_model_dir):
    """A run killed mid-write leaves a torn last line: it is dropped and that row predicted again."""
    out = tmp_path / "pred.jsonl"
    partial = tmp_path / "pred.jsonl.partial"
    first = json.dumps({"id": "a1", "labels": ["Cardiomegaly"], "scores": {}}) + "\n"
    partial.write_text(first + '{"id": "a2", "labels": ["Pneu', encoding="utf-8")
    assert predict_file(str(tiny_model_dir), reports, out, task="radiology", batch_size=2) == len(REPORTS)
    rows = _read(out)
    assert [r["id"] for r in rows] == [i for i, _ in REPORTS]
    assert rows[0] == json.loads(first)  # kept as written
    assert set(rows[1]) >= {"id", "labels", "scores"} and len(rows[1]["scores"]) == 14


# ---- long input -----------------------------------------------------------------------------------

def test_a_50000_word_report_is_cut_not_crashed(tmp_path, tiny_model_dir, capsys):
    words = ["heart", "size", "normal", "lungs", "clear", "no", "effusion", "stable"]
    long_text = " ".join(words[i % len(words)] for i in range(50_000))
    src = _jsonl(tmp_path / "long.jsonl", [{"id": "short", "text": REPORTS[0][1]}, {"id": "long", "text": long_text}])
    out = tmp_path / "pred.jsonl"
    assert predict_file(str(tiny_model_dir), src, out, task="radiology") == 2
    short, long_ = _read(out)
    assert "truncated" not in short
    assert long_["id"] == "long" and long_["truncated"] is True
    names = get_task("radiology").label_space.names
    assert set(long_["scores"]) == set(names)
    assert long_["labels"] == [n for n in names if n in set(long_["labels"])]
    err = " ".join(capsys.readouterr().err.split())
    assert "1 texts were longer than 320 tokens and were cut" in err
