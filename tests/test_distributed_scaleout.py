"""Scale-out beyond training: `synthdx predict` (labels and rare-ddx rankings), `synth` and `label`
under `torchrun --nproc_per_node 2` (gloo, CPU) write the same file a 1-process run writes, byte for
byte; the shard helper deals every record to exactly one rank."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
from typer.testing import CliRunner

from synthdx import distributed
from synthdx.cli import app

needs_gloo = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with the gloo backend is not available")
runner = CliRunner()

TEXTS = ["Heart size is enlarged. Lungs are clear.", "Small left pleural effusion.",
         "No acute cardiopulmonary abnormality.", "Right lower lobe opacity concerning for pneumonia.",
         "Mild pulmonary edema and cardiomegaly.", "Calcified granuloma in the left upper lobe.",
         "Small right apical pneumothorax.", "Hyperinflated lungs consistent with emphysema.",
         "Old healed left rib fracture.", "Bibasilar atelectasis.", "Spiculated nodule. ET tube in place.",
         "Patchy consolidation at the left base.", "Normal chest.", "Stable mild cardiomegaly, no effusion.",
         "Possible right middle lobe pneumonia.", "Degenerative changes of the spine.",
         "Left basilar opacity, likely atelectasis.", "No pneumothorax or effusion.",
         "Sternotomy wires. Heart size normal.", "Low lung volumes.", "Clear lungs bilaterally."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], cwd: Path, nproc: int = 2, module: bool = True) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node N [-m] ARGS` on CPU (gloo on the loopback interface, 1 thread a rank)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "MASTER_ADDR": "127.0.0.1", "CUDA_VISIBLE_DEVICES": ""}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT"):
        env.pop(k, None)
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
              "--master_addr", "127.0.0.1", "--master_port", str(_free_port())] + (["-m"] if module else [])
    proc = subprocess.run(launch + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _ranks(monkeypatch, world: int):
    monkeypatch.setenv("WORLD_SIZE", str(world))
    for r in range(world):
        monkeypatch.setenv("RANK", str(r))
        yield r


@pytest.mark.parametrize("n", [0, 1, 7, 16, 33])
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("block", [1, 4])
def test_shard_deals_every_record_to_exactly_one_rank(monkeypatch, n, world, block):
    items = [f"r{i}" for i in range(n)]
    shares = {r: distributed.shard(items, block) for r in _ranks(monkeypatch, world)}
    dealt = [x for share in shares.values() for x in share]
    assert sorted(dealt) == sorted(items) and len(dealt) == n  # each once
    sizes = [len(s) for s in shares.values()]
    assert max(sizes) - min(sizes) <= block  # balanced to within one block
    for r, share in shares.items():  # whole blocks, in order: block b goes to rank b % world
        assert share == [x for i, x in enumerate(items) if (i // block) % world == r]
    if world == 2 and block == 1:
        assert shares[1] == items[1::2]


def test_one_process_is_a_no_op(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert not distributed.active() and distributed.is_main() and distributed.world_size() == 1
    assert distributed.shard([1, 2, 3]) == [1, 2, 3] and distributed.gather_ordered(3, [1, 2, 3]) == [1, 2, 3]
    assert distributed.broadcast("x") == "x" and distributed.lead(lambda: 5) == 5
    assert distributed.on_all_ranks(lambda a, b=0: a + b, 1, b=2) == 3
    distributed.barrier()


def _write_inputs(tmp_path: Path) -> Path:
    src = tmp_path / "reports.jsonl"
    src.write_text("".join(json.dumps({"id": f"u{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)),
                   encoding="utf-8")
    return src


@needs_gloo
def test_predict_two_processes_write_the_one_process_file(tmp_path, tiny_model_dir):
    src = _write_inputs(tmp_path)
    one = tmp_path / "one.jsonl"
    common = ["--model", str(tiny_model_dir), "--task", "radiology", "-i", str(src), "--batch-size", "2"]
    res = runner.invoke(app, ["predict", *common, "-o", str(one)])
    assert res.exit_code == 0, res.output
    # 21 rows, chunks of 8: rank 0 predicts chunks 0 and 2, rank 1 chunk 1
    two = tmp_path / "two.jsonl"
    torchrun(["synthdx.cli", "predict", *common, "-o", str(two)], cwd=tmp_path)
    assert two.read_bytes() == one.read_bytes()
    assert len(two.read_text().splitlines()) == len(TEXTS)
    assert not list(tmp_path.glob("two.jsonl.*"))  # partial files merged and removed


@needs_gloo
@pytest.mark.slow  # ~40 s on 2 shared cores
def test_predict_resumes_across_process_counts(tmp_path, tiny_model_dir):
    src = _write_inputs(tmp_path)
    one = tmp_path / "one.jsonl"
    common = ["--model", str(tiny_model_dir), "--task", "radiology", "-i", str(src), "--batch-size", "2"]
    res = runner.invoke(app, ["predict", *common, "-o", str(one)])
    assert res.exit_code == 0, res.output
    # Resume across process counts: a 1-process run killed after 3 rows (the 4th torn) and a 2-process
    # run's rank-1 file with 2 more rows; the 2-process rerun predicts only the rest.
    again = tmp_path / "again.jsonl"
    lines = one.read_text().splitlines()
    (tmp_path / "again.jsonl.partial").write_text("\n".join(lines[:3]) + "\n" + lines[3][:15])
    (tmp_path / "again.jsonl.rank1.partial").write_text(lines[10] + "\n" + lines[11] + "\n")
    proc = torchrun(["synthdx.cli", "predict", *common, "-o", str(again)], cwd=tmp_path)
    assert "resuming: 5 rows" in proc.stdout + proc.stderr
    assert not list(tmp_path.glob("again.jsonl.*"))
    # The 16 rows left form other chunks (so other padded batches) than in the first run: the same
    # rows and labels, scores equal up to float rounding (as for a 1-process resume).
    want = [json.loads(line) for line in lines]
    got = [json.loads(line) for line in again.read_text().splitlines()]
    assert [r["id"] for r in got] == [r["id"] for r in want]
    for g, w in zip(got, want):
        assert g["labels"] == w["labels"]
        assert g["scores"] == pytest.approx(w["scores"], abs=1e-5)


RANK_SCRIPT = r'''
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from synthdx.infer.batch import rank_file
rank_file(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), chunk=2)
'''


PATIENTS = ["synth", "--generator", "hpo-patients", "-n", "3", "--seed", "4",
            "--diseases", "OMIM:154700,OMIM:101600,OMIM:219700"]


@needs_gloo
def test_synth_two_or_three_processes_write_the_one_process_file(tmp_path, hpo):
    # "-n", not "--n": torchrun's own parser would take "--n" for an abbreviation of its options
    res = runner.invoke(app, [*PATIENTS, "-o", str(tmp_path / "patients-one.jsonl")])
    assert res.exit_code == 0, res.output
    torchrun(["synthdx.cli", *PATIENTS, "-o", str(tmp_path / "patients-two.jsonl")], cwd=tmp_path)
    one = (tmp_path / "patients-one.jsonl").read_bytes()
    assert (tmp_path / "patients-two.jsonl").read_bytes() == one and len(one.splitlines()) == 9

    reports = ["synth", "--generator", "radiology-reports", "-n", "25", "--seed", "2"]
    res = runner.invoke(app, [*reports, "-o", str(tmp_path / "reports-one.jsonl")])
    assert res.exit_code == 0, res.output
    torchrun(["synthdx.cli", *reports, "-o", str(tmp_path / "reports-three.jsonl")], cwd=tmp_path, nproc=3)
    one = (tmp_path / "reports-one.jsonl").read_bytes()
    assert (tmp_path / "reports-three.jsonl").read_bytes() == one and len(one.splitlines()) == 25


@needs_gloo
@pytest.mark.slow  # ~2 min on 2 shared cores: every process loads the HPO and fits the ranker
def test_rank_two_processes_write_the_one_process_file(tmp_path, tiny_model_dir, hpo):
    patients = tmp_path / "patients.jsonl"
    res = runner.invoke(app, [*PATIENTS, "-o", str(patients)])
    assert res.exit_code == 0, res.output
    # 9 cases, chunks of 2: rank 0 ranks chunks 0, 2, 4 (5 cases), rank 1 chunks 1, 3 (4 cases)
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    res = subprocess.run([sys.executable, str(script), str(tiny_model_dir), str(patients),
                          str(tmp_path / "ranked-one.jsonl")], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    torchrun([str(script), str(tiny_model_dir), str(patients), str(tmp_path / "ranked-two.jsonl")],
             cwd=tmp_path, module=False)
    ranked = (tmp_path / "ranked-one.jsonl").read_bytes()
    assert (tmp_path / "ranked-two.jsonl").read_bytes() == ranked and len(ranked.splitlines()) == 9


@needs_gloo
@pytest.mark.slow  # ~55 s: every process loads medspaCy
def test_label_two_processes_write_the_one_process_file(tmp_path):
    src = _write_inputs(tmp_path)
    res = runner.invoke(app, ["label", "-i", str(src), "-o", str(tmp_path / "one.jsonl")])
    assert res.exit_code == 0, res.output
    torchrun(["synthdx.cli", "label", "-i", str(src), "-o", str(tmp_path / "two.jsonl")], cwd=tmp_path)
    one = (tmp_path / "one.jsonl").read_bytes()
    assert (tmp_path / "two.jsonl").read_bytes() == one and len(one.splitlines()) == len(TEXTS)
    assert any(json.loads(line)["labels"] for line in one.splitlines())


@needs_gloo
@pytest.mark.slow  # ~1-2 min on 2 shared cores
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_run_trains_on_every_rank_and_runs_the_other_stages_once(tmp_path, tiny_model_dir, parallel):
    """`synthdx run` under torchrun: rank 0 alone prepares data, predicts, evaluates and reports
    (each stage logged once); rank 1 joins the training (its log says so), replicated or sharded;
    the run is complete."""
    import yaml

    from synthdx.io import write_jsonl
    from synthdx.synth.radiology_reports import RadiologyReportGenerator

    data = tmp_path / "reports.jsonl"
    write_jsonl(data, ({"id": f"real-{i}", "text": r.text, "labels": r.labels}
                       for i, r in enumerate(RadiologyReportGenerator(seed=123).generate(60))))
    cfg = {"data": {"path": str(data), "loader": "jsonl", "test_fraction": 0.3, "validation_fraction": 0.25},
           "synthetic": {"n": 12, "seed": 0},
           "train": {"model": str(tiny_model_dir), "method": "full", "max_steps": 2, "batch_size": 4,
                     "save_every": 0, "precision": "fp32", "parallel": parallel},
           "eval": {"zero_shot": False, "free_generation_sample": 0, "n_resamples": 100, "error_examples": 0}}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    proc = torchrun(["synthdx.cli", "run", str(config), "--out", str(out), "-v"], cwd=tmp_path)
    logs = proc.stdout + proc.stderr
    assert "rank 1: running train for rank 0" in logs  # rank 1 took part in training, nothing else
    assert (out / "model" / "model.safetensors").is_file() and (out / "metrics.json").is_file()
    assert (out / "report.md").is_file() and (out / "predictions" / "student.jsonl").is_file()
    stages = [line.split("stage started: ", 1)[1] for line in (out / "run.log").read_text().splitlines()
              if "stage started: " in line]
    assert stages and len(stages) == len(set(stages))  # every stage ran once, not once per rank
    stats = json.loads((out / "metrics.json").read_text())
    assert stats  # written once, complete JSON
    trained = json.loads((out / "model" / "synthdx_task.json").read_text())["train_stats"]
    assert trained["processes"] == 2 and trained["parallel"] == parallel


@needs_gloo
@pytest.mark.slow  # ~1-2 min on 2 shared cores
def test_curve_trains_on_every_rank_and_runs_the_rest_once(tmp_path, tiny_model_dir):
    """`synthdx curve` under torchrun: rank 1 joins each model's training, rank 0 alone scores and
    reports, and the curve has its point."""
    import yaml

    from synthdx.io import write_jsonl
    from synthdx.synth.radiology_reports import RadiologyReportGenerator

    data = tmp_path / "reports.jsonl"
    write_jsonl(data, ({"id": f"real-{i}", "text": r.text, "labels": r.labels}
                       for i, r in enumerate(RadiologyReportGenerator(seed=7).generate(40))))
    cfg = {"experiment": "curve", "task": "radiology",
           "data": {"path": str(data), "loader": "jsonl", "test_fraction": 0.3},
           "sources": [{"name": "real", "kind": "real"}], "sizes": [8], "seeds": [0],
           "learners": [{"kind": "llm", "train": {"model": str(tiny_model_dir), "method": "full", "max_steps": 2,
                                                  "batch_size": 4, "save_every": 0, "precision": "fp32"}}],
           "eval": {"n_resamples": 100}}
    config = tmp_path / "curve.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "curve"
    proc = torchrun(["synthdx.cli", "curve", str(config), "--out", str(out), "-v"], cwd=tmp_path)
    assert "rank 1: running train for rank 0" in proc.stdout + proc.stderr
    points = json.loads((out / "metrics.json").read_text())["systems"]["curves"]["fine-tuned LLM"]["real"]
    assert [p["n"] for p in points] == [8] and points[0]["seeds"] == 1
    assert (out / "report.md").is_file()
