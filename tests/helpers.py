"""Helpers shared by the tests (not fixtures)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent


def load_script(path: str):
    """The script at ``path`` (relative to the repository, e.g. ``scripts/wordnet_glossary.py``) as a module
    (benchmarks and scripts are scripts, not packages)."""
    file = HERE.parent / path
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_benchmark(name: str):
    """The script ``benchmarks/<name>.py`` as a module."""
    return load_script(f"benchmarks/{name}.py")


def reload_in_new_process(export_dir: Path, auto_class: str, inputs: dict, tmp_path: Path, mode: str = "forward"):
    """Reload ``export_dir`` with ``transformers.<auto_class>`` in a new interpreter; return its result."""
    inputs_path, output_path = tmp_path / "inputs.pt", tmp_path / "outputs.pt"
    torch.save(inputs, inputs_path)
    proc = subprocess.run(
        [sys.executable, str(HERE / "reload_export.py"), str(export_dir), auto_class, str(inputs_path),
         str(output_path), mode],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"reload failed:\n{proc.stderr[-3000:]}"
    return torch.load(output_path, weights_only=True)


def tiny_llama_dir(tmp_path: Path):
    """A tiny random LLaMA (GQA: 4 query heads over 2 KV groups, tied embeddings) with SmolLM2's tokenizer and
    chat template, saved as a model folder; returns (folder, tokenizer)."""
    import transformers as tf

    from aptune.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    config = tf.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=8, intermediate_size=64, max_position_embeddings=128,
                            tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    base = tmp_path / "tiny-llama"
    tf.LlamaForCausalLM(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    return base, tokenizer
