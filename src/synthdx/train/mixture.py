"""Mixtures of tasks for joint fine-tuning: how many examples of each task, which ones, and the
task spec a jointly trained model records.

Weights are shares of the joint training examples (normalised to sum to 1). With N examples in
all, task i gets n_i = w_i * N rounded by the largest-remainder rule (the n_i sum to N exactly;
ties go to the task listed first). N defaults to the largest total whose shares every pool can
fill without drawing an example twice: N = min_i floor(P_i / w_i) for pools of P_i examples.

Which examples: per task, a seeded random permutation of its pool, taken from the start. A share
larger than the pool (only when N is set explicitly) takes the whole pool in one permutation, then
the whole pool again in a fresh permutation, and so on (sampling without replacement within each
pass, like upsampling a small dataset by whole epochs); every example then appears floor(n_i / P_i)
or one more times. The seed of task i's permutations is derived from the mixture seed and the
task's name, so adding a task does not change what another task draws.

The order of the joint examples does not matter: the training loop (`train.sft.fit`) shuffles them
into length-grouped batches with its own seed, so batches of different tasks are interleaved
through training (a batch itself tends to hold one task: their prompts differ in length).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from typing import TypeVar

MULTI_TASK_KIND = "multi-task"

T = TypeVar("T")

__all__ = ["MULTI_TASK_KIND", "draw_mixture", "mixture_counts", "multi_task_spec", "normalise_weights"]


def normalise_weights(weights: Mapping[str, float]) -> dict[str, float]:
    if not weights:
        raise ValueError("a mixture needs at least one task")
    bad = [k for k, w in weights.items() if not (w > 0 and math.isfinite(w))]
    if bad:
        raise ValueError(f"mixture weights must be positive numbers (not for {', '.join(bad)})")
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}


def mixture_counts(pool_sizes: Mapping[str, int], weights: Mapping[str, float],
                   n_examples: int | None = None) -> dict[str, int]:
    """Examples of each task in a joint run of `n_examples` (None: the most that needs no repeats)."""
    if set(pool_sizes) != set(weights):
        raise ValueError(f"pools {sorted(pool_sizes)} and weights {sorted(weights)} name different tasks")
    w = normalise_weights({k: weights[k] for k in pool_sizes})
    empty = [k for k, p in pool_sizes.items() if p < 1]
    if empty:
        raise ValueError(f"no training examples for {', '.join(empty)}")
    if n_examples is None:
        # the largest N with every share within its pool (a tiny tolerance for float rounding)
        n_examples = min(math.floor(p / w[k] + 1e-9) for k, p in pool_sizes.items())
    if n_examples < 1:
        raise ValueError("a mixture needs at least one example")
    exact = {k: w[k] * n_examples for k in pool_sizes}
    counts = {k: math.floor(v) for k, v in exact.items()}
    left = n_examples - sum(counts.values())
    order = sorted(pool_sizes, key=lambda k: -(exact[k] - counts[k]))  # stable: ties keep the listed order
    for k in order[:left]:
        counts[k] += 1
    return counts


def _task_seed(seed: int, task: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{task}".encode()).digest()[:8], "big")


def draw(pool: Sequence[T], n: int, seed: int) -> list[T]:
    """`n` items of `pool`: whole seeded permutations of it, the last one cut (module docstring)."""
    rng = random.Random(seed)
    out: list[T] = []
    while len(out) < n:
        perm = list(pool)
        rng.shuffle(perm)
        out += perm[: n - len(out)]
    return out


def draw_mixture(pools: Mapping[str, Sequence[T]], weights: Mapping[str, float], n_examples: int | None = None,
                 seed: int = 0) -> dict[str, list[T]]:
    """{task: the items of its pool drawn for the joint run}, `mixture_counts` of each."""
    counts = mixture_counts({k: len(v) for k, v in pools.items()}, weights, n_examples)
    return {k: draw(pool, counts[k], _task_seed(seed, k)) for k, pool in pools.items()}


def multi_task_spec(specs: Mapping[str, dict], weights: Mapping[str, float], counts: Mapping[str, int]) -> dict:
    """What a model trained on a mixture records in `synthdx_task.json`: each task's own spec (read
    back by `train.sft.load_trained_task(dir, task=name)`), the weights and the examples per task."""
    w = normalise_weights(weights)
    return {"task": "+".join(specs), "kind": MULTI_TASK_KIND, "tasks": {k: dict(v) for k, v in specs.items()},
            "mixture": {"weights": {k: w[k] for k in specs}, "examples": {k: int(counts[k]) for k in specs}}}
