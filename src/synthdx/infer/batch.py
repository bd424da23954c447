"""`synthdx predict`: a file in, one JSONL row per input row out.

The whole input is read and validated before any model work (a bad row fails fast, naming its
file and line). Results are appended to `OUTPUT.partial` batch by batch; an interrupted run
resumes after the rows already there; the finished file is renamed into place at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..datasets import ColumnMap, load_records
from ..errors import SynthdxError
from ..io import read_jsonl
from ..progress import console, make_progress
from ..tasks.multilabel import get_task
from ..train.sft import load_trained_task
from .predict import predict_label_sets


def _drop_torn_tail(path: Path) -> None:
    """A run killed mid-write can leave a half-written last line: cut it (it is predicted again)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def predict_file(model: str, input_path: Path, output: Path, task: str | None = None, batch_size: int = 32,
                 id_column: str = "id", text_column: str = "text") -> int:
    from ..models.loading import default_device, load_causal_lm, load_tokenizer, pick_dtype, resolve_model_path

    records = load_records(input_path, columns=ColumnMap(id=id_column, text=text_column, labels=None))
    model_path = resolve_model_path(model)
    spec = load_trained_task(model_path)
    if task is not None:
        spec_task = get_task(task)
        if spec is not None and spec.name != spec_task.name:
            raise SynthdxError(f"{model} was trained for task {spec.name!r}, not {task!r}")
        spec = spec or spec_task
    if spec is None:
        raise SynthdxError(f"{model} is not a synthdx-trained model: name the task with --task")

    partial = output.with_name(output.name + ".partial")
    done: set[str] = set()
    if partial.exists():
        _drop_torn_tail(partial)
        done = {str(row["id"]) for _, row in read_jsonl(partial)}
        console.print(f"resuming: {len(done)} rows already in {partial}")
    todo = [r for r in records if r.id not in done]

    device = default_device()
    dtype = pick_dtype(device)
    tok = load_tokenizer(model_path)
    lm = load_causal_lm(model_path, device=device)
    chunk = batch_size * 4  # sorted by length within a chunk, written when the chunk is done
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "a", encoding="utf-8") as f, make_progress() as bar:
        t = bar.add_task("predicting", total=len(records), completed=len(done), info="")
        for c in range(0, len(todo), chunk):
            part = todo[c:c + chunk]
            preds = predict_label_sets(lm, tok, spec, [r.text for r in part], batch_size=batch_size,
                                       autocast_dtype=dtype if dtype != torch.float32 else None)
            for r, p in zip(part, preds):
                row = {"id": r.id, "labels": p.labels, "scores": p.scores}
                if p.truncated:
                    row["truncated"] = True
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            bar.advance(t, len(part))
    # restore input order in the final file
    rows = {str(row["id"]): row for _, row in read_jsonl(partial)}
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(rows[r.id], ensure_ascii=False) + "\n")
    os.replace(tmp, output)
    partial.unlink()
    n_trunc = sum(1 for r in rows.values() if r.get("truncated"))
    console.print(f"wrote {len(records)} predictions -> {output}"
                  + (f" ({n_trunc} texts were longer than {spec.max_text_tokens} tokens and were cut)" if n_trunc else ""))
    return len(records)
