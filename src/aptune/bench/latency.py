"""Inference latency of a model on synthetic batches, measured the same way for every model.

Protocol (written into every report): eval mode, ``torch.inference_mode``, inputs of random token ids
(not pad tokens: some kernels shortcut on padding) at a fixed batch size and sequence length, ``warmup``
untimed passes, then ``repeats`` timed passes; latency = median, also p90; throughput = batch / median.
On a GPU each pass is bracketed by ``torch.cuda.synchronize`` and peak memory is ``max_memory_allocated``.
Comparisons time the models *interleaved* (A, B, A, B, ...) so that machine noise hits both alike.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class LatencyResult:
    batch_size: int
    seq_len: int
    median_s: float
    p90_s: float
    throughput: float  # sequences per second
    repeats: int
    params: int
    peak_memory_bytes: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def dummy_batch(model: nn.Module, batch_size: int, seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids of the right shape for ``model`` (decoder ids added for encoder-decoders)."""
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    vocab = getattr(config, "vocab_size", 1000)
    ids = torch.randint(5, max(6, vocab - 1), (batch_size, seq_len), generator=generator)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if getattr(config, "is_encoder_decoder", False):
        batch["decoder_input_ids"] = ids[:, : max(1, seq_len // 4)]
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in batch.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_pass(model: nn.Module, batch: dict, **forward_kwargs) -> float:
    device = batch["input_ids"].device
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        model(**batch, **forward_kwargs)
    _sync(device)
    return time.perf_counter() - start


def _result(times: list[float], model: nn.Module, batch: dict, peak: int | None) -> LatencyResult:
    ordered = sorted(times)
    median = statistics.median(ordered)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    b, t = batch["input_ids"].shape
    return LatencyResult(b, t, median, p90, b / median, len(times), sum(p.numel() for p in model.parameters()), peak)


def measure_latency(model: nn.Module, batch_size: int = 32, seq_len: int = 128, warmup: int = 3,
                    repeats: int = 10) -> LatencyResult:
    """Median latency of ``model`` on a synthetic batch."""
    model.eval()
    batch = dummy_batch(model, batch_size, seq_len)
    device = batch["input_ids"].device
    for _ in range(warmup):
        _timed_pass(model, batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = [_timed_pass(model, batch) for _ in range(repeats)]
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return _result(times, model, batch, peak)


def compare_latency(models: dict[str, nn.Module], batch_size: int = 32, seq_len: int = 128, warmup: int = 3,
                    repeats: int = 10, **forward_kwargs) -> dict[str, LatencyResult]:
    """Time several models interleaved, pass by pass, on the same batch shape.

    ``forward_kwargs`` go to every forward call, e.g. ``logits_to_keep=1`` for the prefill of a causal LM (the
    language-model head on the last position only, as ``generate`` does).
    """
    batches = {name: dummy_batch(model.eval(), batch_size, seq_len) for name, model in models.items()}
    for _ in range(warmup):
        for name, model in models.items():
            _timed_pass(model, batches[name], **forward_kwargs)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            times[name].append(_timed_pass(model, batches[name], **forward_kwargs))
    return {name: _result(times[name], models[name], batches[name], None) for name in models}


@dataclass
class GenerationResult:
    batch_size: int
    prompt_len: int
    new_tokens: int
    median_s: float  # one whole generate() call: the prefill of the prompt plus new_tokens decoding steps
    tokens_per_s: float  # batch_size * new_tokens / median_s
    repeats: int
    peak_memory_bytes: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def measure_generation(model: nn.Module, batch_size: int = 1, prompt_len: int = 64, new_tokens: int = 64,
                       warmup: int = 1, repeats: int = 3) -> GenerationResult:
    """Greedy decoding speed with the KV cache: every call generates exactly ``new_tokens`` tokens per sequence.

    The end-of-sequence token is held back until ``new_tokens`` are out (``min_new_tokens``), so every model
    does the same work whatever it would have answered; the prompt is random token ids, as in
    :func:`measure_latency`.
    """
    one = _generation_timer(model, batch_size, prompt_len, new_tokens)
    device = next(model.parameters()).device
    for _ in range(warmup):
        one()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = [one() for _ in range(repeats)]
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return _generation_result(times, batch_size, prompt_len, new_tokens, peak)


def compare_generation(models: dict[str, nn.Module], batch_size: int = 1, prompt_len: int = 64, new_tokens: int = 64,
                       warmup: int = 1, repeats: int = 3) -> dict[str, GenerationResult]:
    """:func:`measure_generation` for several models, interleaved call by call."""
    timers = {name: _generation_timer(model, batch_size, prompt_len, new_tokens) for name, model in models.items()}
    for _ in range(warmup):
        for one in timers.values():
            one()
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, one in timers.items():
            times[name].append(one())
    return {name: _generation_result(times[name], batch_size, prompt_len, new_tokens, None) for name in models}


def _generation_timer(model: nn.Module, batch_size: int, prompt_len: int, new_tokens: int):
    """A function that runs one fixed-length greedy generate() call and returns its wall time."""
    model.eval()
    batch = dummy_batch(model, batch_size, prompt_len, seed=1)
    device = batch["input_ids"].device
    pad = getattr(model.config, "pad_token_id", None)
    options = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                   pad_token_id=pad if pad is not None else 0)

    def one() -> float:
        _sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**batch, **options)
        _sync(device)
        if out.shape[1] != prompt_len + new_tokens:
            raise RuntimeError(f"generate() returned {out.shape[1] - prompt_len} new tokens, expected {new_tokens}")
        return time.perf_counter() - start

    return one


def _generation_result(times: list[float], batch_size: int, prompt_len: int, new_tokens: int,
                       peak: int | None) -> GenerationResult:
    median = statistics.median(times)
    return GenerationResult(batch_size, prompt_len, new_tokens, median, batch_size * new_tokens / median, len(times),
                            peak)
