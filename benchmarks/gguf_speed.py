"""Side-by-side llama.cpp speed of decoder exports: prefill and decoding tokens per second, same GGUF type.

Every model becomes a GGUF file through ``aptune.export.gguf`` (float16, zero-padded where llama.cpp needs it,
then llama.cpp's own quantiser for the other types), so dense and pruned go through the same path; a model
given by name (``smollm2-135m``) is first exported dense (all blocks kept). All files are then timed
interleaved in one process, round by round: a prompt of ``--prompt`` random tokens (prefill), then
``--new-tokens`` greedy steps with the KV cache (decoding), batch 1, llama.cpp's default float16 KV cache.
Median and p90 over ``--repeats`` rounds after ``--warmup``.

    python benchmarks/gguf_speed.py dense=smollm2-135m pruned=runs/smollm2-apt/export --types float16,q8_0 \\
        --ffn-multiples 32,1 --json results/gguf_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aptune.commands.export import export_or_dense
from aptune.export.gguf import (FFN_MULTIPLE, decoder_shape, last_logits, load_decoder, load_llama_cpp, padded,
                                quantize_gguf, write_gguf)
from aptune.provenance import meta_info


def gguf_files(name: str, export: Path, scratch: Path, types: list[str], multiples: list[int]) -> dict:
    """``{label: (path, type, params)}`` of one model: per FFN-width multiple, the float16 file and each other
    type quantised from it (a multiple that gives the same shape as an earlier one is skipped)."""
    model, tokenizer = load_decoder(export)
    params = sum(p.numel() for p in model.parameters())
    files, shapes = {}, set()
    for multiple in multiples:
        shape = padded(decoder_shape(model), pad_empty=True, ffn_multiple=multiple)
        if shape in shapes:  # this multiple pads nothing that an earlier one did not: the same file
            continue
        shapes.add(shape)
        f16 = scratch / f"{name}.ffn{multiple}.float16.gguf"
        write_gguf(export, f16, dtype="float16", pad_empty=True, model=model, tokenizer=tokenizer,
                   ffn_multiple=multiple)
        tag = f" / ffn%{multiple}" if len(multiples) > 1 else ""
        if "float16" in types:
            files[f"{name} / float16{tag}"] = (f16, "float16", params)
        for kind in (t for t in types if t != "float16"):
            files[f"{name} / {kind}{tag}"] = (quantize_gguf(f16, scratch / f"{name}.ffn{multiple}.{kind}.gguf", kind),
                                              kind, params)
    return files


def one_round(llm, prompt: list[int], new_tokens: int) -> tuple[float, float]:
    """Seconds of the prefill and of ``new_tokens`` greedy decoding steps."""
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(new_tokens):
        llm.eval([int(np.argmax(last_logits(llm)))])
    return prefill, time.perf_counter() - start


def summary(seconds: list[float], tokens: int) -> dict:
    rates = sorted(tokens / s for s in seconds)
    return {"median_tokens_per_s": statistics.median(rates), "p10_tokens_per_s": rates[int(0.1 * (len(rates) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="NAME=PATH pairs: an export, a run folder or a model name")
    parser.add_argument("--types", default="float16,q8_0", help="GGUF types, comma-separated: float16, q8_0, ...")
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ffn-multiples", default=str(FFN_MULTIPLE),
                        help="FFN widths padded with zero neurons to each of these multiples, comma-separated "
                             "(32: the export's default; 1: as pruned)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    provenance = meta_info()  # the commit as the measurement starts
    torch.set_num_threads(args.threads)
    types = args.types.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        runners = {}
        multiples = [int(m) for m in args.ffn_multiples.split(",")]
        for pair in args.models:
            name, _, source = pair.partition("=")
            export = export_or_dense(source, Path(scratch), "causal-lm")
            for label, (path, kind, params) in gguf_files(name, export, Path(scratch), types, multiples).items():
                llm = load_llama_cpp(path, threads=args.threads, float32_cache=False, all_logits=False)
                runners[label] = (llm, params, kind, path.stat().st_size)
        vocab = min(llm.n_vocab() for llm, *_ in runners.values())
        prompt = np.random.default_rng(0).integers(5, vocab - 1, size=args.prompt).tolist()
        times = {label: ([], []) for label in runners}
        for round_ in range(args.warmup + args.repeats):
            for label, (llm, *_) in runners.items():
                prefill, decode = one_round(llm, prompt, args.new_tokens)
                if round_ >= args.warmup:
                    times[label][0].append(prefill)
                    times[label][1].append(decode)
        results = {}
        for label, (prefill, decode) in times.items():
            _, params, kind, size = runners[label]
            results[label] = {"type": kind, "params": params, "file_mib": size / 2**20,
                              "prefill": summary(prefill, args.prompt), "decode": summary(decode, args.new_tokens)}
    print(f"llama.cpp, batch 1, prompt {args.prompt} tokens, {args.new_tokens} new tokens, {args.threads} threads, "
          f"median (p10) tokens/s of {args.repeats} rounds:")
    for kind in types:
        rows = {label: r for label, r in results.items() if r["type"] == kind}
        first = next(iter(rows.values()))
        for label, r in rows.items():
            print(f"  {label:28s} prefill {r['prefill']['median_tokens_per_s']:8.1f} "
                  f"({r['prefill']['p10_tokens_per_s']:.1f})  decode {r['decode']['median_tokens_per_s']:7.1f} "
                  f"({r['decode']['p10_tokens_per_s']:.1f})  {r['decode']['median_tokens_per_s'] / first['decode']['median_tokens_per_s']:.2f}x "
                  f"the first's decoding, {r['file_mib']:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "provenance": provenance,
                                         "results": results},
                                        indent=1, default=str))


if __name__ == "__main__":
    main()
