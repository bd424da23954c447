"""Stages every experiment recipe shares: fine-tuning into RUN/model (reused when already there)
and a description of the hardware a run used.

Several processes (`torchrun ... -m synthdx.cli run`): `cli.run` hands the experiment to
`distributed.lead`, so an experiment function runs on rank 0 only and needs no rank checks of its
own; `train_or_reuse` trains on every rank through `distributed.on_all_ranks`. A recipe that trains
another way makes it data-parallel the same way: `on_all_ranks(fit, examples, tokenizer, spec,
out_dir, cfg, main_kwargs={"progress": report})` (called directly, it trains in rank 0 alone)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Callable, Sequence

import torch
import yaml

from ..distributed import on_all_ranks
from ..errors import ConfigError
from ..io import atomic_open, read_jsonl, write_jsonl
from ..progress import console, log, make_progress
from ..records import Record


def train_or_reuse(records: Sequence[Record], task, out: Path, train_section) -> dict:
    """Fine-tune on `records` into `out/model`; a finished model already there is reused (an
    interrupted training resumes from its checkpoint). Returns the training statistics."""
    from ..train.sft import TASK_FILE, TrainConfig, train

    model_dir = out / "model"
    if (model_dir / TASK_FILE).exists():
        console.print(f"{model_dir} exists: reusing the trained model")
        stats = json.loads((model_dir / TASK_FILE).read_text())["train_stats"]
    else:
        with make_progress() as bar:
            t = bar.add_task("training", total=1, info="")

            def report(step: int, total: int, loss: float) -> None:
                bar.update(t, completed=step, total=total, info=f"loss {loss:.3f}")
                if step % 10 == 0 or step == total:
                    log.info("training step %d/%d loss %.4f", step, total, loss)

            # Under `synthdx run` with several processes (distributed.lead) every rank trains
            # (data-parallel); the rest of the experiment runs on rank 0 alone. Otherwise a plain call.
            stats = on_all_ranks(train, records, task, out, TrainConfig(**train_section.model_dump()),
                                 main_kwargs={"progress": report})
        stats.pop("losses", None)
    msg = (f"trained on {stats['examples']} examples, {stats['tokens']} tokens, "
           f"{stats['tokens_per_second']} tokens/s ({stats['dtype']})")
    console.print(msg)
    log.info(msg)
    return stats


def cached_records(path: Path, make: Callable[[], list[Record]]) -> list[Record]:
    """The records in `path` (JSONL) when a previous run wrote them, else `make()`, written there."""
    if path.exists():
        return [Record.from_dict(row) for _, row in read_jsonl(path)]
    records = make()
    write_jsonl(path, (r.to_dict() for r in records))
    return records


def hardware() -> dict:
    from ..models.loading import machine_info

    return {"machine": platform.machine(), **machine_info(), "cuda": torch.cuda.is_available()}


def claim_run_dir(out: Path, cfg) -> None:
    """Record `cfg` in `out/config.yaml`. A run directory already holding a different config is
    refused: its stages' outputs (data, model, scores) would be silently reused for the new one.
    The recorded config is read with today's schema first, so a setting added to synthdx since the
    run started (absent there, at its default here) is not a difference."""
    text = yaml.safe_dump(cfg.model_dump(), sort_keys=False)
    path = out / "config.yaml"
    if path.exists():
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
        try:
            old = yaml.safe_load(yaml.safe_dump(type(cfg).model_validate(old).model_dump(), sort_keys=False))
        except ValueError:  # a setting this synthdx no longer knows: compare as recorded
            pass
        if old != yaml.safe_load(text):
            changed = sorted(_diff_keys(old, cfg.model_dump()))
            raise ConfigError(f"{out} holds a run with another config (differs in: {', '.join(changed[:8])}); "
                              "resume it with the same config, or use a new --out directory")
        return
    with atomic_open(path) as f:
        f.write(text)


def _diff_keys(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]
