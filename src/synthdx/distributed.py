"""Several processes on one job: `torchrun --nproc_per_node N` / `accelerate launch --num_processes N`.

The launchers set RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR / MASTER_PORT); without them
everything here is a no-op and a command runs as one process.

* `init()` joins the process group (nccl on GPUs, gloo on CPU; an existing one is reused) and opens
  a second, gloo-only *control* group with a long timeout (`SYNTHDX_DIST_TIMEOUT`, seconds, default
  72 h). Every wait here (`barrier`, `broadcast`, `gather_ordered`, a follower waiting for rank 0)
  runs on that group: a rank can wait for hours while rank 0 does a long stage alone, where the
  default group's timeout (gloo: 30 min) would fail it. Waiting ranks block on a socket (no spinning).
  A rank that dies still ends the job at once: torchrun stops the others when one fails.
* `shard(items, block)`: this rank's part of a list: blocks of `block` consecutive items dealt out
  round-robin (block 0 to rank 0, block 1 to rank 1, ...; block=1 is `items[rank::world]`). Strided
  rather than one contiguous slice per rank, so that an input sorted by length or by difficulty is
  still split evenly. Batch prediction deals out its chunks (`block` = its chunk size): every rank
  then forms exactly the batches a 1-process run forms, so its output is bit-identical to that run's,
  not merely equal up to the padding-dependent rounding a different batch composition would give.
* `lead(main)`: *rank 0 drives, the others serve*. Rank 0 alone runs `main()`, with the environment
  of a 1-process run (WORLD_SIZE=1), so no stage inside it shards or trains data-parallel by
  accident; the other ranks wait for work. `on_all_ranks(fn, *args)` called from inside `main` sends
  `(fn, args)` to every rank and runs `fn` on all of them in the real N-process environment: that is
  how `synthdx run` trains data-parallel (`experiments.common.train_or_reuse` calls it) while data
  preparation, teachers, prediction, evaluation and reports run once, on rank 0. An experiment kind
  needs nothing else to take part: training through `train_or_reuse` (or any function handed to
  `on_all_ranks`; it and its arguments must pickle) runs on every rank, and anything else it does
  runs on rank 0 only. Outside `lead`, `on_all_ranks(fn, ...)` is just `fn(...)`.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 72 * 3600

_control = None  # the gloo group every wait here runs on
_driving = False  # rank 0 inside lead(): on_all_ranks broadcasts
_real_env: dict[str, str] | None = None  # rank 0 inside lead(): the launcher's environment, masked


def world_size() -> int:
    """Processes in this job (1 without a launcher, and on rank 0 inside `lead` outside `on_all_ranks`)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> int:
    return int(os.environ.get("RANK", "0")) if world_size() > 1 else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if world_size() > 1 else 0


def is_main() -> bool:
    """Whether this process is rank 0 (or the only one): the one that writes shared files."""
    return rank() == 0


def active() -> bool:
    """Whether this process is one of several (WORLD_SIZE > 1)."""
    return world_size() > 1


def timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=float(os.environ.get("SYNTHDX_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))


def init() -> bool:
    """Join the job's process group (created when none is; nccl with CUDA, else gloo) and the control
    group. On a GPU machine each rank's default CUDA device becomes cuda:LOCAL_RANK. Returns
    whether the process is one of several. Safe to call more than once."""
    global _control
    if not active():
        return False
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch has no torch.distributed")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend=backend)
        atexit.register(_shutdown)  # ours to close (a group someone else opened is left to them)
    if _control is None:
        _control = dist.new_group(backend="gloo", timeout=timeout())
    return True


def _shutdown() -> None:
    global _control
    import torch.distributed as dist

    _control = None
    if dist.is_initialized():
        dist.destroy_process_group()


def _group():
    if _control is None:
        init()
    return _control


def barrier() -> None:
    """Wait until every rank gets here (no-op in one process)."""
    if active():
        import torch.distributed as dist

        dist.barrier(group=_group())


def broadcast(obj: T) -> T:
    """Rank 0's `obj` on every rank (picklable; no-op in one process)."""
    if not active():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_group())
    return box[0]


def shard_positions(n: int, block: int = 1) -> list[int]:
    """The positions 0..n-1 this rank takes: blocks of `block` dealt out round-robin over the ranks."""
    return _positions(rank(), world_size(), n, block)


def _positions(r: int, w: int, n: int, block: int) -> list[int]:
    if block < 1:
        raise ValueError("block must be >= 1")
    return [i for b in range(r * block, n, w * block) for i in range(b, min(b + block, n))]


def shard(items: Sequence[T], block: int = 1) -> list[T]:
    """This rank's items (see the module docstring); every item is on exactly one rank."""
    return [items[i] for i in shard_positions(len(items), block)]


def gather_ordered(n: int, mine: Sequence[T], block: int = 1) -> list[T] | None:
    """Rank 0: the full list of `n` items put back in order, from every rank's `mine` (its results for
    `shard_positions(n, block)`, in that order); the other ranks get None. One process: `mine`."""
    if len(mine) != len(shard_positions(n, block)):
        raise ValueError(f"rank {rank()} has {len(mine)} items for {len(shard_positions(n, block))} positions")
    if not active():
        return list(mine)
    import torch.distributed as dist

    parts: list | None = [None] * world_size() if is_main() else None
    dist.gather_object(list(mine), parts, dst=0, group=_group())
    if not is_main():
        return None
    out: list = [None] * n
    for r, part in enumerate(parts):
        for i, item in zip(_positions(r, world_size(), n, block), part):
            out[i] = item
    return out


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def lead(main: Callable[[], T]) -> T | None:
    """Run `main()` on rank 0 only while the other ranks serve `on_all_ranks` calls; every rank
    returns when rank 0 is done (the others return None). One process: `main()`.
    When `main` raises on rank 0 the others are told to stop and raise `RankZeroFailed`."""
    global _driving, _real_env
    if not active() or _driving:
        return main()
    init()
    if not is_main():
        return _serve()
    _real_env = {k: os.environ[k] for k in _LAUNCH_VARS if k in os.environ}
    _driving = True
    ok = False
    try:
        with _environment({"WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}):
            result = main()
        ok = True
        return result
    finally:
        _driving = False
        if _real_env is not None:  # not inside on_all_ranks: the followers are listening
            _real_env = None
            broadcast(("stop", ok))


class RankZeroFailed(RuntimeError):
    """Raised on the other ranks of `lead` when rank 0's `main` raised (rank 0 reported why)."""


def _serve() -> None:
    while True:
        msg = broadcast(None)
        if msg[0] == "stop":
            if not msg[1]:
                raise RankZeroFailed("rank 0 failed")
            return
        _, fn, args, kwargs = msg
        log.info("rank %d: running %s for rank 0", rank(), getattr(fn, "__qualname__", fn))
        fn(*args, **kwargs)


def on_all_ranks(fn: Callable[..., T], *args: Any, main_kwargs: dict | None = None, **kwargs: Any) -> T:
    """Run `fn(*args, **kwargs)` on every rank, in the real N-process environment, when called by
    rank 0 inside `lead` (fn and its arguments are pickled to the other ranks); elsewhere, just call
    it. `main_kwargs` (e.g. a progress callback, which need not pickle) go to rank 0's call only.
    Returns rank 0's result."""
    global _real_env
    if not _driving or _real_env is None:
        return fn(*args, **{**kwargs, **(main_kwargs or {})})
    env, _real_env = _real_env, None  # a failure inside leaves the followers in fn: no "stop" to them
    with _environment(env):
        broadcast(("call", fn, args, kwargs))
        result = fn(*args, **{**kwargs, **(main_kwargs or {})})
    _real_env = env
    return result


@contextlib.contextmanager
def main_only() -> Iterator[bool]:
    """`with main_only() as mine: if mine: ...`: the body's work happens on rank 0 only, and every
    rank leaves the block together (the others wait on the control group, whatever it takes)."""
    try:
        yield is_main()
    finally:
        barrier()
