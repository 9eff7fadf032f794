"""Side-by-side CPU latency of exported causal LMs: prefill and greedy decoding, interleaved in one process.

The comparison runner times each export in its own process, minutes apart, on a shared machine; this script
loads several exports at once and alternates between them pass by pass, so that machine noise hits all of
them alike and the ratios hold (aptune.bench.latency for the protocol).

    R=runs/ablations/compare-cpu/runs
    python benchmarks/export_latency.py lora=$R/lora__alpaca__seed42/train/export \
        apt=$R/apt__alpaca__seed42/train/export --out results/llama/latency_side_by_side.json

Prefill: one forward pass over a batch of random tokens with the language-model head on the last position
only (``logits_to_keep=1``, as ``generate`` does). Decoding: greedy ``generate`` of a fixed number of new
tokens with the KV cache, end-of-sequence held back.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
import transformers

from aptune.bench import compare_generation, compare_latency
from aptune.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", nargs="+", metavar="NAME=FOLDER",
                        help="exports to compare; the first is the reference of the speed-ups")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--generate", default="1,64,64", metavar="BATCH,PROMPT_LEN,NEW_TOKENS")
    parser.add_argument("--generate-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, help="JSON file for the numbers")
    args = parser.parse_args()
    pairs = [e.split("=", 1) for e in args.exports]
    bad = [e for e, p in zip(args.exports, pairs) if len(p) != 2 or not Path(p[1]).is_dir()]
    if bad:
        parser.error(f"expected NAME=FOLDER with an existing export folder, got {', '.join(bad)}")
    gen_batch, prompt_len, new_tokens = (int(v) for v in args.generate.split(","))
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    models = {name: load_model(folder, head="causal-lm") for name, folder in pairs}
    prefill = compare_latency(models, args.batch_size, args.seq_len, warmup=1, repeats=args.repeats, logits_to_keep=1)
    decode = compare_generation(models, gen_batch, prompt_len, new_tokens, warmup=1, repeats=args.generate_repeats)
    reference = pairs[0][0]
    print(f"CPU, {args.threads} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}; "
          f"prefill batch {args.batch_size} x {args.seq_len} ({args.repeats} interleaved passes); decoding "
          f"{new_tokens} tokens after {prompt_len} at batch {gen_batch} ({args.generate_repeats} interleaved calls)")
    print(f"| model | params | prefill median (ms) | prefill speed-up vs {reference} | decoding tokens/s | "
          f"decoding speed-up vs {reference} |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = {}
    for name in models:
        p, d = prefill[name], decode[name]
        rows[name] = {"params": p.params, "prefill": p.as_dict(), "decode": d.as_dict(),
                      "prefill_speedup": prefill[reference].median_s / p.median_s,
                      "decode_speedup": d.tokens_per_s / decode[reference].tokens_per_s}
        print(f"| {name} | {p.params:,} | {p.median_s * 1e3:.0f} | {rows[name]['prefill_speedup']:.2f}x | "
              f"{d.tokens_per_s:.1f} | {rows[name]['decode_speedup']:.2f}x |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)}, "exports": dict(pairs),
                                        "torch": torch.__version__, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
