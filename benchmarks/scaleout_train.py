"""Training on several processes: 1 process vs DDP vs FSDP, tokens per second and memory per rank.

    python benchmarks/scaleout_train.py [--model smollm2-135m] [--methods full lora] [--procs 2]
        [--steps 6] [--batch-size 8] [--json out.json]

Each configuration fine-tunes the same model on the same synthetic chest X-ray examples
(`bench.train.bench_examples`) for `--steps` optimiser steps after one warm-up step, with the same
global batch, in fresh processes: one process using every core, then `--procs` processes under
torchrun (gloo on CPU, nccl on GPUs; the cores split between them) replicating the model (DDP) or
sharding it (FSDP2, `train.parallel: fsdp`). Per rank: tokens per second over the timed steps (all
ranks' tokens), peak resident memory, and resident memory at the last step (what the training state
holds once loading is over); on a GPU, peak and current allocated GPU memory instead. On one CPU the processes share the
cores, so the speed columns show the cost of the parallel machinery, not a speed-up; the memory
columns show what sharding saves per rank.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _worker(args) -> None:
    """One rank of one configuration: train, write this rank's figures to `args.result`.rank<R>.json."""
    import dataclasses

    import torch

    from synthdx.bench.train import bench_examples, peak_memory_mib, train_config
    from synthdx.models.loading import default_device, load_tokenizer
    from synthdx.train.sft import fit

    device = default_device()
    cfg = dataclasses.replace(train_config(args.method, args.model, args.steps, args.batch_size),
                              parallel=args.parallel)
    tok = load_tokenizer(args.model)
    task, examples = bench_examples(tok, args.batch_size * (args.steps + 1))
    ends, rss = [], []

    def progress(step, total, loss):
        ends.append(time.perf_counter())
        rss.append(torch.cuda.memory_allocated() / 2 ** 20 if device.startswith("cuda") else _rss_mib())

    out = Path(tempfile.mkdtemp(prefix="synthdx-scaleout-"))
    try:
        stats = fit(examples, tok, task.spec(), out, cfg, device=device, progress=progress)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    peak = peak_memory_mib(device)
    rank = int(os.environ.get("RANK", "0"))
    Path(f"{args.result}.rank{rank}.json").write_text(json.dumps({
        "rank": rank, "tokens_per_second": sum(stats["step_tokens"][1:]) / (ends[-1] - ends[0]),
        "peak_memory_mib": peak, "rss_last_step_mib": rss[-1], "parallel": stats["parallel"],
        "processes": stats["processes"], "dtype": stats["dtype"], "threads": torch.get_num_threads()}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args, method: str, procs: int, parallel: str, result: Path) -> list[dict]:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(k, None)
    cores = os.cpu_count() or 1
    env["OMP_NUM_THREADS"] = str(max(1, cores // procs))  # the cores split between the ranks
    if procs > 1:
        env["MASTER_ADDR"] = "127.0.0.1"
        if Path("/sys/class/net/lo").exists():
            env["GLOO_SOCKET_IFNAME"] = "lo"
    launch = [sys.executable]
    if procs > 1:
        launch += ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(procs),
                   "--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    cmd = launch + [__file__, "--worker", "--method", method, "--parallel", parallel, "--result", str(result),
                    "--model", args.model, "--steps", str(args.steps), "--batch-size", str(args.batch_size)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return [json.loads(Path(f"{result}.rank{r}.json").read_text()) for r in range(procs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--parallel", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args)

    from synthdx.bench.common import describe, machine, markdown_table, print_table, save

    columns = ["method", "processes", "parallel", "dtype", "threads/rank", "tokens/s",
               "peak MiB/rank", "MiB/rank at last step"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="synthdx-scaleout-") as tmp:
        for method in args.methods:
            for procs, parallel in ((1, "ddp"), (args.procs, "ddp"), (args.procs, "fsdp")):
                ranks = _launch(args, method, procs, parallel, Path(tmp) / f"{method}-{procs}-{parallel}")
                first = ranks[0]
                peak = max(r["peak_memory_mib"] for r in ranks)
                last = max(r["rss_last_step_mib"] for r in ranks)
                rows.append([method, procs, first["parallel"], first["dtype"], first["threads"],
                             round(first["tokens_per_second"], 1), round(peak), round(last)])
                print(f"done: {method}, {procs} process(es), {first['parallel']}", file=sys.stderr)
    info = machine()
    print_table(f"Training on several processes ({args.model}, {args.steps} timed steps, global batch "
                f"{args.batch_size})", columns, rows, note=describe(info))
    print(markdown_table(columns, rows))
    if args.json:
        save(args.json, {"machine": info, "columns": columns, "rows": rows})

if __name__ == "__main__":
    main()
