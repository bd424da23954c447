"""`synthdx predict`: a file in, one JSONL row per input row out.

The whole input is read and validated before any model work (a bad row fails fast, naming its
file and line). Results are appended to `OUTPUT.partial` batch by batch; an interrupted run
resumes after the rows already there; the finished file is renamed into place at the end.

Under `torchrun` / `accelerate launch` (WORLD_SIZE > 1) the work is split over the processes: the
rows still to do are cut into the chunks a 1-process run would form and the chunks dealt out
round-robin (`distributed.shard`), each rank appends its rows to its own `OUTPUT.rank<R>.partial`,
and rank 0 merges every partial file into OUTPUT in input order, atomically. A rank forms exactly the
batches a 1-process run forms, so the output is bit-identical to one process's. Resume works across
process counts: rows already in any partial file are skipped, whoever wrote them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from .. import distributed
from ..datasets import ColumnMap, load_records
from ..errors import SynthdxError
from ..io import read_jsonl
from ..progress import console, make_progress
from ..tasks.multilabel import get_task
from ..train.sft import load_trained_task, read_task_spec
from .predict import predict_label_sets


def _drop_torn_tail(path: Path) -> None:
    """A run killed mid-write can leave a half-written last line: cut it (it is predicted again)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


class ResumableOutput:
    """Rows appended to `OUTPUT.partial` (fsync'd per call), ids already there skipped on a rerun,
    and the finished file written in input order and renamed into place.

    With several processes, part R (rank R > 0) appends to `OUTPUT.rank<R>.partial`; `scan` (rank 0,
    before anyone writes) repairs every partial file and returns the ids they hold, passed to every
    rank as `done`; `finish` (rank 0, once every rank is done) merges all partial files."""

    def __init__(self, output: Path, part: int = 0, done: set[str] | None = None):
        self.output = output
        self.partial = self.partial_path(output, part)
        self.done: set[str] = self.scan(output) if done is None else set(done)
        output.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.partial, "a", encoding="utf-8")

    @staticmethod
    def partial_path(output: Path, part: int = 0) -> Path:
        return output.with_name(output.name + (f".rank{part}.partial" if part else ".partial"))

    @staticmethod
    def partials(output: Path) -> list[Path]:
        """Every partial file of `output` (of any earlier process count), part 0 first."""
        if not output.parent.is_dir():
            return []
        pattern = re.compile(re.escape(output.name) + r"\.rank(\d+)\.partial")
        found = sorted((int(m.group(1)), p) for p in output.parent.iterdir()
                       if (m := pattern.fullmatch(p.name)) and p.is_file())
        first = ResumableOutput.partial_path(output)
        return ([first] if first.is_file() else []) + [p for _, p in found]

    @staticmethod
    def scan(output: Path) -> set[str]:
        """The ids already written (a torn last line, from a killed run, is cut: predicted again)."""
        done: set[str] = set()
        for path in ResumableOutput.partials(output):
            _drop_torn_tail(path)
            done |= {str(row["id"]) for _, row in read_jsonl(path)}
        if done:
            console.print(f"resuming: {len(done)} rows already in {output.name}'s partial file(s)")
        return done

    def write(self, rows: list[dict]) -> None:
        for row in rows:
            self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def finish(self, ids: list[str]) -> dict[str, dict]:
        """Write the output in the order of `ids` (from every partial file); returns the rows by id."""
        self._f.close()
        paths = self.partials(self.output)
        rows = {str(row["id"]): row for path in paths for _, row in read_jsonl(path)}
        missing = [i for i in ids if i not in rows]
        if missing:
            raise SynthdxError(f"{len(missing)} rows are missing from the partial files of {self.output} "
                               f"(first id: {missing[0]}); rerun to complete them")
        tmp = self.output.with_name(self.output.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for i in ids:
                f.write(json.dumps(rows[i], ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.output)
        for path in paths:
            path.unlink()
        return rows


def _open_output(output: Path) -> ResumableOutput:
    """One process: `ResumableOutput(output)`. Several: rank 0 repairs and reads every partial file
    before any rank writes, and every rank gets the ids already done and its own partial file."""
    if not distributed.active():
        return ResumableOutput(output)
    done = ResumableOutput.scan(output) if distributed.is_main() else None
    return ResumableOutput(output, part=distributed.rank(), done=distributed.broadcast(done))


def _finish_output(sink: ResumableOutput, ids: list[str]) -> dict[str, dict] | None:
    """Rank 0 (or the only process) merges once every rank has written its rows; the others get
    None. Every rank returns once the output is in place."""
    sink.close()
    distributed.barrier()
    rows = sink.finish(ids) if distributed.is_main() else None
    distributed.barrier()
    return rows


@contextlib.contextmanager
def _share_progress(what: str, total: int, done: int, mine: int):
    """One process: a bar over the whole file. Several: rank 0 shows its own share; the others none."""
    bar = make_progress()
    if distributed.active():
        bar.disable = not distributed.is_main()
        what, total, done = f"{what} (rank 0's share of {distributed.world_size()} processes)", mine, 0
    with bar:
        t = bar.add_task(what, total=total, completed=done, info="")
        yield lambda n: bar.advance(t, n)


def predict_file(model: str, input_path: Path, output: Path, task: str | None = None, batch_size: int = 32,
                 id_column: str = "id", text_column: str = "text") -> int:
    from ..models.inference import prepare_for_inference
    from ..models.loading import default_device, load_causal_lm, load_tokenizer, pick_dtype, resolve_model_path

    records = load_records(input_path, columns=ColumnMap(id=id_column, text=text_column, labels=None))
    model_path = resolve_model_path(model)
    spec = load_trained_task(model_path, task=task)  # a jointly trained model: the named task's spec
    if task is not None:
        spec_task = get_task(task)
        if spec is not None and spec.name != spec_task.name:
            raise SynthdxError(f"{model} was trained for task {spec.name!r}, not {task!r}")
        spec = spec or spec_task
    if spec is None:
        raise SynthdxError(f"{model} is not a synthdx-trained model: name the task with --task")

    distributed.init()  # under torchrun: join the group; each rank's GPU is cuda:LOCAL_RANK
    device = default_device()
    tok = load_tokenizer(model_path)
    lm = load_causal_lm(model_path, device=device)
    autocast_dtype = prepare_for_inference(lm, pick_dtype(device))
    sink = _open_output(output)  # opened once the model loads: a failed load leaves no file
    todo = [r for r in records if r.id not in sink.done]
    chunk = batch_size * 4  # sorted by length within a chunk, written when the chunk is done
    mine = distributed.shard(todo, block=chunk)  # whole chunks: the batches of a 1-process run
    with _share_progress("predicting", len(records), len(sink.done), len(mine)) as advance:
        for c in range(0, len(mine), chunk):
            part = mine[c:c + chunk]
            preds = predict_label_sets(lm, tok, spec, [r.text for r in part], batch_size=batch_size,
                                       autocast_dtype=autocast_dtype)
            rows = [{"id": r.id, "labels": p.labels, "scores": p.scores, **({"truncated": True} if p.truncated else {})}
                    for r, p in zip(part, preds)]
            sink.write(rows)
            advance(len(part))
    rows = _finish_output(sink, [r.id for r in records])
    if rows is None:  # another rank than 0: rank 0 wrote the output and reports
        return len(records)
    n_trunc = sum(1 for r in rows.values() if r.get("truncated"))
    console.print(f"wrote {len(records)} predictions -> {output}"
                  + (f" ({n_trunc} texts were longer than {spec.max_text_tokens} tokens and were cut)" if n_trunc else ""))
    return len(records)


def is_ranking_model(model: str) -> bool:
    """Whether `model` is a synthdx model trained for disease ranking (rare-ddx)."""
    from ..models.loading import resolve_model_path
    from ..train.sft import TASK_FILE

    try:
        spec_path = Path(resolve_model_path(model)) / TASK_FILE
    except SynthdxError:
        return False
    return spec_path.exists() and json.loads(spec_path.read_text()).get("kind") == "disease-ranking"


def _load_cases(path: Path) -> list:
    """Phenopackets (zip, directory, JSON, JSONL), or JSONL rows written by `synthdx synth
    --generator hpo-patients` (rows with a "patient")."""
    from ..datasets.phenopackets import load_phenopackets
    from ..patients import Case

    if path.suffix.lower() in (".jsonl", ".ndjson") and path.exists():
        rows = read_jsonl(path)
        first = next(rows, None)
        rows.close()
        if first is not None and isinstance(first[1], dict) and "patient" in first[1]:
            out = []
            for line, row in read_jsonl(path):
                try:
                    out.append(Case.from_dict(row))
                except (KeyError, TypeError, ValueError) as e:
                    raise SynthdxError(f"{path}, line {line}: not a case row ({e})") from None
            return out
    return load_phenopackets(path)


def rank_file(model: str, input_path: Path, output: Path, top_k: int | None = None,
              weight: float | None = None, chunk: int = 16) -> int:
    """`synthdx predict --task rare-ddx`: phenopackets (zip, directory or JSONL) in, one row
    {"id", "ranking": [{"id", "label", "score"}, ...]} per case out, best first, every id a
    candidate disease. The knowledge ranker retrieves each case's top K; the model reranks them,
    fused with the ranker's scores by the weight the experiment chose (both recorded with the
    model; `top_k` / `weight` override them; weight None ranks by the model alone).
    Only the phenotype is read from each case, never its genetic interpretation or diagnosis."""
    import numpy as np

    from ..baselines.phenotype_ranker import PhenotypeRanker
    from ..knowledge.hpo import load_hpo
    from ..models.inference import prepare_for_inference
    from ..models.loading import default_device, load_causal_lm, load_tokenizer, pick_dtype, resolve_model_path
    from ..tasks.rare_ddx import rare_ddx_task
    from ..tasks.rare_ddx_render import render_summary
    from .rerank import fuse, ranking_entries, score_names

    cases = _load_cases(input_path)
    ids = [c.id for c in cases]
    dup = len(ids) - len(set(ids))
    if dup:
        raise SynthdxError(f"{input_path}: {dup} case ids occur more than once; ids must be unique")
    model_path = resolve_model_path(model)
    knowledge = load_hpo()
    trained = load_trained_task(model_path, knowledge, task="rare-ddx")
    if trained is not None and trained.name != "rare-ddx":
        raise SynthdxError(f"{model} was trained for task {trained.name!r}, not 'rare-ddx'")
    task = trained or rare_ddx_task(knowledge)
    settings = (read_task_spec(model_path, "rare-ddx") or {}).get("rerank", {})
    k = top_k or settings.get("top_k", 10)
    if k < 10:
        raise SynthdxError("top_k must be at least 10 (every ranking holds at least 10 diseases)")
    w = weight if weight is not None else settings.get("weight")
    w = float("inf") if w is None else float(w)
    # the ranker the fusion weight was chosen with (older models: the uniform prior)
    ranker = PhenotypeRanker(knowledge, candidate_ids=list(task.names),
                             prior=settings.get("prior", "uniform")).fit()

    distributed.init()
    tok = load_tokenizer(model_path)
    device = default_device()
    lm = load_causal_lm(model_path, device=device)
    autocast_dtype = prepare_for_inference(lm, pick_dtype(device))
    sink = _open_output(output)
    todo = [c for c in cases if c.id not in sink.done]
    mine = distributed.shard(todo, block=chunk)  # whole chunks, as in one process
    with _share_progress("ranking", len(cases), len(sink.done), len(mine)) as advance:
        for c0 in range(0, len(mine), chunk):
            part = mine[c0:c0 + chunk]
            tops = [ranker.rank(c.patient, k) for c in part]
            texts = [render_summary(c.patient, knowledge, seed=0) for c in part]
            scores, truncated = score_names(lm, tok, task, texts, [[d for d, _, _ in top] for top in tops],
                                            autocast_dtype=autocast_dtype)
            rows = []
            for case, top, ms, cut in zip(part, tops, scores, truncated):
                fused = fuse(np.array([s for _, _, s in top]), ms, w)
                row = {"id": case.id, "ranking": ranking_entries([d for d, _, _ in top], fused, task.names)}
                if cut:
                    row["truncated"] = True
                rows.append(row)
            sink.write(rows)
            advance(len(part))
    if _finish_output(sink, ids) is None:
        return len(cases)
    console.print(f"wrote {len(cases)} rankings ({k} diseases each) -> {output}")
    return len(cases)
