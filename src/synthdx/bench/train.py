"""`synthdx bench train`: training throughput of synthdx's loop against the plain path, side by side.

Both paths fine-tune the same model with the same adapter (or all weights), the same examples
(synthetic chest X-ray reports with their labels, answer-only loss: the prompt is masked with -100
in both), batch size, learning rate and fp32 weights; each runs in a fresh process, so that its peak
memory is its own. What differs is only the engineering:

- plain: transformers `Trainer` + peft, default settings (random batches padded to the longest,
  logits over the whole vocabulary at every position, fp32);
- synthdx (`train.sft.fit`): length-grouped batches, the LM head only where an answer token is
  predicted, bf16 autocast where the hardware runs it natively (`precision: auto`).

The first optimiser step of each path is a warm-up and is not timed. Tokens are real (non-padding)
tokens. Model FLOPs per step are counted the same way for both paths, from the examples alone
(`training_flops`): the work the objective needs, not the work a path happens to do, so padding and
unneeded logits count against the path that does them. MFU = model FLOP/s over the machine's
measured matmul peak (bench.common.peaks).
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from .common import describe, machine, markdown_table, peaks, print_table, save


def bench_examples(tokenizer, n: int, seed: int = 0, max_text_tokens: int = 320):
    """`n` tokenised radiology training examples from the synthetic report generator (no data files
    needed, the same on every machine)."""
    from ..synth.radiology_reports import RadiologyReportGenerator
    from ..tasks.multilabel import radiology_task

    task = radiology_task(max_text_tokens=max_text_tokens)
    return task, [task.build_example(tokenizer, r) for r in RadiologyReportGenerator(seed=seed).generate(n)]


def training_flops(config, lengths: Sequence[int], answer_positions: int, method: str, shared_prefix: int = 0) -> float:
    """Model FLOPs of one optimiser step on one batch: rows of `lengths` real tokens whose first
    `shared_prefix` tokens are the same in every row (counted once: recomputing them is not work the
    objective needs), `answer_positions` of which predict an answer token. Forward: 2 x (weights of
    the transformer layers) per token, causal attention 2 x d x T(T+1) per layer and row, the LM
    head 2 x V x d per answer position. Backward: 2x forward for the gradients of activations, +1x
    forward for weight gradients in full fine-tuning (LoRA adapters' own FLOPs, ~5% at r=16, are
    left out: the figure errs low)."""
    d, L = config.hidden_size, config.num_hidden_layers
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", heads) or heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    per_layer = d * heads * head_dim * 2 + d * kv * head_dim * 2 + 3 * d * config.intermediate_size
    p = shared_prefix if len(lengths) > 1 else 0
    tokens = sum(lengths) - p * (len(lengths) - 1)
    linear = 2 * per_layer * L * tokens + 2 * config.vocab_size * d * answer_positions
    pairs = sum(t * (t + 1) for t in lengths) - p * (p + 1) * (len(lengths) - 1)
    attention = 2 * heads * head_dim * pairs * L
    return (3.0 if method == "full" else 2.0) * linear + 3.0 * attention


def _batch_shape(input_ids, attention_mask, labels) -> dict:
    """What the FLOP count and the padding share need to know of one batch."""
    same = ((input_ids == input_ids[:1]) & (attention_mask == 1)).all(0)
    return {"lengths": [int(m.sum()) for m in attention_mask], "width": int(input_ids.shape[1]),
            "answers": int((labels[:, 1:] != -100).sum()),
            "prefix": int(same.long().cumprod(0).sum()) if input_ids.shape[0] > 1 else 0}


def train_config(method: str, model: str, steps: int, batch_size: int, lora_dropout: float | None = None):
    """The benchmarks' training settings: `steps` timed steps after one warm-up, no checkpoints."""
    from ..train.sft import TrainConfig

    extra = {} if lora_dropout is None else {"lora_dropout": lora_dropout}
    return TrainConfig(model=model, method=method, max_steps=steps + 1, batch_size=batch_size,
                       warmup_steps=1, save_every=0, **extra)


