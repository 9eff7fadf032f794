"""Inference cost of one exported model, measured in a process of its own (so memory is the model's own).

    python -m aptune.ablation.inference EXPORT_DIR --out inference.json --batch-sizes 32,128 --seq-len 128 \
        --warmup 3 --repeats 10 --threads 2

Protocol (the report states it):

* the exported, merged, physically pruned model, reloaded from disk with ``aptune.models.load_model``, in
  eval mode and float32, under ``torch.inference_mode``; synthetic batches of random token ids, no padding
  (``aptune.bench.latency``);
* per batch size: ``warmup`` untimed passes, then ``repeats`` timed ones; latency = median (and p90) of the
  timed passes, throughput = batch size / median;
* peak memory, CPU: the process's resident-set high-water mark (``VmHWM``) is reset (``5`` written to
  ``/proc/self/clear_refs``) after loading the model and returning freed heap to the system
  (``malloc_trim``); peak activation memory = ``VmHWM`` after the passes − ``VmRSS`` before them. CUDA:
  ``max_memory_allocated`` over the timed passes − memory allocated by the weights. Peak inference memory =
  weight bytes + peak activation memory, so that CPU and GPU numbers mean the same thing;
* memory as a property of the model (``model_memory``, deterministic): weight bytes + the peak bytes of the
  tensors one forward pass holds at once (``aptune.bench.memory.peak_forward_bytes``), per batch size;
* parameter count of the loaded model; size on disk of the export folder (and of its weight files).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import sys
from pathlib import Path


def _proc_status_bytes(field: str) -> int | None:
    """A ``/proc/self/status`` memory field (reported in kB) in bytes; None where there is no procfs."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the resident-set high-water mark (Linux ≥ 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    # Freed heap that glibc keeps would count as "before" memory and hide the next pass's peak.
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _disk_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".pt", ".gguf")]
    return sum(p.stat().st_size for p in files), sum(p.stat().st_size for p in weights)


def _peak_memory(measure, device: str, weights_bytes: int):
    """Run ``measure()`` and return (its result, peak activation bytes, extra fields, how memory was measured)."""
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        weights_now = torch.cuda.memory_allocated()
        result = measure()
        activation = max(0, (result.peak_memory_bytes or weights_now) - weights_now)
        return result, activation, {}, "cuda max_memory_allocated over the timed passes - weights"
    _malloc_trim()
    before = _proc_status_bytes("VmRSS")
    reset = _reset_peak_rss()
    result = measure()
    peak = _proc_status_bytes("VmHWM")
    activation = max(0, peak - before) if (peak is not None and before is not None) else None
    method = ("VmHWM (reset via /proc/self/clear_refs) - VmRSS before the passes" if reset else
              "VmHWM since process start (no reset possible) - VmRSS before the passes")
    return result, activation, {"rss_before_bytes": before, "peak_rss_bytes": peak}, method


