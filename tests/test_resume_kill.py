"""Resume after a real `kill -9`: a training subprocess is SIGKILLed once a checkpoint exists (or while
it is writing one), training is run again to completion, and the saved weights and loss curve must
equal, bit for bit, those of an uninterrupted run of the same seed. Also: stray, half-written
checkpoint directories are never loaded."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from radiology_texts import TEXTS
from safetensors.torch import load_file

from synthdx.records import Record
from synthdx.tasks.multilabel import radiology_task
from synthdx.train.sft import (
    CHECKPOINT_MANIFEST,
    TrainConfig,
    _checkpoints,
    _latest_checkpoint,
    _save_checkpoint,
    train,
)

LABELS = radiology_task().label_space.names
assert all(label in LABELS for _, labels in TEXTS for label in labels)

STEPS, SAVE_EVERY = 12, 3

# The subprocess: the same training, one thread (as in the test process: conftest's fixture, so that
# float reductions run in the same order), slowed by a sleep per step so that the kill lands mid-run.
# mode "slow": sleep per step. mode "hang-in-save": the second checkpoint's state.pt is written half,
# then the process signals and hangs, to be killed in the middle of writing the checkpoint.
HELPER = r'''
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from synthdx.records import Record
from synthdx.tasks.multilabel import radiology_task
from synthdx.train import sft

args = json.loads(sys.argv[1])
mode, out = args["mode"], Path(args["out"])
records = [Record(id=r["id"], text=r["text"], labels=r["labels"]) for r in args["records"]]
if mode == "hang-in-save":
    real_save, saves = torch.save, []
    def half_save(obj, f, *a, **kw):
        saves.append(f)
        if len(saves) < 2:
            return real_save(obj, f, *a, **kw)
        real_save(obj, f, *a, **kw)
        data = Path(f).read_bytes()
        Path(f).write_bytes(data[: len(data) // 2])
        (out / "hanging").write_text(str(f))
        time.sleep(600)
    sft.torch.save = half_save
def progress(step, total, loss):
    (out / "progress.txt").write_text(str(step))
    if mode == "slow":
        time.sleep(0.25)
sft.train(records, radiology_task(), out, sft.TrainConfig(**args["cfg"]), device="cpu", progress=progress)
'''


def _records() -> list[Record]:
    return [Record(id=f"r{i}", text=t, labels=labels) for i, (t, labels) in enumerate(TEXTS)]


def _cfg_dict(tiny_model_dir, method: str) -> dict:
    return dict(model=str(tiny_model_dir), method=method, max_steps=STEPS, batch_size=4,
                learning_rate=5e-3 if method == "lora" else 1e-3, warmup_steps=2, precision="fp32",
                save_every=SAVE_EVERY, max_text_tokens=96, seed=7)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def _spawn(tmp_path: Path, out: Path, mode: str, cfg: dict) -> subprocess.Popen:
    script = tmp_path / "train_helper.py"
    script.write_text(HELPER)
    out.mkdir(parents=True, exist_ok=True)
    args = {"mode": mode, "out": str(out), "cfg": cfg,
            "records": [{"id": r.id, "text": r.text, "labels": r.labels} for r in _records()]}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, str(script), json.dumps(args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the training subprocess ended ({proc.returncode}) before the kill:\n"
                                 + proc.stdout.read().decode(errors="replace")[-3000:])
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError("timed out waiting for the training subprocess")
        time.sleep(0.01)


def _kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stdout.close()


def _steps(ckpt_root: Path) -> list[str]:
    return sorted(p.name for p in ckpt_root.iterdir()) if ckpt_root.exists() else []


@pytest.fixture(scope="module")
def straight_runs(tmp_path_factory, tiny_model_dir):
    """Uninterrupted runs of the same seed (no checkpoints), per method, in this process."""
    cache = {}

    def get(method: str):
        if method not in cache:
            out = tmp_path_factory.mktemp(f"straight-{method}")
            cfg = TrainConfig(**{**_cfg_dict(tiny_model_dir, method), "save_every": 0})
            cache[method] = (out, train(_records(), radiology_task(), out, cfg, device="cpu"))
        return cache[method]

    return get


def _assert_same_run(straight, out: Path, resumed_stats: dict, tiny_model_dir) -> None:
    ref_dir, ref_stats = straight
    assert resumed_stats["steps"] == ref_stats["steps"] == STEPS
    assert resumed_stats["losses"] == ref_stats["losses"]  # the whole curve, exactly
    assert len(resumed_stats["losses"]) == STEPS
    for key in ("tokens", "answer_tokens", "examples"):
        assert resumed_stats[key] == ref_stats[key], key
    a, b = _weights(ref_dir / "model"), _weights(out / "model")
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    base = _weights(tiny_model_dir)
    assert any(not torch.equal(base[k], a[k]) for k in a)  # training moved the weights
    assert not (out / "checkpoints").exists()


@pytest.mark.parametrize("method", ["lora", "full"])
def test_kill9_mid_run_then_resume_equals_straight_run(tmp_path, tiny_model_dir, straight_runs, method):
    """SIGKILL once a checkpoint is on disk (the process is then somewhere in steps 4-6), resume in
    this process: the same loss curve and the same weights as a run that was never interrupted.
    LoRA has dropout on (0.05), so this also checks that the RNG state travels with the checkpoint."""
    out = tmp_path / "run"
    ckpt_root = out / "checkpoints"
    proc = _spawn(tmp_path, out, "slow", _cfg_dict(tiny_model_dir, method))
    _wait_for(proc, lambda: _latest_checkpoint(ckpt_root) is not None)
    _kill9(proc)
    assert not (out / "model").exists()  # killed mid-run
    done = int((out / "progress.txt").read_text())
    assert SAVE_EVERY <= done < STEPS
    latest = _latest_checkpoint(ckpt_root)
    start = int(latest.name.split("-")[1])

    seen = []
    stats = train(_records(), radiology_task(), out, TrainConfig(**_cfg_dict(tiny_model_dir, method)),
                  device="cpu", progress=lambda step, total, loss: seen.append(step))
    assert seen == list(range(start + 1, STEPS + 1))  # resumed after the checkpoint, not from scratch
    _assert_same_run(straight_runs(method), out, stats, tiny_model_dir)


def test_kill9_while_writing_a_checkpoint(tmp_path, tiny_model_dir, straight_runs):
    """SIGKILL in the middle of writing the step-6 checkpoint (its state.pt half written): the
    half-written checkpoint is only a hidden temporary directory, never a `step-*` one, so the resume
    starts from step 3 and still ends equal to the uninterrupted run."""
    out = tmp_path / "run"
    ckpt_root = out / "checkpoints"
    proc = _spawn(tmp_path, out, "hang-in-save", _cfg_dict(tiny_model_dir, "lora"))
    _wait_for(proc, lambda: (out / "hanging").exists())
    _kill9(proc)
    assert _steps(ckpt_root) == [".tmp-step-000006", "step-000003"]
    assert _latest_checkpoint(ckpt_root).name == "step-000003"

    seen = []
    stats = train(_records(), radiology_task(), out, TrainConfig(**_cfg_dict(tiny_model_dir, "lora")),
                  device="cpu", progress=lambda step, total, loss: seen.append(step))
    assert seen == list(range(4, STEPS + 1))
    _assert_same_run(straight_runs("lora"), out, stats, tiny_model_dir)


def test_stray_incomplete_checkpoints_are_ignored(tmp_path, tiny_model_dir, straight_runs):
    """A run interrupted after its step-6 checkpoint, then strays beside it, as a non-atomic writer
    or a copy cut short would leave them: `step-000009` with a truncated state.pt (its manifest names
    the full size), `step-000010` with no state, `step-000011` with a truncated state.pt alone, a
    leftover temporary directory, and `step-000008` in the older manifest-less layout whose state.pt
    is garbage (it looks complete, so loading it fails and the resume falls back to the one before).
    The resume uses step 6 and ends equal to the uninterrupted run."""
    cfg = TrainConfig(**_cfg_dict(tiny_model_dir, "lora"))
    out = tmp_path / "run"
    ckpt_root = out / "checkpoints"

    class Stop(Exception):
        pass

    def stop(step, total, loss):
        if step == 7:
            raise Stop

    with pytest.raises(Stop):
        train(_records(), radiology_task(), out, cfg, device="cpu", progress=stop)
    assert _steps(ckpt_root) == ["step-000003", "step-000006"]
    good = ckpt_root / "step-000006"
    assert json.loads((good / CHECKPOINT_MANIFEST).read_text())["state_bytes"] == (good / "state.pt").stat().st_size
    data = (good / "state.pt").read_bytes()

    shutil.copytree(good, ckpt_root / "step-000009")
    (ckpt_root / "step-000009" / "state.pt").write_bytes(data[: len(data) // 3])
    (ckpt_root / "step-000010").mkdir()
    (ckpt_root / "step-000011").mkdir()
    (ckpt_root / "step-000011" / "state.pt").write_bytes(data[: len(data) // 2])
    shutil.copytree(good, ckpt_root / ".tmp-step-000012")
    legacy = ckpt_root / "step-000008"
    legacy.mkdir()
    (legacy / "state.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    shutil.copy(good / "train_config.json", legacy / "train_config.json")
    assert [p.name for p in _checkpoints(ckpt_root)] == ["step-000008", "step-000006", "step-000003"]

    seen = []
    stats = train(_records(), radiology_task(), out, cfg, device="cpu",
                  progress=lambda step, total, loss: seen.append(step))
    assert seen == list(range(7, STEPS + 1))
    _assert_same_run(straight_runs("lora"), out, stats, tiny_model_dir)


def test_save_checkpoint_is_atomic(tmp_path, tiny_model_dir, monkeypatch):
    """A checkpoint write that fails part-way (here: torch.save raises after writing half a file)
    leaves no `step-*` directory behind, and the previous checkpoint stays the latest."""
    from synthdx.train import sft

    cfg = TrainConfig(**_cfg_dict(tiny_model_dir, "full"))
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    trainable = {k: v.detach().clone() for k, v in model.named_parameters()}
    _save_checkpoint(tmp_path, 3, trainable, optimizer.state_dict(), cfg, {"losses": [1.0]})
    assert _latest_checkpoint(tmp_path).name == "step-000003"

    def broken_save(obj, f, *a, **kw):
        Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(sft.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _save_checkpoint(tmp_path, 6, trainable, optimizer.state_dict(), cfg, {"losses": [1.0, 0.5]})
    assert not (tmp_path / "step-000006").exists()
    assert _latest_checkpoint(tmp_path).name == "step-000003"