def peak_memory_mib(device: str) -> float:
    """This process's peak memory: resident on a CPU, allocated on a GPU."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _fit_ours(method: str, model: str, steps: int, batch_size: int, n_examples: int, device: str,
              lora_dropout: float | None, progress) -> tuple:
    """Our path: `train.sft.fit` on the benchmark's examples in a throwaway directory. Returns
    (config, tokenizer, examples, training stats)."""
    from ..models.loading import load_tokenizer
    from ..train.sft import fit

    cfg = train_config(method, model, steps, batch_size, lora_dropout)
    tok = load_tokenizer(model)
    task, examples = bench_examples(tok, n_examples)
    out = Path(tempfile.mkdtemp(prefix="synthdx-bench-"))
    try:
        stats = fit(examples, tok, task.spec(), out, cfg, device=device, progress=progress)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return cfg, tok, examples, stats


def _ours(method: str, model: str, steps: int, batch_size: int, n_examples: int, device: str,
          lora_dropout: float | None = None) -> dict:
    from ..models.loading import pick_dtype

    ends: list[float] = []
    cfg, tok, examples, stats = _fit_ours(method, model, steps, batch_size, n_examples, device, lora_dropout,
                                          progress=lambda step, total, loss: ends.append(time.perf_counter()))
    return {"seconds": ends[-1] - ends[0], "tokens": sum(stats["step_tokens"][1:]),
            "dtype": str(pick_dtype(device, cfg.precision)).replace("torch.", ""),
            "peak_memory_mib": peak_memory_mib(device), "batches": _batches_after_warmup(examples, tok, cfg, stats)}


def _profile_ours(method: str, model: str, steps: int, batch_size: int, n_examples: int, device: str,
                  lora_dropout: float | None = None, top: int = 12) -> list[dict]:
    """Our path again, its steps after the warm-up under the torch profiler (a separate run: the
    profiler's overhead stays out of the timed figures). The `top` operators by self CPU time, with
    their share of the total."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU])

    started = []

    def progress(step, total, loss):
        if step == 1:  # the warm-up step is done
            prof.start()
            started.append(step)

    try:
        _fit_ours(method, model, steps, batch_size, n_examples, device, lora_dropout, progress)
    finally:
        if started:
            prof.stop()
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) or 1
    return [{"op": e.key, "self_cpu_share": round(e.self_cpu_time_total / total, 4), "calls": e.count}
            for e in ops[:top]]


def _batches_after_warmup(examples, tokenizer, cfg, stats) -> list[dict]:
    """The shape of every batch trained on after the warm-up step: ours takes its batches from the
    same seeded schedule `fit` used."""
    from ..train.sft import collate, length_grouped_batches

    lengths = [len(e.input_ids) for e in examples]
    schedule = length_grouped_batches(lengths, cfg.batch_size, cfg.seed)[1:stats["steps"]]
    shapes = []
    for b in schedule:
        batch = collate([examples[i] for i in b], tokenizer.pad_token_id)
        shapes.append(_batch_shape(batch["input_ids"], batch["attention_mask"], batch["labels"]))
    return shapes


def _plain(method: str, model: str, steps: int, batch_size: int, n_examples: int, device: str,
           lora_dropout: float | None = None) -> dict:
    """transformers Trainer + peft with default settings, fp32."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from ..models.loading import load_tokenizer, resolve_model_path

    cfg = train_config(method, model, steps, batch_size, lora_dropout)
    tok = load_tokenizer(model)
    _, examples = bench_examples(tok, n_examples)
    lm = AutoModelForCausalLM.from_pretrained(resolve_model_path(model), dtype=torch.float32)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        lm = get_peft_model(lm, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                           target_modules=cfg.lora_targets, task_type="CAUSAL_LM"))
    data = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels}
            for e in examples]
    batches: list[dict] = []  # the shape of each step's batch, as the model saw it

    def count(_module, args, kwargs):
        batches.append(_batch_shape(kwargs["input_ids"], kwargs["attention_mask"], kwargs["labels"]))

    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    base.register_forward_pre_hook(count, with_kwargs=True)
    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            ends.append(time.perf_counter())

    out = tempfile.mkdtemp(prefix="synthdx-bench-plain-")
    try:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch_size, max_steps=steps + 1,
                                 learning_rate=cfg.learning_rate, warmup_steps=1, save_strategy="no",
                                 report_to=[], logging_strategy="no", disable_tqdm=True, seed=cfg.seed,
                                 use_cpu=not device.startswith("cuda"))
        Trainer(model=lm, args=args, train_dataset=data, callbacks=[Clock()],
                data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)).train()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    timed = batches[1:len(ends)]
    return {"seconds": ends[-1] - ends[0], "tokens": sum(sum(b["lengths"]) for b in timed), "dtype": "float32",
            "peak_memory_mib": peak_memory_mib(device), "batches": timed}


def _in_fresh_process(fn, *args) -> dict:
    """Run `fn(*args)` in a new process (its peak memory is then its own)."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


