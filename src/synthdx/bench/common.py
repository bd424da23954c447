"""What every benchmark shares: the machine it ran on, the machine's measured matmul peak (the
denominator of model-FLOPs utilisation), a printed table, and the JSON it writes.

Peak: the best of a few timed square matmuls per dtype, on the threads torch uses. Utilisation is
reported against the best dtype's peak (bf16 on CPUs with AMX / AVX512-BF16 and on GPUs; fp32 on a
CPU without them, where bf16 is emulated and ~50x slower), and each dtype's peak is in the JSON.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..io import write_json
from ..progress import console


def machine() -> dict:
    """The hardware a benchmark ran on, as recorded in its JSON and printed under its table."""
    from ..models.loading import machine_info

    return machine_info()


def describe(info: dict) -> str:
    text = f"{info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch threads)"
    if info.get("gpu"):
        text += f", {info['gpu']}"
    return text + ("" if info.get("cpu_native_bf16") else ", no native bf16 on the CPU")


def matmul_peak(dtype: torch.dtype, device: str = "cpu", n: int = 1024, repeats: int = 3) -> float:
    """Measured FLOP/s of an n x n matmul (best of `repeats` timed batches of ~0.3 s, after a
    warm-up). A dtype the hardware only emulates is timed at n = 256 (the peak is low either way)."""
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def once(size: int) -> float:
        a = torch.randn(size, size, device=device).to(dtype)
        t = time.perf_counter()
        a @ a
        sync()
        return time.perf_counter() - t

    once(256)
    if once(256) > 0.005:  # < 7 GFLOP/s: emulated
        n = 256
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    sync()
    reps = max(1, min(200, int(0.3 / max(once(n), 1e-6))))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n ** 3 / best


def peaks(device: str = "cpu") -> dict:
    """Measured matmul FLOP/s per dtype and the best of them (the MFU denominator)."""
    out = {"fp32": matmul_peak(torch.float32, device), "bf16": matmul_peak(torch.bfloat16, device)}
    out["best"] = max(out["fp32"], out["bf16"])
    out["best_dtype"] = "bf16" if out["bf16"] >= out["fp32"] else "fp32"
    return out


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence], note: str = "") -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*[str(v) for v in r])
    console.print(table, markup=False, soft_wrap=True)
    if note:
        console.print(note, markup=False, soft_wrap=True)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    """The same table as Markdown (for pasting into the README)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|"]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def save(out: str | Path, result: dict) -> None:
    """Write the benchmark's JSON atomically."""
    write_json(out, result)
