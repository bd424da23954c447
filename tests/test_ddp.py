"""Data-parallel training: the same `train()` under `torchrun --nproc_per_node 2` (gloo, CPU, loopback),
the model replicated (DDP) or sharded (FSDP2), trains the same model on both ranks, and the same model as
a 1-process run of the same script; checkpoints resume across process counts and modes; `accelerate
launch` with the shipped FSDP config shards by itself."""

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

seen = []

def progress(step, total, loss):
    seen.append(step)
    if step == args.get("crash_after"):
        raise SystemExit(f"crashing after step {step}, as the test asked")

stats = sft.train(records, radiology_task(), args["out"], sft.TrainConfig(**args["cfg"]), device="cpu",
                  progress=progress)
rank = int(os.environ.get("RANK", "0"))
# under FSDP a parameter is a DTensor: its local shard is what this rank held while training
local = {k: (v.to_local() if hasattr(v, "to_local") else v).detach().clone()
         for k, v in built[0].state_dict().items()}
torch.save(local, dump / f"rank{rank}.pt")
(dump / f"rank{rank}.json").write_text(json.dumps({**stats, "seen": seen}))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path: Path, name: str, tiny_model_dir, nproc: int, crash_after: int | None = None,
         accelerate_config: Path | None = None, **overrides) -> Path:
    """Train in `tmp_path/name` (again: resume there); with `crash_after`, every rank exits after that
    step and the run is expected to fail."""
    run = tmp_path / name
    dump = run / "dump"
    dump.mkdir(parents=True, exist_ok=True)
    cfg = dict(model=str(tiny_model_dir), method="full", max_steps=5, batch_size=4, learning_rate=1e-3,
               warmup_steps=1, precision="fp32", save_every=2, max_text_tokens=96, seed=3)
    cfg.update(overrides)
    (run / "args.json").write_text(json.dumps({"out": str(run / "out"), "dump": str(dump), "cfg": cfg,
                                               "texts": TEXTS, "crash_after": crash_after}))
    script = tmp_path / f"{name}_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "MASTER_ADDR": "127.0.0.1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(k, None)
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # keep gloo's traffic on the loopback interface
    launch = ([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port())] if nproc > 1 else [sys.executable])
    if accelerate_config is not None:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config),
                  "--main_process_port", str(_free_port())]
    proc = subprocess.run(launch + [str(script), str(run / "args.json")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    if crash_after is not None:
        assert proc.returncode != 0 and "crashing after step" in proc.stdout + proc.stderr, proc.stderr[-5000:]
    else:
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


def _saved(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "out" / "model" / "model.safetensors"))


def _assert_close_models(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        # tolerance as in the DDP test above: gloo sums the ranks' halves in another order
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


FSDP_SETTINGS = {
    "full": {},
    "lora": {"method": "lora", "lora_dropout": 0.0},
    # the lower layer entirely frozen: a sharded unit that gets no gradients
    "lora-top-layer": {"method": "lora", "lora_dropout": 0.0, "lora_layers": 1},
    # FSDP's mixed-precision policy (bf16 compute, fp32 weights and reduction); emulated bf16 on a CPU
    "full-bf16": {"precision": "bf16"},
}


@pytest.mark.parametrize("setting", list(FSDP_SETTINGS))
def test_fsdp_shards_the_model_and_trains_the_same_model_as_one_process(tmp_path, tiny_model_dir, setting):
    """FSDP2 on 2 processes: each rank holds half of every parameter while training, and the model rank
    0 gathers and writes (LoRA: merged) is the 1-process run's (in bf16: within bf16 rounding)."""
    extra = FSDP_SETTINGS[setting]
    fsdp = _run(tmp_path, "fsdp", tiny_model_dir, nproc=2, parallel="fsdp", **extra)
    single = _run(tmp_path, "single", tiny_model_dir, nproc=1, parallel="fsdp", **extra)

    one = _saved(single)
    bf16 = extra.get("precision") == "bf16"
    if bf16:  # measured max abs difference 0.006 (weights ~0.2); fp32 storage either way
        assert all(v.dtype == torch.float32 for v in _saved(fsdp).values())
        for k, v in _saved(fsdp).items():
            torch.testing.assert_close(v, one[k], rtol=0, atol=2e-2, msg=k)
    else:
        _assert_close_models(_saved(fsdp), one)
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    assert any(not torch.equal(start[k], one[k]) for k in start)  # training moved the weights

    shards = [torch.load(fsdp / "dump" / f"rank{r}.pt") for r in (0, 1)]
    whole = torch.load(single / "dump" / "rank0.pt")
    embed = next(k for k in whole if k.endswith("embed_tokens.weight"))
    for r in (0, 1):  # dim-0 sharding: each rank held half of the rows
        assert shards[r][embed].shape[0] == whole[embed].shape[0] // 2
    assert not torch.equal(shards[0][embed], shards[1][embed])
    assert not (fsdp / "out" / "checkpoints").exists()

    s0, s1, s = (json.loads((run / "dump" / name).read_text())
                 for run, name in ((fsdp, "rank0.json"), (fsdp, "rank1.json"), (single, "rank0.json")))
    assert s0["steps"] == s["steps"] == 5 and s0["losses"] == s1["losses"]
    assert s0["tokens"] == s["tokens"] and s0["answer_tokens"] == s["answer_tokens"]
    assert s0["losses"] == pytest.approx(s["losses"], rel=1e-2 if bf16 else 1e-4)
    assert s0["dtype"] == ("bfloat16" if bf16 else "float32")


def test_fsdp_resumes_checkpoints_across_process_counts(tmp_path, tiny_model_dir):
    """Checkpoints hold whole tensors whatever wrote them: a 1-process run that dies after step 3 resumes
    under 2-process FSDP (from its step-2 checkpoint) and ends at the uninterrupted run's model, and an
    FSDP run that dies resumes as one process to the same model."""
    straight = _saved(_run(tmp_path, "straight", tiny_model_dir, nproc=1))

    _run(tmp_path, "single-then-fsdp", tiny_model_dir, nproc=1, crash_after=3)
    assert (tmp_path / "single-then-fsdp" / "out" / "checkpoints" / "step-000002").is_dir()
    resumed = _run(tmp_path, "single-then-fsdp", tiny_model_dir, nproc=2, parallel="fsdp")
    _assert_close_models(_saved(resumed), straight)
    for r in (0, 1):
        assert json.loads((resumed / "dump" / f"rank{r}.json").read_text())["seen"] == [3, 4, 5]

    _run(tmp_path, "fsdp-then-single", tiny_model_dir, nproc=2, crash_after=3, parallel="fsdp")
    assert (tmp_path / "fsdp-then-single" / "out" / "checkpoints" / "step-000002").is_dir()
    resumed = _run(tmp_path, "fsdp-then-single", tiny_model_dir, nproc=1)
    _assert_close_models(_saved(resumed), straight)
    assert json.loads((resumed / "dump" / "rank0.json").read_text())["seen"] == [3, 4, 5]


def test_accelerate_launch_with_the_shipped_fsdp_config_shards(tmp_path, tiny_model_dir):
    """`accelerate launch --config_file configs/accelerate/fsdp-shard-grad-op.yaml`, made to run on 2 CPU
    processes (use_cpu, 2 processes; its fsdp_config as shipped): training picks FSDP by itself
    (`parallel: auto`), with the config's ZeRO-2-like resharding, and rank 0 writes the model."""
    import yaml

    shipped_file = Path(__file__).parents[1] / "configs" / "accelerate" / "fsdp-shard-grad-op.yaml"
    shipped = yaml.safe_load(shipped_file.read_text())
    cpu = {**shipped, "use_cpu": True, "num_processes": 2, "mixed_precision": "no"}
    cpu.pop("gpu_ids", None)
    config = tmp_path / "cpu-fsdp.yaml"
    config.write_text(yaml.safe_dump(cpu))
    run = _run(tmp_path, "accelerate", tiny_model_dir, nproc=2, accelerate_config=config)
    rows = load_file(str(tiny_model_dir / "model.safetensors"))["model.embed_tokens.weight"].shape[0]
    for r in (0, 1):
        stats = json.loads((run / "dump" / f"rank{r}.json").read_text())
        assert stats["parallel"] == "fsdp (shard-grad-op)" and stats["processes"] == 2
        local = torch.load(run / "dump" / f"rank{r}.pt")
        shard = next(v for k, v in local.items() if k.endswith("embed_tokens.weight"))
        assert shard.shape[0] == rows // 2
    assert (run / "out" / "model" / "model.safetensors").is_file()


def test_parallel_mode_follows_the_launcher(monkeypatch):
    from synthdx.errors import SynthdxError
    from synthdx.train.sft import _parallel_mode, _reshard_after_forward

    for k in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "FSDP_RESHARD_AFTER_FORWARD"):
        monkeypatch.delenv(k, raising=False)
    assert _parallel_mode("auto") == "ddp" and _parallel_mode("fsdp") == "fsdp" and _reshard_after_forward()
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert _parallel_mode("auto") == "fsdp" and _parallel_mode("ddp") == "ddp"
    for value, expected in (("false", False), ("SHARD_GRAD_OP", False), ("true", True), ("FULL_SHARD", True)):
        monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", value)
        assert _reshard_after_forward() is expected, value
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(SynthdxError, match="DeepSpeed"):
        _parallel_mode("auto")