def run_train_bench(out: str | Path, model: str = "smollm2-135m", methods: Sequence[str] = ("lora", "full"),
                    steps: int = 4, batch_size: int = 8, pool: int = 256, device: str | None = None,
                    lora_dropout: float | None = None, profile: bool = False) -> dict:
    """`pool`: examples both paths draw their batches from, as a training run would (a real training
    set has thousands: length grouping needs a pool to group; the plain path samples at random).
    `lora_dropout`: both paths' adapter dropout (None: TrainConfig's default, 0.05). `profile`: after
    the timed runs, our path once more under the torch profiler; its top operators are printed and
    saved (`methods.<method>.profile`)."""
    from transformers import AutoConfig

    from ..models.loading import default_device, resolve_model_path

    for m in methods:
        if m not in ("lora", "full"):
            raise ValueError(f"method must be lora or full, not {m!r}")
    device = device or default_device()
    hw, peak = machine(), peaks(device)
    config = AutoConfig.from_pretrained(resolve_model_path(model))
    n_examples = max(pool, (steps + 1) * batch_size)
    results, rows = {}, []
    for method in methods:
        res = {}
        for path, fn in (("plain", _plain), ("synthdx", _ours)):
            r = _in_fresh_process(fn, method, model, steps, batch_size, n_examples, device, lora_dropout)
            batches = r.pop("batches")
            flops = sum(training_flops(config, b["lengths"], b["answers"], method, b["prefix"]) for b in batches)
            computed = sum(b["width"] * len(b["lengths"]) for b in batches)
            r.update(tokens_per_second=r["tokens"] / r["seconds"], model_flops_per_second=flops / r["seconds"],
                     padding=1 - r["tokens"] / computed)
            r["mfu"] = r["model_flops_per_second"] / peak["best"]
            res[path] = r
        res["speedup"] = res["synthdx"]["tokens_per_second"] / res["plain"]["tokens_per_second"]
        res["memory_ratio"] = res["synthdx"]["peak_memory_mib"] / res["plain"]["peak_memory_mib"]
        if profile:
            res["profile"] = _in_fresh_process(_profile_ours, method, model, steps, batch_size, n_examples,
                                               device, lora_dropout)
            print_table(f"Profile of synthdx {method} ({steps} steps after the warm-up): "
                        "top operators by self CPU time", ["operator", "share", "calls"],
                        [[o["op"], f"{100 * o['self_cpu_share']:.1f}%", o["calls"]] for o in res["profile"]])
        results[method] = res
        for path in ("plain", "synthdx"):
            r = res[path]
            rows.append([f"{method} ({'Trainer + peft' if path == 'plain' else 'synthdx'})", r["dtype"],
                         f"{r['tokens_per_second']:.0f}", f"{100 * r['padding']:.0f}%", f"{r['peak_memory_mib']:.0f}",
                         f"{100 * r['mfu']:.1f}%",
                         f"{res['speedup']:.2f}x" if path == "synthdx" else ""])
    columns = ["path", "dtype", "tokens/s", "padding", "peak MiB", "MFU", "speedup"]
    note = (f"{model}, {steps} timed steps of {batch_size} synthetic radiology examples per path (drawn "
            f"from the same {n_examples}), on "
            f"{describe(hw)}. Matmul peak: fp32 {peak['fp32'] / 1e9:.1f}, bf16 {peak['bf16'] / 1e9:.1f} "
            f"GFLOP/s; MFU against the best ({peak['best_dtype']}).")
    if "lora" in methods:
        note += f" LoRA dropout {train_config('lora', model, steps, batch_size, lora_dropout).lora_dropout}."
    print_table("Training: synthdx vs Trainer + peft (fp32 defaults), same examples", columns, rows, note)
    result = {"benchmark": "train", "model": model, "device": device, "steps": steps, "batch_size": batch_size,
              "pool": n_examples,
              "machine": hw, "peak_flops": peak, "methods": results,
              "speedup": results[methods[0]]["speedup"], "mfu": results[methods[0]]["synthdx"]["mfu"],
              "table_markdown": markdown_table(columns, rows) + "\n\n" + note,
              "settings": asdict(train_config(methods[0], model, steps, batch_size, lora_dropout))}
    save(out, result)
    return result
