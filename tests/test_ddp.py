"""Data-parallel training: the same `train()` under `torchrun --nproc_per_node 2` (gloo, CPU, loopback)
trains the same model on both ranks, and the same model as a 1-process run of the same script."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from radiology_texts import TEXTS
from safetensors.torch import load_file

from synthdx.tasks.multilabel import radiology_task

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with the gloo backend is not available")


# Trains the tiny model and, on every rank, saves the final in-memory weights (captured by wrapping
# build_model) and the returned stats. Without torchrun it is a plain 1-process run.
SCRIPT = r'''
import json, os, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from synthdx.records import Record
from synthdx.tasks.multilabel import radiology_task
from synthdx.train import sft

args = json.loads(Path(sys.argv[1]).read_text())
dump = Path(args["dump"])
built = []
real_build = sft.build_model
sft.build_model = lambda cfg, device: built.append(real_build(cfg, device)) or built[-1]
records = [Record(id=f"r{i}", text=t, labels=labels) for i, (t, labels) in enumerate(args["texts"])]
stats = sft.train(records, radiology_task(), args["out"], sft.TrainConfig(**args["cfg"]), device="cpu")
rank = int(os.environ.get("RANK", "0"))
torch.save({k: v.detach().clone() for k, v in built[0].state_dict().items()}, dump / f"rank{rank}.pt")
(dump / f"rank{rank}.json").write_text(json.dumps(stats))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path: Path, name: str, tiny_model_dir, nproc: int) -> Path:
    run = tmp_path / name
    dump = run / "dump"
    dump.mkdir(parents=True)
    cfg = dict(model=str(tiny_model_dir), method="full", max_steps=5, batch_size=4, learning_rate=1e-3,
               warmup_steps=1, precision="fp32", save_every=2, max_text_tokens=96, seed=3)
    (run / "args.json").write_text(json.dumps({"out": str(run / "out"), "dump": str(dump), "cfg": cfg,
                                               "texts": TEXTS}))
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "MASTER_ADDR": "127.0.0.1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(k, None)
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # keep gloo's traffic on the loopback interface
    launch = ([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port())] if nproc > 1 else [sys.executable])
    proc = subprocess.run(launch + [str(script), str(run / "args.json")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return run


def test_two_processes_train_the_same_model_as_one(tmp_path, tiny_model_dir):
    assert all(label in radiology_task().label_space.names for _, labels in TEXTS for label in labels)
    ddp = _run(tmp_path, "ddp", tiny_model_dir, nproc=2)
    single = _run(tmp_path, "single", tiny_model_dir, nproc=1)

    r0, r1 = (torch.load(ddp / "dump" / f"rank{r}.pt") for r in (0, 1))
    assert set(r0) == set(r1)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k  # DDP: identical gradients, so identical weights on every rank
    assert (ddp / "out" / "model" / "model.safetensors").is_file()  # rank 0 wrote the model
    assert not (ddp / "out" / "checkpoints").exists()

    one = torch.load(single / "dump" / "rank0.pt")
    for k in one:
        # Not bit-exact: each rank sums its half of the batch and gloo adds the halves, a different
        # float summation order than one process summing the whole batch. AdamW divides by sqrt(v), so
        # for near-zero gradients that rounding shows in the step: measured max abs diff ~1e-6 (lr 1e-3).
        torch.testing.assert_close(r0[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    moved = any(not torch.equal(start[k], one[k]) for k in start if k in one)
    assert moved  # training changed the weights, so the comparison means something

    s0, s1, s = (json.loads((run / "dump" / name).read_text())
                 for run, name in ((ddp, "rank0.json"), (ddp, "rank1.json"), (single, "rank0.json")))
    assert s0["steps"] == s1["steps"] == s["steps"] == 5  # same number of optimiser steps
    for key in ("tokens", "answer_tokens", "examples"):
        assert s0[key] == s1[key] == s[key], key  # stats summed over ranks
    assert s0["losses"] == s1["losses"]
    assert s0["losses"] == pytest.approx(s["losses"], rel=1e-4)  # the global-batch mean, as in 1 process