def measure_export(path: str | Path, batch_sizes: list[int], seq_len: int = 128, warmup: int = 3, repeats: int = 10,
                   threads: int | None = None, head: str = "sequence-classification", device: str = "auto",
                   generate: dict | None = None) -> dict:
    """Latency, throughput and peak memory of an exported model at each batch size (and when generating).

    Args:
        path: export folder (Hugging Face format, as written by ``aptune train``).
        batch_sizes: batch sizes to time, each with ``seq_len`` tokens per sequence (for a causal LM: the
            prefill of a ``seq_len``-token prompt).
        warmup: untimed passes before the timed ones (per batch size).
        repeats: timed passes (per batch size).
        threads: torch intra-op threads (None: torch's default).
        head: the model head to load.
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when available).
        generate: causal LMs: ``{batch_size, prompt_len, new_tokens}`` to also time greedy decoding
            (``aptune.bench.latency.measure_generation``), with the same ``warmup`` and ``repeats``.

    Returns:
        ``inference_info`` of the result schema: settings, params, sizes, ``by_batch[str(b)]`` with
        median_s, p90_s, throughput, peak_memory_bytes, peak_activation_bytes, and ``generation`` (or None).
    """
    import torch

    from aptune.bench.latency import measure_generation, measure_latency
    from aptune.models import load_model

    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    path = Path(path)
    model = load_model(str(path), head=head).eval().to(device)
    params = sum(p.numel() for p in model.parameters())
    weights_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    disk_total, disk_weights = _disk_bytes(path)
    info = {
        "device": device, "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(), "seq_len": seq_len, "warmup": warmup, "repeats": repeats,
        "params": params, "weights_bytes": weights_bytes, "disk_bytes": disk_total, "disk_weights_bytes": disk_weights,
        "memory_method": None, "by_batch": {}, "generation": None,
    }
    # One small untimed pass first: thread pools, kernels and lazy buffers are set up on the first forward,
    # and that one-time memory must not be charged to the first measured batch size.
    measure_latency(model, 1, min(8, seq_len), warmup=0, repeats=1)
    for batch_size in batch_sizes:
        result, activation, extra, info["memory_method"] = _peak_memory(
            lambda b=batch_size: measure_latency(model, b, seq_len, warmup=warmup, repeats=repeats), device,
            weights_bytes)
        info["by_batch"][str(batch_size)] = {
            "batch_size": batch_size, "median_s": result.median_s, "p90_s": result.p90_s,
            "throughput": result.throughput, "repeats": result.repeats, "peak_activation_bytes": activation,
            "peak_memory_bytes": None if activation is None else weights_bytes + activation, **extra,
        }
    info["model_memory"] = model_memory(model, batch_sizes, seq_len)
    if generate:
        result, activation, extra, info["memory_method"] = _peak_memory(
            lambda: measure_generation(model, generate["batch_size"], generate["prompt_len"], generate["new_tokens"],
                                       warmup=warmup, repeats=repeats), device, weights_bytes)
        info["generation"] = {**result.as_dict(), "peak_activation_bytes": activation,
                              "peak_memory_bytes": None if activation is None else weights_bytes + activation,
                              **extra}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    info["platform"] = platform.platform()
    return info


def model_memory(model, batch_sizes: list[int], seq_len: int) -> dict:
    """Weight bytes and, per batch size, the peak activation bytes of one forward pass (counted tensors)."""
    from aptune.bench.latency import dummy_batch
    from aptune.bench.memory import peak_forward_bytes, tensor_bytes

    weights = tensor_bytes([*model.parameters(), *model.buffers()])
    by_batch = {}
    for batch_size in batch_sizes:
        activations = peak_forward_bytes(model, dummy_batch(model, batch_size, seq_len))
        by_batch[str(batch_size)] = {"activation_bytes": activations, "total_bytes": weights + activations}
    return {"weight_bytes": weights, "by_batch": by_batch,
            "method": "bytes of the weights + peak bytes of the tensors one forward pass holds at once"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aptune.ablation.inference", description=__doc__.splitlines()[0])
    parser.add_argument("export", help="export folder")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--batch-sizes", default="32,128", help="comma-separated batch sizes")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--head", default="sequence-classification")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--generate", metavar="BATCH,PROMPT_LEN,NEW_TOKENS",
                        help="causal LMs: also time greedy decoding, e.g. 1,64,64")
    args = parser.parse_args(argv)
    generate = None
    if args.generate:
        try:
            b, prompt, new = (int(v) for v in args.generate.split(","))
        except ValueError:
            parser.error(f"--generate wants BATCH,PROMPT_LEN,NEW_TOKENS (three integers), got {args.generate!r}")
        generate = {"batch_size": b, "prompt_len": prompt, "new_tokens": new}
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no per-file loading bars in the run's log
    info = measure_export(args.export, [int(b) for b in args.batch_sizes.split(",") if b], args.seq_len, args.warmup,
                          args.repeats, args.threads, args.head, args.device, generate)
    Path(args.out).write_text(json.dumps(info, indent=1))
    for b, r in info["by_batch"].items():
        mem = r["peak_memory_bytes"]
        print(f"batch {b}, seq {args.seq_len}: median {r['median_s'] * 1e3:.1f} ms, p90 {r['p90_s'] * 1e3:.1f} ms, "
              f"{r['throughput']:.1f} seq/s, peak memory {'n/a' if mem is None else f'{mem / 2**20:.1f} MiB'}")
    if info["generation"]:
        g = info["generation"]
        print(f"generate {g['new_tokens']} tokens at batch {g['batch_size']} after a {g['prompt_len']}-token prompt: "
              f"median {g['median_s']:.2f} s, {g['tokens_per_s']:.1f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
